// The loss statement has no binding to name parameters after.
kiln::model! {
    pub struct Regressor {
        input x: [B, 8];
        target y: [B, 1];
        let h = relu(linear(x, 16));
        output h;
        loss mse(linear(h, 1), y);
    }
}

fn main() {}
