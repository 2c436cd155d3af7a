// The groups of a group norm split the channels evenly: 4 groups cannot split 6 channels.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 8, 8];
        let c = conv2d(x, 6, kernel = 3, padding = 1);
        let n = group_norm(c, groups = 4);
        output n;
    }
}

fn main() {}
