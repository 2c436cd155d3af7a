kiln::model! {
    pub struct Cross {
        input q: [B, T, 16];
        input memory: [B, S, 32];
        let a = multi_head_attention(q, memory, heads = 2);
        output a;
    }
}

fn main() {}
