// PyTorch's indexing of a sequence: its last position `h[:, -1]` is `select`, a range of
// positions `h[:, 1:4]`, `h[:, 1:]` or `h[:, :-1]` is `narrow`, and other indexing names both.
kiln::model! {
    pub struct Last {
        input x: [B, T, 8];
        let h = linear(x, 4);
        let last = h[:, -1];
        output last;
    }
}

kiln::model! {
    pub struct Range {
        input x: [B, T, 8];
        let h = linear(x, 4);
        let window = h[:, 1:4];
        output window;
    }
}

kiln::model! {
    pub struct Rest {
        input x: [B, T, 8];
        let h = linear(x, 4);
        let shifted = h[:, 1:];
        output shifted;
    }
}

kiln::model! {
    pub struct AllButLast {
        input x: [B, T, 8];
        let h = linear(x, 4);
        let previous = h[:, :-1];
        output previous;
    }
}

kiln::model! {
    pub struct Both {
        input x: [B, T, 8];
        let h = linear(x, 4);
        let corner = h[:, 0, 1:3];
        output corner;
    }
}

fn main() {}
