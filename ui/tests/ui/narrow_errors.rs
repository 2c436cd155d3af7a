// `narrow` and `select` mistakes: a window past the end of a fixed axis, an index past it,
// the batch axis, a negative start whose window runs past the end of a symbolic axis, a
// window to the end that starts past it, an empty window, and the mistakes of `end`: given
// with `length`, zero, counted from the other side than the start, before the start, and
// leaving nothing of a fixed axis.
kiln::model! {
    pub struct PastTheEnd {
        input x: [B, 5, 3];
        let a = narrow(x, axis = 1, start = 3, length = 4);
        output a;
    }
}

kiln::model! {
    pub struct IndexPastTheEnd {
        input x: [B, 5, 3];
        let a = select(x, axis = 2, index = 3);
        output a;
    }
}

kiln::model! {
    pub struct BatchAxis {
        input x: [B, 5, 3];
        let a = select(x, axis = 0, index = 0);
        output a;
    }
}

kiln::model! {
    pub struct NegativeTooLong {
        input x: [B, T, 3];
        let a = narrow(x, axis = 1, start = -2, length = 3);
        output a;
    }
}

kiln::model! {
    pub struct ToTheEndPastIt {
        input x: [B, 5, 3];
        let a = narrow(x, axis = 1, start = 5);
        output a;
    }
}

kiln::model! {
    pub struct Empty {
        input x: [B, 5, 3];
        let b = narrow(x, axis = 1, start = 1, length = 0);
        output b;
    }
}

kiln::model! {
    pub struct LengthAndEnd {
        input x: [B, T, 3];
        let a = narrow(x, axis = 1, start = 1, length = 2, end = -1);
        output a;
    }
}

kiln::model! {
    pub struct EndZero {
        input x: [B, T, 3];
        let a = narrow(x, axis = 1, start = 1, end = 0);
        output a;
    }
}

kiln::model! {
    pub struct EndFromTheOtherSide {
        input x: [B, T, 3];
        let a = narrow(x, axis = 1, start = -3, end = 2);
        output a;
    }
}

kiln::model! {
    pub struct EndBeforeStart {
        input x: [B, T, 3];
        let a = narrow(x, axis = 1, start = -1, end = -2);
        output a;
    }
}

kiln::model! {
    pub struct EndLeavesNothing {
        input x: [B, 5, 3];
        let a = narrow(x, axis = 1, start = 3, end = -2);
        output a;
    }
}

fn main() {}
