// `max_pool1d` pools sequences [B, C, L]; images take `max_pool2d`.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 8, 8];
        let p = max_pool1d(x, 2);
        output p;
    }
}

fn main() {}
