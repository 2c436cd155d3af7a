// A typo in a statement keyword.
kiln::model! {
    pub struct Mlp {
        inptu x: [B, 16];
        let h = linear(x, 8);
        output h;
    }
}

fn main() {}
