// A model has one loss; several terms are added into it.
kiln::model! {
    pub struct TwoHeads {
        input x: [B, 16];
        target y: [B, 1];
        target z: [B, 1];
        let a = linear(x, 1);
        let b = linear(x, 1);
        output a, b;
        loss mse(a, y);
        loss mse(b, z);
    }
}

fn main() {}
