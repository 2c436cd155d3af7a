//! Helpers the training tests share.

use kiln::{Float, Model};

/// Every parameter, flattened in visiting order (for bitwise comparisons).
pub fn params<F: Float, M: Model<F>>(model: &M) -> Vec<F> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, view| all.extend(view.iter().copied()));
    all
}

kiln::model! {
    /// Tags each token, leaving label 9 (padding) out of the loss.
    pub struct Tagger {
        input tokens: [B, T] tokens 20;
        target tags: [B, T] classes 3;
        let e = embedding(tokens, 8);
        let logits = linear(e, 3);
        output logits;
        loss cross_entropy(logits, tags, ignore_index = 9);
    }
}
