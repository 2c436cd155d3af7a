// Label smoothing is a number literal, not a switch.
kiln::model! {
    pub struct Classifier {
        input x: [B, 8];
        target y: [B] classes 3;
        let logits = linear(x, 3);
        output logits;
        loss cross_entropy(logits, y, label_smoothing = true);
    }
}

fn main() {}
