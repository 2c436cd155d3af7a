// Batch norm takes [batch, features] or [batch, channels, height, width].
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 8];
        let n = batch_norm(x);
        output n;
    }
}

fn main() {}
