kiln::model! {
    pub struct Encoder {
        input tokens: [B, T] tokens 100;
        let e = embedding(tokens, 32);
        let a = multi_head_attention(e, heads = 4, causal = true, dropout = 1.5);
        output a;
    }
}

fn main() {}
