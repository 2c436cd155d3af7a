// `cross_entropy` takes integer class labels, or class probabilities of the logits' shape:
// not labels stored as floats, not probabilities of another shape, and no `ignore_index`
// with probabilities (PyTorch refuses it too). Image logits keep their classes on axis 1.
kiln::model! {
    pub struct FloatLabels {
        input x: [B, 784];
        target y: [B];
        let logits = linear(x, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

kiln::model! {
    pub struct OtherShape {
        input x: [B, 784];
        target y: [B, 5];
        let logits = linear(x, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

kiln::model! {
    pub struct IgnoreWithProbabilities {
        input x: [B, 784];
        target y: [B, 10];
        let logits = linear(x, 10);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 0);
    }
}

kiln::model! {
    pub struct FloatPixelLabels {
        input x: [B, 3, 8, 8];
        target y: [B, 8, 8];
        let logits = conv2d(x, 4, kernel = 3, padding = 1);
        output logits;
        loss cross_entropy(logits, y);
    }
}

kiln::model! {
    pub struct PixelProbabilitiesOfOtherClasses {
        input x: [B, 3, 8, 8];
        target y: [B, 3, 8, 8];
        let logits = conv2d(x, 4, kernel = 3, padding = 1);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {}
