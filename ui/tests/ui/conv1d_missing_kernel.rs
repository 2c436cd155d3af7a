// conv1d needs its kernel size.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 16];
        let c = conv1d(x, 8);
        output c;
    }
}

fn main() {}
