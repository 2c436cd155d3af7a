// Class weights are a tuple with one number per class, not one number.
kiln::model! {
    pub struct Classifier {
        input x: [B, 8];
        target y: [B] classes 3;
        let logits = linear(x, 3);
        output logits;
        loss cross_entropy(logits, y, weight = 2.0);
    }
}

fn main() {}
