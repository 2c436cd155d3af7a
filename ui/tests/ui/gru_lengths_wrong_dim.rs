// The same mistake with a GRU that returns its final state.
kiln::model! {
    pub struct Encoder {
        input x: [B, T, 8];
        input len: [B] lengths S;
        let h = gru(x, 8, lengths = len, final_state = true);
        output h;
    }
}

fn main() {}
