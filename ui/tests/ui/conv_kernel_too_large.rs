// A 5x5 kernel on a 4x4 feature map without padding.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 4, 4];
        let c = conv2d(x, 4, kernel = 5);
        output c;
    }
}

fn main() {}
