// conv1d's weight needs a fixed channel count.
kiln::model! {
    pub struct Tiny {
        input x: [B, C, 16];
        let c = conv1d(x, 8, kernel = 3);
        output c;
    }
}

fn main() {}
