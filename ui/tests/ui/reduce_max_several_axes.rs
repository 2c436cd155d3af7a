// `max` takes one axis (its gradient goes to the first maximum along it).
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 4, 5];
        let m = max(x, axis = (2, 3));
        output m;
    }
}

fn main() {}
