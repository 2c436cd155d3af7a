//! PyTorch parity for the loss-option cases written by `tests/fixtures/gen_loss.py`
//! (`tests/fixtures/<case>/`, see its README): cross-entropy with class weights
//! (`weight = (...)`), label smoothing and `ignore_index` together, over `[B, T, C]` sequence
//! logits (padding labels that are a class) and per pixel over `[B, C, H, W]` image logits
//! (void labels past the classes); binary cross-entropy with logits with `pos_weight` and
//! `weight` per column; the L1, smooth L1 and Huber losses summed; the negative
//! log-likelihood of log-probabilities over rows (class weights, ignore_index) and per pixel;
//! in f64 and f32.
//!
//! As in `seq.rs` and `vision.rs`: each model is declared with `model!` with its layers named
//! after the fixture's modules, loaded from `param.*`, and checked against PyTorch: every
//! forward value `output.*` (after `loss_and_grad`, from the workspace, and from `forward`), the
//! `loss`, every parameter gradient, three steps of Adam and AdamW, and loading the
//! `state_dict` file. `grad.input.*` is not compared (kiln computes no gradient with respect to
//! the input data).
//!
//! Run with `--nocapture` to see the largest errors per category.

use crate::common::Fixture;
use kiln::ndarray::{Array, Dimension, Ix1, Ix2, Ix3, Ix4, IxDyn};
use kiln::Float;

kiln::model! {
    /// `ce_smooth_weight`: h = tanh(fc1(x)) 5 -> 6, fc2 6 -> 4 at every position; CE with
    /// class weights, label smoothing 0.2 and ignore_index 0.
    pub struct CeSmoothWeight {
        input x: [B, T, 5];
        target label: [B, T] classes 4;
        let fc1 = linear(x, 6);
        let h = tanh(fc1);
        let fc2 = linear(h, 4);
        output h, fc2;
        loss cross_entropy(fc2, label, ignore_index = 0, weight = (0.5, 2.0, 1.0, 0.25), label_smoothing = 0.2);
    }
}

kiln::model! {
    /// `ce_smooth_weight_seg`: a 3x3 convolution to 3 classes; per-pixel CE with class
    /// weights, label smoothing 0.1 and void pixels (ignore_index 255).
    pub struct CeSmoothWeightSeg {
        input x: [B, 2, 4, 5];
        target label: [B, 4, 5] classes 3;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        output conv1;
        loss cross_entropy(conv1, label, ignore_index = 255, weight = (1.0, 2.0, 0.5), label_smoothing = 0.1);
    }
}

kiln::model! {
    /// `bce_pos_weight`: h = tanh(fc1(x)) 5 -> 7, fc2 7 -> 3; multi-label BCE with logits,
    /// `pos_weight` and `weight` per column.
    pub struct BcePosWeight {
        input x: [B, 5];
        target y: [B, 3];
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 3);
        output h, fc2;
        loss bce_with_logits(fc2, y, pos_weight = (3.0, 0.5, 1.0), weight = (1.0, 2.0, 0.25));
    }
}

kiln::model! {
    /// `regression_losses`: h = tanh(fc1(x)) 5 -> 7, fc2 7 -> 3; the sum of the L1, smooth L1
    /// (beta 0.5) and Huber (delta 0.8) losses.
    pub struct RegressionLosses {
        input x: [B, 5];
        target y: [B, 3];
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 3);
        output h, fc2;
        loss l1(fc2, y) + smooth_l1(fc2, y, beta = 0.5) + huber(fc2, y, delta = 0.8);
    }
}

kiln::model! {
    /// `nll_weight_ignore`: h = tanh(fc1(x)) 5 -> 7, fc2 7 -> 4, log_softmax; NLL with class
    /// weights and ignore_index 1.
    pub struct NllWeightIgnore {
        input x: [B, 5];
        target label: [B] classes 4;
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 4);
        let log_probs = log_softmax(fc2);
        output h, fc2, log_probs;
        loss nll(log_probs, label, weight = (1.0, 0.5, 2.0, 1.5), ignore_index = 1);
    }
}

