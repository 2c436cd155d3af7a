// A masked mean over time whose lengths measure another dim.
kiln::model! {
    pub struct Pool {
        input x: [B, T, 8];
        input len: [B] lengths S;
        let m = mean(x, axis = 1, lengths = len);
        output m;
    }
}

fn main() {}
