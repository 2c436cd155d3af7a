// Each name is bound once (parameters are named after their binding: `h.weight`).
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = relu(linear(x, 16));
        let h = tanh(linear(h, 16));
        output h;
    }
}

fn main() {}
