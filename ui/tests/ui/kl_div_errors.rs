// `kl_div`: PyTorch's `reduction` names (a model's loss is one number, so not `none`), a
// float target of the prediction's shape, class labels sent to `cross_entropy`.
kiln::model! {
    pub struct ReductionNone {
        input x: [B, 4];
        target y: [B, 3];
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y, reduction = none);
    }
}

kiln::model! {
    pub struct ReductionUnknown {
        input x: [B, 4];
        target y: [B, 3];
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y, reduction = average);
    }
}

kiln::model! {
    pub struct ReductionString {
        input x: [B, 4];
        target y: [B, 3];
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y, reduction = "batchmean");
    }
}

kiln::model! {
    pub struct LogTargetNumber {
        input x: [B, 4];
        target y: [B, 3];
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y, log_target = 1);
    }
}

kiln::model! {
    pub struct TargetShape {
        input x: [B, 4];
        target y: [B, 5];
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y);
    }
}

kiln::model! {
    pub struct ClassLabels {
        input x: [B, 4];
        target y: [B] classes 3;
        let lp = log_softmax(linear(x, 3));
        output lp;
        loss kl_div(lp, y);
    }
}

fn main() {}
