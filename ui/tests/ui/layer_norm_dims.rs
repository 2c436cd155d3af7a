// `layer_norm(x, dims = k)` normalizes the last k axes together (PyTorch's normalized_shape
// of k dims): never the batch axis, and only fixed axes.
kiln::model! {
    pub struct TooMany {
        input x: [B, 4, 8];
        let n = layer_norm(x, dims = 3);
        output n;
    }
}

kiln::model! {
    pub struct SymbolicAxis {
        input x: [B, T, 8];
        let n = layer_norm(x, dims = 2);
        output n;
    }
}

fn main() {}
