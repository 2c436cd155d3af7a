// A misspelt cross-entropy option: the error suggests the right one.
kiln::model! {
    pub struct Classifier {
        input x: [B, 8];
        target y: [B] classes 3;
        let logits = linear(x, 3);
        output logits;
        loss cross_entropy(logits, y, label_smoothin = 0.1);
    }
}

fn main() {}
