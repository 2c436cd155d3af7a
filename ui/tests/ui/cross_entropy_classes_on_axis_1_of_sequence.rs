// PyTorch's cross_entropy takes [B, C, L] logits; kiln's sequence layout is [B, L, C].
kiln::model! {
    pub struct Tagger {
        input x: [B, 16, 40];
        target tags: [B, 40] classes 5;
        let scores = conv2d(reshape(x, (B, 16, 1, 40)), 5, kernel = 1);
        let logits = reshape(scores, (B, 5, 40));
        output logits;
        loss cross_entropy(logits, tags);
    }
}

fn main() {}
