// `padding = same` with an even kernel would pad one side more than the other.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 16];
        let c = conv1d(x, 8, kernel = 4, padding = same);
        output c;
    }
}

fn main() {}
