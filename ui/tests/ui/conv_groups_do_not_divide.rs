// 3 groups on a 4-channel input.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 8, 8];
        let c = conv2d(x, 6, kernel = 3, groups = 3);
        output c;
    }
}

fn main() {}
