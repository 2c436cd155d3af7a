// `instance_norm` normalizes each channel of [batch, channels, ...]: it needs a channel axis
// of fixed size, and takes no group count.
kiln::model! {
    pub struct OnFeatures {
        input x: [B];
        let n = instance_norm(x);
        output n;
    }
}

kiln::model! {
    pub struct SymbolicChannels {
        input x: [B, C, 16];
        let n = instance_norm(x, affine = true);
        output n;
    }
}

kiln::model! {
    pub struct WithGroups {
        input x: [B, 8, 16];
        let n = instance_norm(x, groups = 2);
        output n;
    }
}

fn main() {}
