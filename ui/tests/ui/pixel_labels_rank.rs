// One label per image given to per-pixel logits.
kiln::model! {
    pub struct Segmenter {
        input x: [B, 3, 5, 6];
        target y: [B] classes 4;
        let logits = conv2d(x, 4, kernel = 1);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
