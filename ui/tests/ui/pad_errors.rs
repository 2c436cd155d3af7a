// `pad`'s mistakes: pairs that do not pair up, more axes than the value has (the batch axis is
// never padded), a reflection wider than its axis, a circular pad that would wrap more than
// once, a symbolic axis, a constant for another mode, a negative (cropping) pad, and NumPy's
// name for the circular mode.
kiln::model! {
    pub struct Odd {
        input x: [B, 4, 8];
        let a = pad(x, (1, 2, 3));
        output a;
    }
}

kiln::model! {
    pub struct TooManyAxes {
        input x: [B, 4, 8];
        let b = pad(x, (1, 1, 1, 1, 1, 1));
        output b;
    }
}

kiln::model! {
    pub struct WideReflection {
        input x: [B, 4, 8];
        let c = pad(x, (8, 0), mode = reflect);
        output c;
    }
}

kiln::model! {
    pub struct WideWrap {
        input x: [B, 4, 8];
        let c = pad(x, (0, 9), mode = circular);
        output c;
    }
}

kiln::model! {
    pub struct Symbolic {
        input x: [B, C, T];
        let a = pad(x, (2, 0));
        output a;
    }
}

kiln::model! {
    pub struct Options {
        input x: [B, 4, 8];
        let a = pad(x, (1, 1), mode = reflect, value = 1.0);
        let b = pad(x, (-1, 1));
        let c = pad(x, (1, 1), mode = wrap);
        output a, b, c;
    }
}

fn main() {}
