kiln::model! {
    pub struct M {
        input x: [B];
        let h = linear(x, 4);
        output h;
    }
}

fn main() {}
