// `pow` takes a constant exponent.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4];
        input y: [B, 4];
        let p = pow(x, y);
        output p;
    }
}

fn main() {}
