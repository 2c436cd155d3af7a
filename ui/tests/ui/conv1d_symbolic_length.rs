// A stride must divide the multiple of the symbol a length is: `T` halved has no formula.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, T];
        let c = conv1d(x, 8, kernel = 3, stride = 2);
        output c;
    }
}

fn main() {}
