// `pos_weight` gives one value per column of the logits' last axis (or one for all).
kiln::model! {
    pub struct Tagger {
        input x: [B, 8];
        target y: [B, 3];
        let logits = linear(x, 3);
        output logits;
        loss bce_with_logits(logits, y, pos_weight = (2.0, 1.0));
    }
}

fn main() {}
