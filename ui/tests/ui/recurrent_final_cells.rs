// `final_cells` (the LSTM's final cell states, beside `final_state`'s hidden states) and
// `all_layers` (every layer's) go with `final_state`.
kiln::model! {
    pub struct GruCells {
        input x: [B, T, 4];
        let y = gru(x, 8, final_state = true, final_cells = true);
        output y;
    }
}

kiln::model! {
    pub struct CellsAlone {
        input x: [B, T, 4];
        let y = lstm(x, 8, final_cells = true);
        output y;
    }
}

kiln::model! {
    pub struct EveryLayerAlone {
        input x: [B, T, 4];
        let y = gru(x, 8, layers = 2, all_layers = true);
        output y;
    }
}

fn main() {}
