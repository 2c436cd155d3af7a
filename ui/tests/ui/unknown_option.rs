// A typo in an option's name: the error suggests the closest option of that op.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = linear(x, 10, biass = false);
        output h;
    }
}

fn main() {}
