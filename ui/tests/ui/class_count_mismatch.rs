// The labels have 10 classes but the logits have 12 columns.
kiln::model! {
    pub struct Classifier {
        input x: [B, 784];
        target y: [B] classes 10;
        let h = relu(linear(x, 128));
        let logits = linear(h, 12);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
