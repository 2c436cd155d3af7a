// Concatenating along the features needs the same batch and spatial dims elsewhere.
kiln::model! {
    pub struct Tiny {
        input a: [B, 4, 8, 8];
        input b: [B, 2, 4, 4];
        let joined = concat(a, b, axis = 1);
        output joined;
    }
}

fn main() {}
