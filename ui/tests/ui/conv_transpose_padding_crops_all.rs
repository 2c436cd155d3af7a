// Padding 2 crops a 3x3 output (1x1 input, kernel 3) entirely.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 1, 1];
        let up = conv_transpose2d(x, 2, kernel = 3, padding = 2);
        output up;
    }
}

fn main() {}
