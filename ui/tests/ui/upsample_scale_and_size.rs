// Both a scale and a size.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 4, 4];
        let u = upsample(x, scale = 2, size = (8, 8));
        output u;
    }
}

fn main() {}
