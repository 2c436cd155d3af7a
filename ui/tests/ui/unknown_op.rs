// A typo in an op's name: the error suggests the closest op.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = lienar(x, 10);
        output h;
    }
}

fn main() {}
