kiln::model! {
    pub struct Decoder {
        input x: [B, T, 16];
        input memory: [B, S, 16];
        let h = Layer(x, repeat = 2);
        output h;

        block Layer(x, memory) {
            let a = multi_head_attention(x, memory, heads = 2);
            let out = x + a;
            output out;
        }
    }
}

fn main() {}
