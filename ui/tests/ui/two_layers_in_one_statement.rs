// A statement holds one parameterized layer: its parameters are named after the binding.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = linear(linear(x, 8), 4);
        output h;
    }
}

fn main() {}
