// 3 groups on a 4-channel sequence.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 16];
        let c = conv1d(x, 6, kernel = 3, groups = 3);
        output c;
    }
}

fn main() {}
