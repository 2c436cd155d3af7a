// `count_include_pad` belongs to average pooling.
kiln::model! {
    pub struct Tiny {
        input x: [B, 2, 6, 6];
        let p = max_pool2d(x, 3, padding = 1, count_include_pad = false);
        output p;
    }
}

fn main() {}
