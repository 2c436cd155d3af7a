// Initial states: `h0` of the wrong shape, `c0` given to a cell without cells, and `c0`
// without `h0`.
kiln::model! {
    pub struct WrongWidth {
        input x: [B, T, 4];
        input h: [B, 16];
        let y = gru(x, 8, h0 = h);
        output y;
    }
}

kiln::model! {
    pub struct Stacked {
        input x: [B, T, 4];
        input h: [B, 8];
        let y = lstm(x, 8, layers = 2, h0 = h);
        output y;
    }
}

kiln::model! {
    pub struct GruCells {
        input x: [B, T, 4];
        input h: [B, 8];
        let y = gru(x, 8, h0 = h, c0 = h);
        output y;
    }
}

kiln::model! {
    pub struct CellsAlone {
        input x: [B, T, 4];
        input c: [B, 8];
        let y = lstm(x, 8, c0 = c);
        output y;
    }
}

fn main() {}
