// 4 groups and 6 output channels.
kiln::model! {
    pub struct Tiny {
        input x: [B, 8, 4, 4];
        let up = conv_transpose2d(x, 6, kernel = 2, stride = 2, groups = 4);
        output up;
    }
}

fn main() {}
