// `padding = same` keeps the size only at stride 1; PyTorch refuses it for strided convolutions.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 8, 8];
        let c = conv2d(x, 4, kernel = 3, stride = 2, padding = same);
        output c;
    }
}

fn main() {}
