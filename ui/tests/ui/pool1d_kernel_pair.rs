// A 1-d pooling takes one integer per option.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 16];
        let p = avg_pool1d(x, kernel = (2, 2));
        output p;
    }
}

fn main() {}
