// An op kiln does not have, with no close match: the error lists the ops.
kiln::model! {
    pub struct Seq {
        input x: [B, 16];
        let h = lstm(x, 32);
        output h;
    }
}

fn main() {}
