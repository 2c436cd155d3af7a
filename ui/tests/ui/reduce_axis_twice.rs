// The same axis twice, once from each end.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 4, 5];
        let s = sum(x, axis = (3, -1));
        output s;
    }
}

fn main() {}
