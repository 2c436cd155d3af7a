// `relu` takes one tensor.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = relu(linear(x, 8), 0.1);
        output h;
    }
}

fn main() {}
