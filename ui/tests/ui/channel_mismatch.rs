// A residual connection between feature maps with different channel counts.
kiln::model! {
    pub struct Residual {
        input x: [B, 3, 16, 16];
        target y: [B] classes 10;
        let c1 = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let c2 = conv2d(c1, 16, kernel = 3, padding = 1);
        let r = relu(c1 + c2);
        let logits = linear(flatten(r), 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
