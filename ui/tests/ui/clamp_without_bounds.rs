// `clamp` needs at least one bound.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4];
        let c = clamp(x);
        output c;
    }
}

fn main() {}
