// `prelu`'s mistakes: a slope count other than axis 1's size, a symbolic axis 1, a value with
// no axis 1, and a starting slope that is not a number.
kiln::model! {
    pub struct WrongCount {
        input x: [B, 8, 6, 6];
        let y = prelu(x, num_parameters = 6);
        output y;
    }
}

kiln::model! {
    pub struct SymbolicChannels {
        input x: [B, T, 6];
        let y = prelu(x, num_parameters = 6);
        output y;
    }
}

kiln::model! {
    pub struct NoChannelAxis {
        input x: [B, 4];
        let s = sum(x);
        let y = prelu(s, num_parameters = 4);
        output y;
    }
}

kiln::model! {
    pub struct InitNotANumber {
        input x: [B, 4];
        let y = prelu(x, init = x);
        output y;
    }
}

fn main() {}
