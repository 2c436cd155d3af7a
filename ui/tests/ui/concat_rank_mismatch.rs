// Joining a flat vector with a feature map: here reshaping (or flattening) is the fix.
kiln::model! {
    pub struct Head {
        input a: [B, 64];
        input b: [B, 4, 4, 4];
        let joined = concat(a, b, axis = 1);
        output joined;
    }
}

fn main() {}
