kiln::model! {
    struct Bad {
        input x: [B, 4];
        target y: [B, 3];
        let pred = linear(x, 3);
        let err = pred - y;
        output pred;
        output err;
        loss mse(pred, y);
    }
}
fn main() {}
