// `linear` needs the number of output features.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = linear(x);
        output h;
    }
}

fn main() {}
