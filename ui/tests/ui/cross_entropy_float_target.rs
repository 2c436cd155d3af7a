// `cross_entropy` takes integer class labels, not a float tensor.
kiln::model! {
    pub struct Classifier {
        input x: [B, 784];
        target y: [B, 10];
        let logits = linear(x, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
