// `dropout` between stacked recurrent layers: a probability, and only with two layers or more.
kiln::model! {
    pub struct OneLayer {
        input x: [B, T, 4];
        let h = lstm(x, 8, dropout = 0.3);
        output h;
    }
}

kiln::model! {
    pub struct NotAProbability {
        input x: [B, T, 4];
        let h = gru(x, 8, layers = 2, dropout = 1.5);
        output h;
    }
}

fn main() {}
