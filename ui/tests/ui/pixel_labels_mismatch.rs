// Per-pixel labels whose width differs from the logits'.
kiln::model! {
    pub struct Segmenter {
        input x: [B, 3, 5, 6];
        target y: [B, 5, 7] classes 4;
        let logits = conv2d(x, 4, kernel = 1);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