kiln::model! {
    /// `nll_seg`: a 3x3 convolution to 3 classes, log_softmax over the classes; per-pixel NLL
    /// with void pixels (ignore_index 255).
    pub struct NllSeg {
        input x: [B, 2, 4, 5];
        target label: [B, 4, 5] classes 3;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let log_probs = log_softmax(conv1, axis = 1);
        output conv1, log_probs;
        loss nll(log_probs, label, ignore_index = 255);
    }
}

kiln::model! {
    /// `ce_soft_targets`: h = tanh(fc1(x)) 5 -> 7, fc2 7 -> 4; cross-entropy against class
    /// probabilities, with class weights and label smoothing.
    pub struct CeSoftTargets {
        input x: [B, 5];
        target y: [B, 4];
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 4);
        output h, fc2;
        loss cross_entropy(fc2, y, weight = (1.0, 0.5, 2.0, 1.5), label_smoothing = 0.1);
    }
}

kiln::model! {
    /// `ce_soft_targets_seg`: a 3x3 convolution to 3 classes; per-pixel cross-entropy against
    /// class probabilities (classes on axis 1), with class weights and label smoothing.
    pub struct CeSoftTargetsSeg {
        input x: [B, 2, 4, 5];
        target y: [B, 3, 4, 5];
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        output conv1;
        loss cross_entropy(conv1, y, weight = (1.0, 2.0, 0.5), label_smoothing = 0.1);
    }
}

kiln::model! {
    /// `kl_div_batchmean`: h = tanh(fc1(x)) 5 -> 7, fc2 7 -> 4, log_softmax; KL divergence
    /// against soft targets, `reduction = batchmean`.
    pub struct KlDivBatchmean {
        input x: [B, 5];
        target y: [B, 4];
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 4);
        let log_probs = log_softmax(fc2);
        output h, fc2, log_probs;
        loss kl_div(log_probs, y, reduction = batchmean);
    }
}

kiln::model! {
    /// `kl_div_log_target`: per position, h = tanh(fc1(x)) 5 -> 6, fc2 6 -> 4, log_softmax;
    /// KL divergence against log-probability targets, `reduction = batchmean`.
    pub struct KlDivLogTarget {
        input x: [B, T, 5];
        target y: [B, T, 4];
        let fc1 = linear(x, 6);
        let h = tanh(fc1);
        let fc2 = linear(h, 4);
        let log_probs = log_softmax(fc2);
        output h, fc2, log_probs;
        loss kl_div(log_probs, y, reduction = batchmean, log_target = true);
    }
}

/// Int64 labels `name` with the shape the manifest gives under `targets`.
fn labels<D: Dimension>(fixture: &Fixture, name: &str) -> Array<usize, D> {
    let key = name.split_once('.').map_or(name, |(_, n)| n);
    let shape: Vec<usize> = fixture.manifest["targets"][key]["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no shape for `{name}`", fixture.title()))
        .iter()
        .map(|d| d.as_u64().expect("a dimension") as usize)
        .collect();
    let flat = fixture.labels(name).to_vec();
    Array::from_shape_vec(IxDyn(&shape), flat)
        .and_then(|a| a.into_dimensionality::<D>())
        .unwrap_or_else(|e| panic!("{}: `{name}`: {e}", fixture.title()))
}

