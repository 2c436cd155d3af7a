// conv1d on a feature matrix: one channel needs a reshape first.
kiln::model! {
    pub struct Tiny {
        input x: [B, 32];
        let c = conv1d(x, 4, kernel = 3);
        output c;
    }
}

fn main() {}
