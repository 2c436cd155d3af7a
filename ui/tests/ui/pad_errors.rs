// `pad`'s mistakes: pairs that do not pair up, more axes than the value has (the batch axis is
// never padded), a reflection wider than its axis (or than what a crop leaves of it), a
// circular pad that would wrap more than once, crops that leave nothing, a constant for another
// mode, and NumPy's name for the circular mode.
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
    pub struct CroppedReflection {
        input x: [B, 4, 8];
        let c = pad(x, (-5, 3), mode = reflect);
        output c;
    }
}

kiln::model! {
    pub struct CropsEverything {
        input x: [B, 4, 8];
        let c = pad(x, (0, 0, -2, -2));
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
    pub struct Options {
        input x: [B, 4, 8];
        let a = pad(x, (1, 1), mode = reflect, value = 1.0);
        let c = pad(x, (1, 1), mode = wrap);
        output a, c;
    }
}

fn main() {}
