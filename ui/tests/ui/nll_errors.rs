// `nll`'s mistakes: label smoothing (an option of `cross_entropy` only), a float target, and
// PyTorch's name for it.
kiln::model! {
    pub struct Smoothing {
        input x: [B, 4];
        target y: [B] classes 3;
        let log_probs = log_softmax(linear(x, 3));
        output log_probs;
        loss nll(log_probs, y, label_smoothing = 0.1);
    }
}

kiln::model! {
    pub struct FloatTarget {
        input x: [B, 4];
        target y: [B, 3];
        let log_probs = log_softmax(linear(x, 3));
        output log_probs;
        loss nll(log_probs, y);
    }
}

kiln::model! {
    pub struct TorchName {
        input x: [B, 4];
        target y: [B] classes 3;
        let log_probs = log_softmax(linear(x, 3));
        output log_probs;
        loss nll_loss(log_probs, y);
    }
}

fn main() {}
