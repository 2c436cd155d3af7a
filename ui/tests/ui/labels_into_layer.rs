// Integer class labels are a target for `cross_entropy`, not a layer's input.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        target y: [B] classes 4;
        let h = linear(y, 4);
        output h;
        loss cross_entropy(h, y);
    }
}

fn main() {}
