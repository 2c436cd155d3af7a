// The prediction and the target of `mse` have the same shape.
kiln::model! {
    pub struct Regressor {
        input x: [B, 8];
        target y: [B, 1];
        let pred = linear(x, 2);
        output pred;
        loss mse(pred, y);
    }
}

fn main() {}
