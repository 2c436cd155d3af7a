// A scale whose output size does not fit in memory addresses.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 4, 4];
        let u = upsample(x, scale = 4611686018427387904);
        output u;
    }
}

fn main() {}
