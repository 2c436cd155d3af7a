// `mse` compares two float tensors; class labels go to `cross_entropy`.
kiln::model! {
    pub struct Classifier {
        input x: [B, 784];
        target labels: [B] classes 10;
        let logits = linear(x, 10);
        output logits;
        loss mse(logits, labels);
    }
}

fn main() {}
