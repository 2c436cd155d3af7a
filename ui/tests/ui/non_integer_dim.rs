// Dimensions are positive integers or symbolic names.
kiln::model! {
    pub struct Mlp {
        input x: [B, 7.5];
        let h = linear(x, 4);
        output h;
    }
}

fn main() {}
