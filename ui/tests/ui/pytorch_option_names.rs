// PyTorch's keyword names where kiln's differ: each error names kiln's spelling.
kiln::model! {
    pub struct Net {
        input x: [B, 1, 28, 28];
        target y: [B] classes 10;
        let c = relu(conv2d(x, 8, kernel_size = 3, padding = 1));
        let flat = flatten(c);
        let logits = linear(flat, 10);
        let p = log_softmax(logits, dim = -1);
        output p;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
