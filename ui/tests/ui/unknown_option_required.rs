// A typo in the name of an option the op requires: the error suggests it at the typo, as for
// any other option, rather than saying the option is missing.
kiln::model! {
    pub struct Encoder {
        input x: [B, T, 16];
        let a = multi_head_attention(x, head = 4);
        output a;
    }
}

fn main() {}
