// `rnn`'s nonlinearity: a name it does not take, and the option given to a gated cell.
kiln::model! {
    pub struct Sigmoid {
        input x: [B, T, 4];
        let h = rnn(x, 8, nonlinearity = sigmoid);
        output h;
    }
}

kiln::model! {
    pub struct GatedCell {
        input x: [B, T, 4];
        let h = lstm(x, 8, nonlinearity = relu);
        output h;
    }
}

fn main() {}
