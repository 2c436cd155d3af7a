// 64 features cannot be viewed as 1x9x9.
kiln::model! {
    pub struct Tiny {
        input x: [B, 64];
        let image = reshape(x, (B, 1, 9, 9));
        output image;
    }
}

fn main() {}
