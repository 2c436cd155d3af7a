// 2 groups and 5 output channels.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 8, 8];
        let c = conv2d(x, 5, kernel = 3, groups = 2);
        output c;
    }
}

fn main() {}
