// conv1d takes a sequence batch [batch, channels, length]; an image batch wants conv2d.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 8, 8];
        let c = conv1d(x, 4, kernel = 3);
        output c;
    }
}

fn main() {}
