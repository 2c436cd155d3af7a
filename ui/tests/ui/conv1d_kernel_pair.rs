// conv1d's kernel is one integer; a (height, width) pair is conv2d's.
kiln::model! {
    pub struct Tiny {
        input x: [B, 4, 16];
        let c = conv1d(x, 8, kernel = (1, 3));
        output c;
    }
}

fn main() {}
