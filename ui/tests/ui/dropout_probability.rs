// The drop probability must be below 1.
kiln::model! {
    pub struct Tiny {
        input x: [B, 8];
        let h = dropout(x, 1.5);
        let y = linear(h, 2);
        output y;
    }
}

fn main() {}
