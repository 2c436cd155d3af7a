// Label smoothing is a share of the target: a number in [0, 1].
kiln::model! {
    pub struct Classifier {
        input x: [B, 8];
        target y: [B] classes 3;
        let logits = linear(x, 3);
        output logits;
        loss cross_entropy(logits, y, label_smoothing = 1.5);
    }
}

fn main() {}