/// One module per case with an `f64` and an `f32` test: the input `x` of dimension `$Input`,
/// the target `label` (class labels) or `y` (floats) of dimension `$Target`; `outputs` maps
/// each model output to the fixture's step name.
macro_rules! parity_case {
    (@target labels, $fixture:ident, $Target:ty) => {
        labels::<$Target>(&$fixture, "target.label")
    };
    (@target floats, $fixture:ident, $Target:ty) => {
        $fixture.array::<F, $Target>("target.y")
    };
    (
        $case:ident, $Model:ident, input: $Input:ty, labels: $Labels:ty,
        outputs { $($out:ident => $step:ident),+ $(,)? } $(,)?
    ) => {
        parity_case!($case, $Model, input: $Input, target labels: $Labels, outputs { $($out => $step),+ });
    };
    (
        $case:ident, $Model:ident, input: $Input:ty, target $kind:ident: $Target:ty,
        outputs { $($out:ident => $step:ident),+ $(,)? } $(,)?
    ) => {
        mod $case {
            use super::*;

            fn run<F: Float>() {
                open_case!($case, $Model => fixture, report, fresh);
                let mut model = fresh();
                let x = fixture.array::<F, $Input>("input.x");
                let target = parity_case!(@target $kind, fixture, $Target);

                check_training_step!(fixture, report, model: $Model, (x.view(), target.view()), ws, { $($out => $step),+ });
                {
                    #[allow(unused_parens)]
                    let ($($out),+) = model.forward(x.view()).expect("forward");
                    $(
                        fixture.check_output(&mut report, "output (forward)", stringify!($step), $out.view().into_dyn());
                    )+
                }
                let steps = fixture.names_with("output.");
                report.require_checked("forward values", steps);
                fixture.check_state_dict(&mut report, $Model::<F>::zeros());
                check_trajectories!(fixture, report, fresh, (x.view(), target.view()), ws);
                report.finish();
            }

            in_f64_and_f32!();
        }
    };
}

parity_case! {
    ce_smooth_weight, CeSmoothWeight, input: Ix3, labels: Ix2,
    outputs { h => h, fc2 => logits },
}

parity_case! {
    ce_smooth_weight_seg, CeSmoothWeightSeg, input: Ix4, labels: Ix3,
    outputs { conv1 => logits },
}

parity_case! {
    bce_pos_weight, BcePosWeight, input: Ix2, target floats: Ix2,
    outputs { h => h, fc2 => logits },
}

kiln::model! {
    /// `bce_probs`: h = tanh(fc1(x)) 5 -> 7, probs = sigmoid(fc2 7 -> 3); BCE on
    /// probabilities (`nn.BCELoss`) against soft targets, `weight` per column.
    pub struct BceProbs {
        input x: [B, 5];
        target y: [B, 3];
        let fc1 = linear(x, 7);
        let h = tanh(fc1);
        let fc2 = linear(h, 3);
        let probs = sigmoid(fc2);
        output h, fc2, probs;
        loss bce(probs, y, weight = (1.0, 0.5, 2.0));
    }
}

parity_case! {
    bce_probs, BceProbs, input: Ix2, target floats: Ix2,
    outputs { h => h, fc2 => logits, probs => probs },
}

parity_case! {
    ce_soft_targets, CeSoftTargets, input: Ix2, target floats: Ix2,
    outputs { h => h, fc2 => logits },
}

parity_case! {
    ce_soft_targets_seg, CeSoftTargetsSeg, input: Ix4, target floats: Ix4,
    outputs { conv1 => logits },
}

parity_case! {
    kl_div_batchmean, KlDivBatchmean, input: Ix2, target floats: Ix2,
    outputs { h => h, fc2 => logits, log_probs => log_probs },
}

parity_case! {
    kl_div_log_target, KlDivLogTarget, input: Ix3, target floats: Ix3,
    outputs { h => h, fc2 => logits, log_probs => log_probs },
}

parity_case! {
    regression_losses, RegressionLosses, input: Ix2, target floats: Ix2,
    outputs { h => h, fc2 => pred },
}

parity_case! {
    nll_weight_ignore, NllWeightIgnore, input: Ix2, labels: Ix1,
    outputs { h => h, fc2 => logits, log_probs => log_probs },
}

parity_case! {
    nll_seg, NllSeg, input: Ix4, labels: Ix3,
    outputs { conv1 => logits, log_probs => log_probs },
}
