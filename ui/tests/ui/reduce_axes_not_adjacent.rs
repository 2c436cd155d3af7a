// Several axes are reduced as one: they must be next to each other.
kiln::model! {
    pub struct Tiny {
        input x: [B, 3, 4, 5];
        let m = mean(x, axis = (1, 3));
        output m;
    }
}

fn main() {}
