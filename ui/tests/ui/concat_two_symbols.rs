// `concat` along a time axis of two different symbols: `T + S` is no formula of one symbol.
kiln::model! {
    pub struct TwoSymbols {
        input q: [B, T, 4];
        input m: [B, S, 4];
        let joined = concat(q, m, axis = 1);
        output joined;
    }
}

fn main() {}
