// A negative `weight` would reward the loss for being wrong.
kiln::model! {
    pub struct Tagger {
        input x: [B, 8];
        target y: [B, 3];
        let logits = linear(x, 3);
        output logits;
        loss bce_with_logits(logits, y, weight = (1.0, -2.0, 1.0));
    }
}

fn main() {}
