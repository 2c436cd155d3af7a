// `padding` takes a number, a pair, `same` or `valid`.
kiln::model! {
    pub struct Tiny {
        input x: [B, 1, 8, 8];
        let c = conv2d(x, 4, kernel = 3, padding = full);
        output c;
    }
}

fn main() {}
