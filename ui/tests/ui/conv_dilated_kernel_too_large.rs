// A 3x3 kernel with dilation 3 spans 7x7, more than the 5x5 padded input.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 4, 4];
        let c = conv2d(x, 2, kernel = 3, padding = (0, 1), dilation = 3);
        output c;
    }
}

fn main() {}
