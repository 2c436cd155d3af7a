// Every model needs an `output` (the value `forward` returns), even with a loss.
kiln::model! {
    pub struct Classifier {
        input x: [B, 784];
        target y: [B] classes 10;
        let logits = linear(x, 10);
        loss cross_entropy(logits, y);
    }
}

fn main() {}
