// Class weights and label smoothing are options of `cross_entropy` only.
kiln::model! {
    pub struct Regressor {
        input x: [B, 8];
        target y: [B, 3];
        let pred = linear(x, 3);
        output pred;
        loss mse(pred, y, weight = (1.0, 2.0, 0.5));
    }
}

fn main() {}
