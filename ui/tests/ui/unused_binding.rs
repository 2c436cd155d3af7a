// A layer whose value reaches no output and not the loss would train on nothing.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h1 = relu(linear(x, 32));
        let h2 = relu(linear(x, 32));
        let out = linear(h1, 4);
        output out;
    }
}

fn main() {}
