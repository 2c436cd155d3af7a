// A kernel of 3 dilated by 2 spans 5 positions, more than the 4 of the input.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 4];
        let c = conv1d(x, 4, kernel = 3, dilation = 2);
        output c;
    }
}

fn main() {}
