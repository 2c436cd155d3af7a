// Rotary position embeddings: self-attention only, an even head size (they turn pairs of a
// head's features), and a base only with `rotary = true`, of at least 2.
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

kiln::model! {
    pub struct BaseWithoutRotary {
        input x: [B, T, 8];
        let a = multi_head_attention(x, heads = 2, causal = true, rotary_base = 500000);
        output a;
    }
}

kiln::model! {
    pub struct BaseOfOne {
        input x: [B, T, 8];
        let a = multi_head_attention(x, heads = 2, causal = true, rotary = true, rotary_base = 1);
        output a;
    }
}

fn main() {}
