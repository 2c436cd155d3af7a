// `bias` is a switch: `true` or `false`.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = linear(x, 10, bias = 3);
        output h;
    }
}

fn main() {}
