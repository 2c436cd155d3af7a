// `linear` takes [batch, features]; an image [B, 28, 28] is flattened first.
kiln::model! {
    pub struct Mlp {
        input x: [B, 28, 28];
        let h = linear(x, 8);
        output h;
    }
}

fn main() {}
