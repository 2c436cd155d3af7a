// An interpolation mode upsample does not have.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 4, 4];
        let u = upsample(x, scale = 2, mode = bicubic);
        output u;
    }
}

fn main() {}
