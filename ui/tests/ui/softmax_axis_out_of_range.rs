// A softmax over an axis the value does not have: PyTorch's `dim` counts from 0, so the
// channels of [B, C, H, W] logits are `axis = 1`, and axis 4 is past the last.
kiln::model! {
    pub struct Segmenter {
        input x: [B, 3, 8, 8];
        let logits = conv2d(x, 5, kernel = 1);
        let p = softmax(logits, axis = 4);
        let lp = log_softmax(logits, axis = -5);
        output p, lp;
    }
}

fn main() {}
