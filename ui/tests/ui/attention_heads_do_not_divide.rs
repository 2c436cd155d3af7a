kiln::model! {
    pub struct Encoder {
        input tokens: [B, T] tokens 100;
        let e = embedding(tokens, 30);
        let a = multi_head_attention(e, heads = 4);
        output a;
    }
}

fn main() {}
