// `rms_norm`: a positive `eps`, a fixed last axis, and no bias (PyTorch's `nn.RMSNorm` has
// none).
kiln::model! {
    pub struct ZeroEps {
        input x: [B, T, 8];
        let n = rms_norm(x, eps = 0.0);
        output n;
    }
}

kiln::model! {
    pub struct SymbolicFeatures {
        input x: [B, D];
        let n = rms_norm(x);
        output n;
    }
}

kiln::model! {
    pub struct WithBias {
        input x: [B, 8];
        let n = rms_norm(x, bias = false);
        output n;
    }
}

fn main() {}
