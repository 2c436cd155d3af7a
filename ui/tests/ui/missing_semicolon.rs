// Every statement ends with `;`.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = relu(linear(x, 8))
        let out = linear(h, 2);
        output out;
    }
}

fn main() {}
