// Rotary position embeddings: self-attention only, and an even head size (they turn pairs of
// a head's features).
kiln::model! {
    pub struct CrossRotary {
        input x: [B, T, 8];
        input memory: [B, S, 8];
        let a = multi_head_attention(x, memory, heads = 2, rotary = true);
        output a;
    }
}

kiln::model! {
    pub struct OddHeads {
        input x: [B, T, 12];
        let a = multi_head_attention(x, heads = 4, causal = true, rotary = true);
        output a;
    }
}

fn main() {}
