// `a + b` with [B, 128] and [B, 64]: the error points at `b`, the operand that disagrees.
kiln::model! {
    pub struct Skip {
        input x: [B, 32];
        let a = relu(linear(x, 128));
        let b = relu(linear(x, 64));
        let c = a + b;
        output c;
    }
}

fn main() {}
