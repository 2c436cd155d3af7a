// `align_corners` is for the interpolating mode only, as in PyTorch.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 4, 4];
        let u = upsample(x, scale = 2, align_corners = true);
        output u;
    }
}

fn main() {}
