// A width with many divisors: the suggested head counts go up to the width itself.
kiln::model! {
    pub struct Encoder {
        input x: [B, T, 128];
        let a = multi_head_attention(x, heads = 3);
        output a;
    }
}

fn main() {}
