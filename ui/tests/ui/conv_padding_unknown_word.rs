// `padding` takes a number, a pair, `same` or `valid`; `causal` only for `conv1d`, which
// names it among its words.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 8, 8];
        let c = conv2d(x, 4, kernel = 3, padding = full);
        output c;
    }
}

kiln::model! {
    pub struct CausalImage {
        input x: [B, 1, 8, 8];
        let c = conv2d(x, 4, kernel = 3, padding = causal);
        output c;
    }
}

kiln::model! {
    pub struct Sequence {
        input x: [B, 1, 8];
        let c = conv1d(x, 4, kernel = 3, padding = casual);
        output c;
    }
}

fn main() {}
