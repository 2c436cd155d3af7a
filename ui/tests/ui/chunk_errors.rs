// `chunk` and `split` mistakes: a part taken without unpacking, a tuple `let` of another op,
// of an expression instead of a name, with `index` written by hand, naming nothing; more names
// than parts (including `torch.chunk`'s fewer parts), sections that do not add up or do not
// match the names, a symbolic axis, the batch axis, a missing axis, and a part never used.
kiln::model! {
    pub struct NotUnpacked {
        input x: [B, 6];
        let a = chunk(x, 2, axis = 1);
        output a;
    }
}

kiln::model! {
    pub struct OtherOp {
        input x: [B, 6];
        let (a, b) = linear(x, 4);
        output a, b;
    }
}

kiln::model! {
    pub struct OfAnExpression {
        input x: [B, 6];
        let (q, k, v) = chunk(linear(x, 12), 3, axis = 1);
        output q, k, v;
    }
}

kiln::model! {
    pub struct PartByHand {
        input x: [B, 6];
        let (a, b) = chunk(x, 2, axis = 1, index = 1);
        output a, b;
    }
}

kiln::model! {
    pub struct NamesNothing {
        input x: [B, 6];
        let (_, _) = chunk(x, 2, axis = 1);
        output x;
    }
}

kiln::model! {
    pub struct Cuts {
        input x: [B, 6, 8];
        input s: [B, T, 8];
        let (a, b) = chunk(x, 3, axis = 1);
        let (c, d, e, f) = chunk(x, 4, axis = 1);
        let (g, h) = split(x, (3, 4), axis = 2);
        let (k, l) = chunk(s, 2, axis = 1);
        let (m, n) = chunk(x, 2, axis = 0);
        output a, b, c, d, e, f, g, h, k, l, m, n;
    }
}

kiln::model! {
    pub struct PartUnused {
        input x: [B, 6];
        let (a, b) = chunk(x, 2, axis = 1);
        output a;
    }
}

kiln::model! {
    pub struct SectionsAndNames {
        input x: [B, 6, 8];
        let (i, j) = split(x, (2, 2, 4), axis = 2);
        output i, j;
    }
}

kiln::model! {
    pub struct NoAxis {
        input x: [B, 6, 8];
        let (o, p) = split(x, 4);
        output o, p;
    }
}

fn main() {}
