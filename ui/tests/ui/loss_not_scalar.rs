// A loss is a scalar: an elementwise squared error must be reduced.
kiln::model! {
    pub struct Regressor {
        input x: [B, 8];
        target y: [B, 1];
        let pred = linear(x, 1);
        output pred;
        loss square(pred - y);
    }
}

fn main() {}
