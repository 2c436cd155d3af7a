// The regression losses' mistakes: a `delta` of 0, a negative `beta`, a threshold that is not
// a number, a target of another shape, class labels as the target, and PyTorch's name for the
// loss.
kiln::model! {
    pub struct ZeroDelta {
        input x: [B, 4];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss huber(pred, y, delta = 0);
    }
}

kiln::model! {
    pub struct NegativeBeta {
        input x: [B, 4];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss smooth_l1(pred, y, beta = -0.5);
    }
}

kiln::model! {
    pub struct NamedThreshold {
        input x: [B, 4];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss huber(pred, y, delta = x);
    }
}

kiln::model! {
    pub struct OtherShape {
        input x: [B, 4];
        target y: [B, 3];
        let pred = linear(x, 2);
        output pred;
        loss l1(pred, y);
    }
}

kiln::model! {
    pub struct ClassLabels {
        input x: [B, 4];
        target y: [B] classes 2;
        let pred = linear(x, 2);
        output pred;
        loss smooth_l1(pred, y);
    }
}

kiln::model! {
    pub struct TorchName {
        input x: [B, 4];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss l1_loss(pred, y);
    }
}

fn main() {}
