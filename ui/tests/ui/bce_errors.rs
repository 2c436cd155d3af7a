// `bce` on probabilities: `pos_weight` belongs to `bce_with_logits`, the weights count the
// columns, and PyTorch's name points to kiln's.
kiln::model! {
    pub struct PosWeight {
        input x: [B, 4];
        target y: [B, 2];
        let p = sigmoid(linear(x, 2));
        output p;
        loss bce(p, y, pos_weight = 2.0);
    }
}

kiln::model! {
    pub struct WeightCount {
        input x: [B, 4];
        target y: [B, 2];
        let p = sigmoid(linear(x, 2));
        output p;
        loss bce(p, y, weight = (1.0, 2.0, 3.0));
    }
}

kiln::model! {
    pub struct TorchName {
        input x: [B, 4];
        target y: [B, 2];
        let p = sigmoid(linear(x, 2));
        output p;
        loss binary_cross_entropy(p, y);
    }
}

fn main() {}
