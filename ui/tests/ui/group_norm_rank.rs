// Group norm splits axis 1 of [batch, channels, ...] into groups: a rank-1 value has no
// channel axis.
kiln::model! {
    pub struct Tiny {
        input x: [B];
        let n = group_norm(x, groups = 2);
        output n;
    }
}

fn main() {}
