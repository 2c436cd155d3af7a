// The features after flatten must be known at compile time.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, H, W];
        let f = flatten(x);
        let y = linear(f, 2);
        output y;
    }
}

fn main() {}
