// A binding holds a tensor computed from the inputs, not a bare number.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let scale = 0.5;
        let h = linear(x, 8);
        output h;
    }
}

fn main() {}
