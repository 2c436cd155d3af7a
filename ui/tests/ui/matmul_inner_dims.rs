kiln::model! {
    pub struct Scores {
        input q: [B, T, 16];
        input k: [B, T, 16];
        let s = matmul(q, k);
        output s;
    }
}

fn main() {}
