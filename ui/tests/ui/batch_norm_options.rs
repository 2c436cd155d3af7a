// Batch norm takes `affine` (PyTorch's `affine=False` drops weight and bias together), not
// layer norm's `bias` or `elementwise_affine`.
kiln::model! {
    pub struct Net {
        input x: [B, 8, 16];
        let a = batch_norm(x, bias = false);
        let b = batch_norm(x, elementwise_affine = false);
        output a, b;
    }
}

fn main() {}
