// conv2d needs its kernel size.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 8, 8];
        let c = conv2d(x, 4);
        output c;
    }
}

fn main() {}
