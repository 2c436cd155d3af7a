// The lower bound above the upper one clamps to nothing sensible.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4];
        let c = clamp(x, min = 1.0, max = -1.0);
        output c;
    }
}

fn main() {}
