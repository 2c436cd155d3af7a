// A typo in a binding's name: the error suggests the binding in scope.
kiln::model! {
    pub struct Mlp {
        input x: [B, 784];
        let hidden = relu(linear(x, 128));
        let logits = linear(hiden, 10);
        output logits;
    }
}

fn main() {}
