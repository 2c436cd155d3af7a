// Batch norm takes [batch, features], [batch, channels, length] or [batch, channels, height, width].
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 2, 8, 8];
        let n = batch_norm(x);
        output n;
    }
}

fn main() {}
