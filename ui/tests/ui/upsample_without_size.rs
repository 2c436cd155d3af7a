// Upsampling without a scale or a size.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 4, 4];
        let u = upsample(x, mode = bilinear);
        output u;
    }
}

fn main() {}
