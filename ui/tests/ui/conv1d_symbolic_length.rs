// A symbolic length passes only through a conv1d that keeps it (stride 1, `padding = same` or
// `causal`).
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, T];
        let c = conv1d(x, 8, kernel = 3);
        output c;
    }
}

fn main() {}
