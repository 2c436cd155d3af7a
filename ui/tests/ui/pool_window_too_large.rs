// Pooling a 3x3 map with a 4x4 window.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 3, 3];
        let p = max_pool2d(x, 4);
        output p;
    }
}

fn main() {}
