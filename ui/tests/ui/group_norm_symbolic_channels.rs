// Group norm's parameters are one weight and bias per channel, so the channel count (dim 1)
// must be a number, not a symbolic dim.
kiln::model! {
    pub struct Tiny {
        input x: [B, C, 16];
        let n = group_norm(x, groups = 2);
        output n;
    }
}

fn main() {}
