// An output is a value the model computes; `let h = x;` only renames the input.
kiln::model! {
    pub struct Identity {
        input x: [B, 16];
        let h = x;
        output h;
    }
}

fn main() {}
