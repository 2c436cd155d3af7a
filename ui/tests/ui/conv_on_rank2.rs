// conv2d takes an image batch, not a feature matrix.
kiln::model! {
    pub struct Tiny {
        input x: [B, 64];
        let c = conv2d(x, 4, kernel = 3);
        output c;
    }
}

fn main() {}
