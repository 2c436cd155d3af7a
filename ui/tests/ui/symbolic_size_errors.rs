// Sizes computed from a symbolic one (`4 * H` pooled to `2 * H`) and the mistakes around them.

// Pooling by 2 an axis that is only `H`: declare it `2 * H`.
kiln::model! {
    pub struct PoolOdd {
        input x: [B, 1, H, W];
        let p = max_pool2d(x, 2);
        output p;
    }
}

// A strided pooling over `2 * H` after a valid convolution: `2 * H - 2` halves to `H - 1`.
// Halving it again needs `4 * H`.
kiln::model! {
    pub struct TwoHalvings {
        input x: [B, 1, 2 * H, 2 * W];
        let c = conv2d(x, 4, kernel = 3);
        let p = max_pool2d(c, 2);
        let q = avg_pool2d(p, 2);
        output q;
    }
}

// The multiple goes first.
kiln::model! {
    pub struct FactorLast {
        input x: [B, 1, H * 16, 16 * W];
        output x;
    }
}

// A multiple of a name, not of a number.
kiln::model! {
    pub struct FactorOfNothing {
        input x: [B, 1, 16 * 4, W];
        output x;
    }
}

// A skip connection whose sizes differ: the message shows both formulas.
kiln::model! {
    pub struct SkipMismatch {
        input x: [B, 1, 4 * H, 4 * W];
        let c = conv2d(x, 4, kernel = 3);
        let p = max_pool2d(c, 2);
        let u = upsample(p, scale = 2);
        let m = concat(u, x, axis = 1);
        output m;
    }
}

// A computed size cannot be named in a new shape.
kiln::model! {
    pub struct ReshapeComputed {
        input x: [B, 1, H, W];
        let c = conv2d(x, 1, kernel = 3);
        let r = reshape(c, (B, H, W));
        output r;
    }
}

// An offset is a number.
kiln::model! {
    pub struct OffsetOfNothing {
        input x: [B, 1, H - W, W];
        output x;
    }
}

fn main() {}
