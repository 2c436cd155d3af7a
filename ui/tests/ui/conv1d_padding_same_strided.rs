// `padding = same` keeps the length only at stride 1; PyTorch refuses it for strided convolutions.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 16];
        let c = conv1d(x, 8, kernel = 5, stride = 2, padding = same);
        output c;
    }
}

fn main() {}
