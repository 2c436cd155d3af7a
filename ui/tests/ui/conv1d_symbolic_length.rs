// conv1d needs a fixed length, as conv2d needs a fixed height and width.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, T];
        let c = conv1d(x, 8, kernel = 3);
        output c;
    }
}

fn main() {}
