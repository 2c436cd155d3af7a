// Padding more than half the pooling window.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 6, 6];
        let p = max_pool2d(x, 3, stride = 2, padding = 2);
        output p;
    }
}

fn main() {}
