// Output padding 2 with stride 2 (and no dilation).
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 8, 8];
        let up = conv_transpose2d(x, 2, kernel = 2, stride = 2, output_padding = (1, 2));
        output up;
    }
}

fn main() {}
