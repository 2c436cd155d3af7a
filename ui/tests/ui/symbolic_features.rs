// `linear` needs a fixed number of input features to size its weight.
kiln::model! {
    pub struct Mlp {
        input x: [B, D];
        let h = linear(x, 8);
        output h;
    }
}

fn main() {}
