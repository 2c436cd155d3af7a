//! Every op's generated backward pass against central finite differences, in f64.
//!
//! Each model below exercises a few ops. The test draws parameters and inputs from a fixed
//! seed, computes the analytic gradients with the generated backward pass, and compares every
//! parameter's gradient with `kiln::check::gradient_check`.

use super::{check, check_batch, check_training_mode, floats, perturb_affine, random};
use kiln::ndarray::{Array, Array1, Array3, ArrayViewD, Axis};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Supervised, TargetView};

fn labels(rng: &mut StdRng, n: usize, classes: usize) -> Array1<usize> {
    Array1::from_shape_simple_fn(n, || rng.random_range(0..classes))
}

/// A training step's gradients (training mode) against central differences of the model's
/// inference-mode loss, for a model with one input and one target.
fn check_step<M: Supervised<f64> + Clone>(
    model: &mut M,
    x: ArrayViewD<'_, f64>,
    target: TargetView<'_, f64>,
) {
    let mut grads = model.zero_grads();
    model
        .train_batch(
            x.view(),
            target.clone(),
            &mut M::Workspace::default(),
            &mut grads,
        )
        .unwrap();
    check(model, &grads, |m| {
        m.eval_batch(x.view(), target.clone(), &mut M::Workspace::default())
            .unwrap()
    });
}

kiln::model! {
    struct Classifier {
        input x: [B, 6];
        target y: [B] classes 3;
        let h = relu(linear(x, 7));
        let logits = linear(h, 3, bias = false);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn linear_relu_cross_entropy() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = Classifier::<f64>::new(&mut rng);
    let x = random(&mut rng, (5, 6), -1.0, 1.0);
    let y = labels(&mut rng, 5, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    struct Activations {
        input x: [B, 5];
        target t: [B, 4];
        let z = linear(x, 4);
        let a = sigmoid(z) * tanh(z) + gelu(z) - 0.3 * softplus(z);
        let b = leaky_relu(z, 0.2) + exp(0.5 * z) / (square(z) + 1.0);
        let c = log(softplus(z) + 0.5) + sqrt(square(z) + 0.1) - -z;
        let pred = linear(a * b + c, 4);
        output pred;
        loss mse(pred, t);
    }
}

#[test]
fn pointwise_ops_and_mse() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut model = Activations::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 5), -2.0, 2.0);
    let t = random(&mut rng, (3, 4), -1.0, 1.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// The piecewise activations, with their inputs spread over -12..12 so that every piece
    /// (below 0 or -3, between, above 6 or 3) holds some of them.
    struct HardActivations {
        input x: [B, 5];
        target t: [B, 6];
        let z = linear(x, 6);
        let w = 6.0 * z;
        let a = relu6(w) + silu(w) * hardsigmoid(w);
        let b = hardswish(w) - 0.5 * relu6(-w);
        let pred = linear(a * b, 6);
        output pred;
        loss mse(pred, t);
    }
}

#[test]
fn piecewise_activations_and_silu() {
    let mut rng = StdRng::seed_from_u64(15);
    let mut model = HardActivations::<f64>::new(&mut rng);
    let x = random(&mut rng, (4, 5), -2.0, 2.0);
    let t = random(&mut rng, (4, 6), -1.0, 1.0);
    // The pre-activations do fall on every piece.
    let bias = model.z.bias.as_ref().expect("linear has a bias");
    let w = (x.dot(&model.z.weight.t()) + bias) * 6.0;
    for (lo, hi) in [
        (-12.0, -3.0),
        (-3.0, 0.0),
        (0.0, 3.0),
        (3.0, 6.0),
        (6.0, 12.0),
    ] {
        assert!(
            w.iter().any(|&v| v > lo && v < hi),
            "none in {lo}..{hi}: {w}"
        );
    }
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// abs, elu, selu, mish, softsign, logsigmoid, clamp and hardtanh, with inputs spread
    /// over every piece of the piecewise ones.
    struct MoreActivations {
        input x: [B, 5];
        target t: [B, 6];
        let z = linear(x, 6);
        let w = 4.0 * z;
        let a = abs(w) * elu(w, alpha = 0.7) + selu(w) - mish(w);
        let b = softsign(w) + logsigmoid(w) + clamp(w, min = -1.5, max = 0.5) * hardtanh(w);
        let c = clamp(w, max = 2.0) - clamp(w, min = -2.0) + maximum(w, 0.3 * w) - minimum(w, 1.0)
            + pow(abs(w) + 0.5, 1.5) - pow(w, 3);
        let pred = linear(a * b + c, 6);
        output pred;
        loss mse(pred, t);
    }
}

#[test]
fn abs_elu_selu_mish_softsign_logsigmoid_clamp_hardtanh_maximum_minimum() {
    let mut rng = StdRng::seed_from_u64(16);
    let mut model = MoreActivations::<f64>::new(&mut rng);
    let x = random(&mut rng, (4, 5), -2.0, 2.0);
    let t = random(&mut rng, (4, 6), -1.0, 1.0);
    let bias = model.z.bias.as_ref().expect("linear has a bias");
    let w = (x.dot(&model.z.weight.t()) + bias) * 4.0;
    for (lo, hi) in [
        (-8.0, -2.0),
        (-1.5, -1.0),
        (-1.0, 0.0),
        (0.0, 0.5),
        (2.0, 8.0),
    ] {
        assert!(
            w.iter().any(|&v| v > lo && v < hi),
            "none in {lo}..{hi}: {w}"
        );
    }
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// The piecewise ops alone after an identity layer, whose bias gradient is then the op's
    /// derivative at the input.
    struct Kinks {
        input x: [B, 1];
        let z = linear(x, 1);
        let a = abs(z);
        let c = clamp(z, min = -1.0, max = 1.0);
        let e = elu(z, alpha = 0.5);
        let p = pow(abs(z), 1.5);
        output a, c, e, p;
    }
}

/// At the kinks the derivatives are PyTorch's (2.15): `abs` 0 at 0 (`sgn(0)`), `clamp` 0 at
/// either bound (1 only strictly inside), `elu` alpha at 0, `pow(x, 1.5)` 0 at 0; a NaN
/// stays NaN through each.
#[test]
fn derivatives_at_the_kinks_and_nan() {
    use kiln::ndarray::{array, Array2};
    let mut model = Kinks::<f64>::zeros();
    model.z.weight.fill(1.0);
    let (a, c, e, _) = model
        .forward(array![[0.0], [-1.0], [1.0], [f64::NAN]].view())
        .expect("forward");
    assert_eq!(a.column(0).to_vec()[..3], [0.0, 1.0, 1.0]);
    assert_eq!(c.column(0).to_vec()[..3], [0.0, -1.0, 1.0]);
    assert!(a[[3, 0]].is_nan() && c[[3, 0]].is_nan() && e[[3, 0]].is_nan());
    // The derivative of output `which` at `point`.
    let mut derivative = |which: usize, point: f64| {
        let x = array![[point]];
        let mut ws = model.workspace();
        let mut grads = model.zero_grads();
        model.forward_train(x.view(), &mut ws).expect("forward");
        let d = |i: usize| Array2::from_elem((1, 1), if i == which { 1.0 } else { 0.0 });
        model
            .backward(
                &mut ws,
                d(0).view(),
                d(1).view(),
                d(2).view(),
                d(3).view(),
                &mut grads,
            )
            .expect("backward");
        grads.z.bias.as_ref().expect("a bias")[0]
    };
    assert_eq!(derivative(0, 0.0), 0.0);
    assert_eq!((derivative(0, -2.0), derivative(0, 2.0)), (-1.0, 1.0));
    assert_eq!((derivative(1, -1.0), derivative(1, 1.0)), (0.0, 0.0));
    assert_eq!((derivative(1, -1.5), derivative(1, 1.5)), (0.0, 0.0));
    assert_eq!((derivative(1, -0.5), derivative(1, 0.999)), (1.0, 1.0));
    assert_eq!(derivative(2, 0.0), 0.5);
    // `pow(|x|, 1.5)`: the derivative 1.5·|x|^0.5 is 0 at 0, not a NaN from x^1.5 / x (which
    // the 0 of `abs` would not hide: 0 · NaN is NaN).
    assert_eq!(derivative(3, 0.0), 0.0);
    assert_eq!((derivative(3, 4.0), derivative(3, -4.0)), (3.0, -3.0));
}

kiln::model! {
    /// Dropout of everything, as `nn.Dropout(p=1)`.
    struct DropAll {
        input x: [B, 3];
        let h = linear(x, 3);
        let d = dropout(h, 1.0);
        output d;
    }
}

/// `dropout(x, 1.0)` zeroes every value in training (and so every gradient through it), and is
/// the identity in inference, as PyTorch's.
#[test]
fn dropout_of_everything() {
    use kiln::ndarray::{array, Array2};
    let mut model = DropAll::<f64>::new(&mut StdRng::seed_from_u64(3));
    let x = array![[1.0, -2.0, 0.5], [0.25, 4.0, -1.0]];
    let mut ws = model.workspace();
    model.forward_train(x.view(), &mut ws).expect("forward");
    assert_eq!(ws.d().expect("the output"), Array2::<f64>::zeros((2, 3)));
    let mut grads = model.zero_grads();
    model
        .backward(&mut ws, Array2::ones((2, 3)).view(), &mut grads)
        .expect("backward");
    assert!(grads.h.weight.iter().all(|&g| g == 0.0));
    let h = x.dot(&model.h.weight.t()) + model.h.bias.as_ref().expect("a bias");
    assert_eq!(model.forward(x.view()).expect("forward"), h);
}

kiln::model! {
    struct SwishResidual {
        input x: [B, 8];
        target t: [B, 8];
        let h = linear(x, 8);
        let s = h * sigmoid(h);
        let r = relu(linear(s, 8) + s);
        output r;
        loss bce_with_logits(r, t);
    }
}

#[test]
fn derived_swish_residual_fan_out_and_bce() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = SwishResidual::<f64>::new(&mut rng);
    let x = random(&mut rng, (4, 8), -1.5, 1.5);
    let t = random(&mut rng, (4, 8), 0.0, 1.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// The regression losses, each against the target and against a second head computed by
    /// the model (whose gradient flows through both arguments); `beta = 0` is `l1`.
    struct RobustRegression {
        input x: [B, 6];
        target t: [B, 3];
        let h = tanh(linear(x, 5));
        let pred = linear(h, 3);
        let other = linear(h, 3);
        output pred;
        loss l1(pred, t) + smooth_l1(pred, t, beta = 0.4) + huber(pred, t, delta = 0.7)
            + 0.5 * huber(other, pred) + smooth_l1(pred, other) + l1(other, t)
            + smooth_l1(other, t, beta = 0);
    }
}

#[test]
fn regression_losses_in_both_arguments() {
    let mut rng = StdRng::seed_from_u64(31);
    let mut model = RobustRegression::<f64>::new(&mut rng);
    let x = random(&mut rng, (6, 6), -1.5, 1.5);
    let t = random(&mut rng, (6, 3), -2.0, 2.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// `bce` on probabilities against the target, and against a second head's probabilities
    /// (a soft target the model computes, whose gradient PyTorch's `binary_cross_entropy`
    /// gives as well), with per-column weights.
    struct ProbabilityBce {
        input x: [B, 6];
        target t: [B, 3];
        let h = tanh(linear(x, 5));
        let p = sigmoid(linear(h, 3));
        let q = sigmoid(linear(h, 3));
        output p;
        loss bce(p, t, weight = (1.0, 0.5, 2.0)) + 0.5 * bce(p, q);
    }
}

/// Rows of class probabilities on the last axis, none below about 0.05 / 4 (the KL
/// divergence's target gradient is NaN at 0, as PyTorch's).
fn probabilities(rng: &mut StdRng, shape: (usize, usize, usize)) -> Array3<f64> {
    let mut t = random(rng, shape, 0.05, 1.0);
    for mut row in t.rows_mut() {
        let total = row.sum();
        row /= total;
    }
    t
}

kiln::model! {
    /// `kl_div` as distillation writes it: a student's log-probabilities against soft targets
    /// (`batchmean`), against a teacher head's probabilities the model computes (both
    /// arguments differentiable, PyTorch's gradients; softmax outputs are never 0, where the
    /// target's gradient is NaN), and against its log-probabilities (`log_target`, `sum`).
    struct Distillation {
        input x: [B, T, 6];
        target t: [B, T, 4];
        let h = tanh(linear(x, 5));
        let student = log_softmax(linear(h, 4));
        let teacher = linear(h, 4);
        output student;
        loss kl_div(student, t, reduction = batchmean)
            + 0.5 * kl_div(student, softmax(teacher))
            + 0.25 * kl_div(student, log_softmax(teacher), reduction = sum, log_target = true);
    }
}

kiln::model! {
    /// `cross_entropy` against class probabilities over a sequence: given soft targets with
    /// weights and smoothing, and a teacher head's softmax the model computes (both arguments
    /// differentiable).
    struct SoftTargets {
        input x: [B, T, 6];
        target t: [B, T, 4];
        let h = tanh(linear(x, 5));
        let student = linear(h, 4);
        let teacher = linear(h, 4);
        output student;
        loss cross_entropy(student, t, weight = (1.0, 2.0, 0.5, 1.0), label_smoothing = 0.2)
            + 0.5 * cross_entropy(student, softmax(teacher));
    }
}

#[test]
fn cross_entropy_against_probabilities_in_both_arguments() {
    let mut rng = StdRng::seed_from_u64(35);
    let mut model = SoftTargets::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 2, 6), -1.5, 1.5);
    let t = probabilities(&mut rng, (3, 2, 4));
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// `cross_entropy` against per-pixel class probabilities on image logits (classes on
    /// axis 1): given soft label maps with weights and smoothing, and a teacher convolution's
    /// softmax over the classes (both arguments differentiable).
    struct SoftSegmentation {
        input x: [B, 2, 5, 4];
        target t: [B, 3, 5, 4];
        let h = tanh(conv2d(x, 4, kernel = 3, padding = 1));
        let student = conv2d(h, 3, kernel = 1);
        let teacher = conv2d(h, 3, kernel = 3, padding = 1);
        output student;
        loss cross_entropy(student, t, weight = (1.0, 2.0, 0.5), label_smoothing = 0.1)
            + 0.5 * cross_entropy(student, softmax(teacher, axis = 1));
    }
}

#[test]
fn cross_entropy_against_pixel_probabilities_in_both_arguments() {
    let mut rng = StdRng::seed_from_u64(36);
    let mut model = SoftSegmentation::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 2, 5, 4), -1.5, 1.5);
    // Each pixel's distribution over the 3 classes of axis 1.
    let mut t = random(&mut rng, (2, 3, 5, 4), 0.05, 1.0);
    let total = t.sum_axis(Axis(1)).insert_axis(Axis(1));
    t /= &total;
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

#[test]
fn kl_div_in_both_arguments_and_every_reduction() {
    let mut rng = StdRng::seed_from_u64(34);
    let mut model = Distillation::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 2, 6), -1.5, 1.5);
    // Soft targets: each position's distribution over the 4 classes.
    let t = probabilities(&mut rng, (3, 2, 4));
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

#[test]
fn bce_on_probabilities_in_both_arguments() {
    let mut rng = StdRng::seed_from_u64(33);
    let mut model = ProbabilityBce::<f64>::new(&mut rng);
    let x = random(&mut rng, (6, 6), -1.5, 1.5);
    let t = random(&mut rng, (6, 3), 0.0, 1.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    /// PyTorch's MNIST example's loss: `nll` of `log_softmax`, with class weights and an
    /// ignored label.
    struct LogLikelihood {
        input x: [B, 6];
        target y: [B] classes 4;
        let h = tanh(linear(x, 5));
        let log_probs = log_softmax(linear(h, 4));
        output log_probs;
        loss nll(log_probs, y, weight = (1.0, 3.0, 0.5, 2.0), ignore_index = 2);
    }
}

#[test]
fn nll_of_log_softmax_with_weights_and_an_ignored_label() {
    let mut rng = StdRng::seed_from_u64(37);
    let mut model = LogLikelihood::<f64>::new(&mut rng);
    let x = random(&mut rng, (7, 6), -1.5, 1.5);
    let mut y = labels(&mut rng, 7, 4);
    y[1] = 2;
    y[5] = 2;
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
    // The output is log-probabilities: each row's exponentials sum to 1.
    let log_probs = model.forward(x.view()).unwrap();
    for row in log_probs.rows() {
        assert!((row.iter().map(|v| v.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

kiln::model! {
    /// PReLU's learned slopes: one per channel of `[B, C, L]`, and one for every element.
    struct Slopes {
        input x: [B, 3, 5];
        target t: [B, 2];
        let c = conv1d(x, 4, kernel = 3, padding = 1);
        let a = prelu(c, num_parameters = 4, init = -0.3);
        let h = linear(flatten(a), 6);
        let b = prelu(h);
        let pred = linear(b, 2);
        output pred;
        loss mse(pred, t);
    }
}

#[test]
fn prelu_slopes_per_channel_and_shared() {
    let mut rng = StdRng::seed_from_u64(41);
    let mut model = Slopes::<f64>::new(&mut rng);
    // Slopes away from their starting values, so that each channel's differs.
    model
        .a
        .weight
        .iter_mut()
        .enumerate()
        .for_each(|(c, a)| *a += 0.2 * c as f64);
    model.b.weight[0] = 0.6;
    let x = random(&mut rng, (3, 3, 5), -1.5, 1.5);
    let t = random(&mut rng, (3, 2), -1.0, 1.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(t.view().into_dyn()),
    );
}

kiln::model! {
    struct Softmaxes {
        input x: [B, 4];
        target r: [B, 5];
        let logits = linear(x, 5);
        let p = softmax(logits);
        let lp = log_softmax(logits);
        output p, lp;
        loss sum(p * r) + mean(lp * r) * 2.0;
    }
}

#[test]
fn softmax_log_softmax_sum_mean_and_scalar_arithmetic() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut model = Softmaxes::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 4), -1.0, 1.0);
    let r = random(&mut rng, (3, 5), -1.0, 1.0);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Values(r.view().into_dyn()),
    );
}

kiln::model! {
    /// Softmaxes over other axes than the last: the classes (axis 1) of [B, C, H, W] maps,
    /// axis 1 of a [B, C, L] value (written from the front and from the back), and axis 0 of
    /// [B, F] features (each feature's distribution over the batch).
    struct AxisSoftmaxes {
        input x: [B, 2, 4, 3];
        input v: [B, 5];
        target t: [B, 3];
        let c = conv2d(x, 3, kernel = 1);
        let p = softmax(c, axis = 1);
        let lp = log_softmax(c, axis = -3);
        let s = reshape(tanh(c), (B, 3, 12));
        let q = softmax(s, axis = 1);
        let lq = log_softmax(s, axis = -2);
        let h = linear(v, 4);
        let hb = softmax(h, axis = 0);
        let lb = log_softmax(h, axis = 0);
        let f = concat(flatten(p * lp), flatten(q + 0.5 * lq), hb * lb + hb, axis = 1);
        let pred = linear(f, 3);
        output pred, p, lq, lb;
        loss mse(pred, t);
    }
}

#[test]
fn softmax_and_log_softmax_over_middle_and_batch_axes() {
    let mut rng = StdRng::seed_from_u64(16);
    let mut model = AxisSoftmaxes::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 2, 4, 3), -2.0, 2.0);
    let v = random(&mut rng, (3, 5), -2.0, 2.0);
    let t = random(&mut rng, (3, 3), -1.0, 1.0);
    let (_, p, lq, lb) = model.forward(x.view(), v.view()).unwrap();
    // Each distribution sums to 1 along its own axis.
    for total in p.sum_axis(kiln::ndarray::Axis(1)) {
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
    for total in lq.exp().sum_axis(kiln::ndarray::Axis(1)) {
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
    for total in lb.exp().sum_axis(kiln::ndarray::Axis(0)) {
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(
            x.view(),
            v.view(),
            t.view(),
            &mut model.workspace(),
            &mut grads,
        )
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), v.view(), t.view(), &mut m.workspace())
            .unwrap()
    });
}

kiln::model! {
    /// No loss: the caller supplies d(loss)/d(output) to `backward`.
    struct TwoHeads {
        input x: [B, 3];
        let h = tanh(linear(x, 6));
        let a = linear(h, 2);
        let b = sigmoid(linear(h, 4));
        output a, b;
    }
}

#[test]
fn forward_train_and_backward_without_a_loss() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = TwoHeads::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 3), -1.0, 1.0);
    // The loss is sum(a * wa) + sum(b * wb), so its gradient w.r.t. the outputs is (wa, wb).
    let wa = random(&mut rng, (2, 2), -1.0, 1.0);
    let wb = random(&mut rng, (2, 4), -1.0, 1.0);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    model.forward_train(x.view(), &mut ws).unwrap();
    model
        .backward(&mut ws, wa.view(), wb.view(), &mut grads)
        .unwrap();
    check(&model, &grads, |m| {
        let (a, b) = m.forward(x.view()).unwrap();
        (&a * &wa).sum() + (&b * &wb).sum()
    });
}

kiln::model! {
    /// Only one head reaches the loss: the other head's layer gets zero gradients.
    struct Unreached {
        input x: [B, 3];
        target t: [B, 2];
        let h = linear(x, 4);
        let used = linear(h, 2);
        let spare = linear(h, 5);
        output used, spare;
        loss mse(used, t);
    }
}

#[test]
fn layers_the_loss_does_not_reach_get_zero_gradients() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut model = Unreached::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 3), -1.0, 1.0);
    let t = random(&mut rng, (2, 2), -1.0, 1.0);
    let mut grads = model.zero_grads();
    grads.spare.weight.fill(7.0);
    model
        .loss_and_grad(x.view(), t.view(), &mut model.workspace(), &mut grads)
        .unwrap();
    assert!(grads.spare.weight.iter().all(|&g| g == 0.0));
    check(&model, &grads, |m| {
        m.loss(x.view(), t.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    struct SmallCnn {
        input x: [B, 2, 7, 6];
        target y: [B] classes 3;
        let c1 = relu(conv2d(x, 3, kernel = (3, 2), stride = (2, 1), padding = (1, 0)));
        let p1 = max_pool2d(c1, 2);
        let c2 = tanh(conv2d(p1, 4, kernel = 2, padding = 1, bias = false));
        let p2 = avg_pool2d(c2, kernel = (2, 1), stride = 1);
        let logits = linear(flatten(p2), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn conv_pooling_flatten() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = SmallCnn::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 2, 7, 6), -1.0, 1.0);
    let y = labels(&mut rng, 2, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    /// Grouped, dilated and depthwise convolutions, then transposed convolutions (stride 2
    /// with output padding and groups; dilation 2 with an output padding reaching the
    /// stride), each feeding the next so every input gradient is exercised.
    struct VisionConvs {
        input x: [B, 4, 7, 6];
        target y: [B] classes 3;
        let g1 = tanh(conv2d(x, 6, kernel = (3, 2), padding = 1, dilation = (2, 1), groups = 2));
        let dw = tanh(conv2d(g1, 6, kernel = 3, stride = (2, 1), padding = 1, groups = 6));
        let up = tanh(conv_transpose2d(dw, 4, kernel = 3, stride = 2, padding = 1, output_padding = 1, groups = 2));
        let up2 = conv_transpose2d(up, 2, kernel = (2, 3), padding = (0, 1), output_padding = 1, dilation = 2, bias = false);
        let logits = linear(flatten(up2), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn grouped_dilated_depthwise_and_transposed_convolutions() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = VisionConvs::<f64>::new(&mut rng);
    assert_eq!(model.g1.weight.dim(), (6, 2, 3, 2));
    assert_eq!(model.dw.weight.dim(), (6, 1, 3, 3));
    assert_eq!(model.up.weight.dim(), (6, 2, 3, 3));
    assert_eq!(model.up2.weight.dim(), (4, 2, 2, 3));
    let x = random(&mut rng, (2, 4, 7, 6), -1.0, 1.0);
    let y = labels(&mut rng, 2, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    /// Values named like the generated code's own locals (`geometry`, `i`, `n`, `t0`).
    struct LocalNames {
        input geometry: [B, 1, 6, 6];
        target y: [B] classes 2;
        let i = relu(conv2d(geometry, 2, kernel = 3));
        let n = max_pool2d(i, 2);
        let t0 = flatten(n);
        let t1 = tanh(t0) * tanh(t0) + t0;
        let logits = linear(t1, 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn values_may_share_names_with_generated_locals() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut model = LocalNames::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 1, 6, 6), -1.0, 1.0);
    let y = labels(&mut rng, 3, 2);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    struct Norms {
        input x: [B, 3, 4, 4];
        input v: [B, 5];
        target t: [B, 4];
        let c = conv2d(x, 2, kernel = 3, padding = 1, bias = false);
        let n = relu(batch_norm(c));
        let flat = reshape(n, (B, 32));
        let w = linear(v, 6, bias = false);
        let wn = batch_norm(w, momentum = 0.3);
        let joined = concat(flat, wn, axis = 1);
        let h = linear(joined, 5);
        let hn = tanh(layer_norm(h));
        let pred = linear(hn, 4);
        output pred;
        loss mse(pred, t);
    }
}

/// Batch norm's gradient is the training-mode one (batch statistics), so the finite
/// differences run training-mode losses on copies of the model.
#[test]
fn batch_norm_layer_norm_concat_reshape() {
    let mut rng = StdRng::seed_from_u64(8);
    let model = Norms::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 3, 4, 4), -1.0, 1.0);
    let v = random(&mut rng, (3, 5), -1.0, 1.0);
    let t = random(&mut rng, (3, 4), -1.0, 1.0);
    let after = check_training_mode(&model, &[floats(&x), floats(&v), floats(&t)]);
    assert_ne!(
        after.n.running_mean, model.n.running_mean,
        "training updates running stats"
    );
}

kiln::model! {
    /// Group norms on [B, C, H, W], [B, C, L] (L symbolic) and [B, C], each with one group,
    /// one group per channel, and a count in between.
    struct GroupNorms {
        input x: [B, 4, 5, 3];
        input s: [B, L, 3];
        input v: [B, 5];
        target t: [B, 3];
        let c = conv2d(x, 6, kernel = 1);
        let g1 = group_norm(c, groups = 3);
        let g2 = group_norm(tanh(g1), groups = 6, eps = 1e-3);
        let g3 = group_norm(g2 * c, groups = 1);
        let p = transpose(linear(s, 6), 1, 2);
        let q1 = group_norm(p, groups = 2);
        let q2 = group_norm(tanh(q1) + p, groups = 6);
        let q3 = group_norm(q2 * q1, groups = 1);
        let h = linear(v, 4);
        let h1 = group_norm(h, groups = 2);
        let h2 = group_norm(tanh(h1) * h, groups = 4);
        let h3 = group_norm(h + h2, groups = 1);
        let f = concat(flatten(adaptive_avg_pool2d(g3, 1)), mean(tanh(q3), axis = 2), h3 * h1, axis = 1);
        let pred = linear(f, 3);
        output pred, g1, q1;
        loss mse(pred, t);
    }
}

#[test]
fn group_norm_on_images_sequences_and_features() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut model = GroupNorms::<f64>::new(&mut rng);
    // Weights away from 1 and biases away from 0, so that both take part in every gradient.
    let norms = ["g1", "g2", "g3", "q1", "q2", "q3", "h1", "h2", "h3"];
    perturb_affine(&mut model, &mut rng, |layer| norms.contains(&layer));
    assert_eq!(model.g1.weight.len(), 6);
    let x = random(&mut rng, (3, 4, 5, 3), -2.0, 2.0);
    let s = random(&mut rng, (3, 7, 3), -2.0, 2.0);
    let v = random(&mut rng, (3, 5), -2.0, 2.0);
    let t = random(&mut rng, (3, 3), -1.0, 1.0);
    let (_, g1, q1) = model.forward(x.view(), s.view(), v.view()).unwrap();
    assert_eq!(g1.dim(), (3, 6, 5, 3));
    assert_eq!(q1.dim(), (3, 6, 7));
    // Undo the affine step: each (sample, group) is then normalised to mean 0.
    let (w, b) = (&model.q1.weight, &model.q1.bias);
    for sample in q1.outer_iter() {
        for group in 0..2 {
            let total: f64 = (group * 3..group * 3 + 3)
                .flat_map(|ch| {
                    sample
                        .row(ch)
                        .iter()
                        .map(move |&y| (y - b[ch]) / w[ch])
                        .collect::<Vec<_>>()
                })
                .sum();
            assert!(total.abs() < 1e-10, "{total}");
        }
    }
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(
            x.view(),
            s.view(),
            v.view(),
            t.view(),
            &mut model.workspace(),
            &mut grads,
        )
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), s.view(), v.view(), t.view(), &mut m.workspace())
            .unwrap()
    });
}

kiln::model! {
    /// Instance norms (without and with the affine map) and a group norm without it, on
    /// [B, C, H, W] and [B, C, L] (L symbolic): the gradients reach the layers before them
    /// through the normalisation alone.
    struct InstanceNorms {
        input x: [B, 2, 4, 3];
        input s: [B, L, 3];
        target t: [B, 3];
        let c = conv2d(x, 4, kernel = 1);
        let i1 = instance_norm(c);
        let i2 = instance_norm(tanh(i1) * c, affine = true, eps = 1e-3);
        let p = transpose(linear(s, 4), 1, 2);
        let q1 = group_norm(p, groups = 2, affine = false);
        let q2 = instance_norm(tanh(q1) + p);
        let f = concat(flatten(adaptive_avg_pool2d(i2 * i1, 1)), mean(q2 * q1, axis = 2), axis = 1);
        let pred = linear(f, 3);
        output pred, i1, q1;
        loss mse(pred, t);
    }
}

#[test]
fn instance_norm_and_group_norm_without_affine_map() {
    use kiln::Model;
    let mut rng = StdRng::seed_from_u64(29);
    let mut model = InstanceNorms::<f64>::new(&mut rng);
    perturb_affine(&mut model, &mut rng, |layer| layer == "i2");
    // Only `i2` (and the convolution and the linear layers) hold parameters.
    let mut names = Vec::new();
    model.visit_params(&mut |name, _| names.push(name));
    assert_eq!(
        names,
        [
            "c.weight",
            "c.bias",
            "i2.weight",
            "i2.bias",
            "p.weight",
            "p.bias",
            "pred.weight",
            "pred.bias"
        ]
    );
    let x = random(&mut rng, (3, 2, 4, 3), -2.0, 2.0);
    let s = random(&mut rng, (3, 5, 3), -2.0, 2.0);
    let t = random(&mut rng, (3, 3), -1.0, 1.0);
    let (_, i1, q1) = model.forward(x.view(), s.view()).unwrap();
    // Each (sample, channel) of `i1` has mean 0 and variance 1 (up to eps); each (sample,
    // pair of channels) of `q1` mean 0.
    for sample in i1.outer_iter() {
        for channel in sample.outer_iter() {
            let n = channel.len() as f64;
            let mean = channel.sum() / n;
            let var = channel.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            assert!(
                mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }
    for sample in q1.outer_iter() {
        for group in 0..2 {
            let total: f64 = (group * 2..group * 2 + 2)
                .map(|ch| sample.row(ch).sum())
                .sum();
            assert!(total.abs() < 1e-10, "{total}");
        }
    }
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(
            x.view(),
            s.view(),
            t.view(),
            &mut model.workspace(),
            &mut grads,
        )
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), s.view(), t.view(), &mut m.workspace())
            .unwrap()
    });
}

kiln::model! {
    struct Dropped {
        input x: [B, 6];
        target t: [B, 2];
        let h = dropout(relu(linear(x, 16)), 0.5);
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, t);
    }
}

/// Dropout's mask is a function of the workspace's seed: the same seed gives the same mask, so
/// the training-mode loss is a deterministic function of the parameters.
#[test]
fn dropout_with_a_fixed_seed() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut model = Dropped::<f64>::new(&mut rng);
    let x = random(&mut rng, (4, 6), -1.0, 1.0);
    let t = random(&mut rng, (4, 2), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    ws.seed(42);
    model
        .loss_and_grad(x.view(), t.view(), &mut ws, &mut grads)
        .unwrap();
    let h = ws.pred().unwrap().to_owned();
    let inference = model.forward(x.view()).unwrap();
    assert_ne!(h, inference, "dropout is active in training only");
    check(&model, &grads, |m| {
        let mut copy = m.clone();
        let mut scratch = copy.zero_grads();
        let mut ws = copy.workspace();
        ws.seed(42);
        copy.loss_and_grad(x.view(), t.view(), &mut ws, &mut scratch)
            .unwrap()
    });
}

kiln::model! {
    /// Padded, ceil-mode pooling (both divisor rules) and adaptive pooling.
    struct PaddedPooling {
        input x: [B, 2, 7, 6];
        target y: [B] classes 3;
        let c = tanh(conv2d(x, 3, kernel = 3, padding = 1));
        let m = max_pool2d(c, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let a = avg_pool2d(m, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let e = avg_pool2d(c, kernel = (3, 2), stride = 2, padding = (1, 1), ceil_mode = true, count_include_pad = false);
        let g = adaptive_avg_pool2d(e, (3, 2));
        let h = adaptive_avg_pool2d(c, 1);
        let f = concat(flatten(a), flatten(g), flatten(h), axis = 1);
        let logits = linear(f, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn padded_ceil_and_adaptive_pooling() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = PaddedPooling::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 2, 7, 6), -1.0, 1.0);
    let y = labels(&mut rng, 2, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    /// A small segmenter: downsampling, both upsampling modes, and per-pixel cross-entropy
    /// with an ignored label.
    struct Segmenter {
        input x: [B, 2, 5, 6];
        target y: [B, 5, 6] classes 4;
        let c = tanh(conv2d(x, 3, kernel = 3, padding = 1));
        let p = max_pool2d(c, 2, ceil_mode = true);
        let u = upsample(p, size = (5, 6), mode = bilinear);
        let q = upsample(adaptive_avg_pool2d(c, (5, 3)), scale = (1, 2));
        let d = upsample(avg_pool2d(c, kernel = 2, stride = 1), scale = 2, mode = bilinear);
        let s = adaptive_avg_pool2d(d, (5, 6));
        let logits = conv2d(u + q * s + c, 4, kernel = 1);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 0);
    }
}

#[test]
fn upsampling_and_per_pixel_cross_entropy() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut model = Segmenter::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 2, 5, 6), -1.0, 1.0);
    let y = Array::from_shape_simple_fn((2, 5, 6), || rng.random_range(0..4usize));
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// `s` is computed in place of `a` (which dies there) and is read by the backward pass;
    /// the fused `r` (whose derivative reads `s`) must not then be computed in place of `s`.
    struct InPlaceChain {
        input x: [B, 2];
        target y: [B] classes 2;
        let a = linear(x, 2);
        let b = linear(x, 2);
        let s = a + b;
        let r = relu(softplus(s)) * s;
        let logits = linear(r, 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn a_kept_value_computed_in_place_is_not_overwritten_in_place() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut model = InPlaceChain::<f64>::new(&mut rng);
    let x = random(&mut rng, (4, 2), -1.0, 1.0);
    let y = labels(&mut rng, 4, 2);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

// Cross-entropy's `label_smoothing` and `weight` options, in each layout: rows `[B, C]`,
// sequences `[B, T, C]` and images `[B, C, H, W]`, with labels left out by `ignore_index`
// (a class, and a label past the classes).

kiln::model! {
    struct CeSmoothed {
        input x: [B, 5];
        target y: [B] classes 4;
        let h = tanh(linear(x, 6));
        let logits = linear(h, 4);
        output logits;
        loss cross_entropy(logits, y, label_smoothing = 0.2);
    }
}

kiln::model! {
    struct CeWeighted {
        input x: [B, 5];
        target y: [B] classes 4;
        let h = tanh(linear(x, 6));
        let logits = linear(h, 4);
        output logits;
        loss cross_entropy(logits, y, weight = (1.0, 2.5, 0.5, 0), ignore_index = 9);
    }
}

kiln::model! {
    struct CeSmoothedWeighted {
        input x: [B, 5];
        target y: [B] classes 4;
        let h = tanh(linear(x, 6));
        let logits = linear(h, 4);
        output logits;
        loss cross_entropy(logits, y, label_smoothing = 0.3, weight = (0.2, 1, 3.0, 1.5));
    }
}

/// Rows: smoothing, weights (a class of weight 0, rows ignored with a label past the classes),
/// and both.
#[test]
fn cross_entropy_smoothing_and_weights_on_rows() {
    let mut rng = StdRng::seed_from_u64(21);
    let x = random(&mut rng, (6, 5), -1.0, 1.0);
    let mut y = labels(&mut rng, 6, 4);
    let target = y.clone();
    let mut model = CeSmoothed::<f64>::new(&mut rng);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(target.view()),
    );
    let mut model = CeSmoothedWeighted::<f64>::new(&mut rng);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(target.view()),
    );
    y[1] = 9;
    y[4] = 9;
    y[2] = 3;
    let mut model = CeWeighted::<f64>::new(&mut rng);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    struct CeSeqSmoothed {
        input x: [B, T, 3];
        target y: [B, T] classes 5;
        let logits = linear(x, 5);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 0, label_smoothing = 0.1);
    }
}

kiln::model! {
    struct CeSeqWeighted {
        input x: [B, T, 3];
        target y: [B, T] classes 5;
        let logits = linear(x, 5);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 0, weight = (7.0, 1.0, 2.0, 0.5, 1.25));
    }
}

kiln::model! {
    struct CeSeqSmoothedWeighted {
        input x: [B, T, 3];
        target y: [B, T] classes 5;
        let logits = linear(x, 5);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 0, label_smoothing = 0.25, weight = (7.0, 1.0, 2.0, 0.5, 1.25));
    }
}

/// Sequences padded with label 0 (`ignore_index = 0`, a class whose weight then never counts).
#[test]
fn cross_entropy_smoothing_and_weights_on_sequences() {
    let mut rng = StdRng::seed_from_u64(22);
    let x = random(&mut rng, (2, 4, 3), -1.0, 1.0);
    let mut y = Array::from_shape_simple_fn((2, 4), || rng.random_range(1..5usize));
    y[[0, 3]] = 0;
    y[[1, 2]] = 0;
    y[[1, 3]] = 0;
    macro_rules! check_model {
        ($Model:ident) => {
            let mut model = $Model::<f64>::new(&mut rng);
            let mut grads = model.zero_grads();
            model
                .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
                .unwrap();
            check(&model, &grads, |m| {
                m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
            });
        };
    }
    check_model!(CeSeqSmoothed);
    check_model!(CeSeqWeighted);
    check_model!(CeSeqSmoothedWeighted);
}

kiln::model! {
    struct CePixelsSmoothed {
        input x: [B, 2, 3, 4];
        target y: [B, 3, 4] classes 3;
        let logits = conv2d(x, 3, kernel = 3, padding = 1);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 255, label_smoothing = 0.15);
    }
}

kiln::model! {
    struct CePixelsWeighted {
        input x: [B, 2, 3, 4];
        target y: [B, 3, 4] classes 3;
        let logits = conv2d(x, 3, kernel = 3, padding = 1);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 255, weight = (0.5, 2.0, 1.0));
    }
}

kiln::model! {
    /// `nll` per pixel, of log-probabilities over the class axis.
    struct NllPixels {
        input x: [B, 2, 3, 4];
        target y: [B, 3, 4] classes 3;
        let logits = conv2d(x, 3, kernel = 3, padding = 1);
        output logits;
        loss nll(log_softmax(logits, axis = 1), y, ignore_index = 255, weight = (0.5, 2.0, 1.0));
    }
}

kiln::model! {
    struct CePixelsSmoothedWeighted {
        input x: [B, 2, 3, 4];
        target y: [B, 3, 4] classes 3;
        let logits = conv2d(x, 3, kernel = 3, padding = 1);
        output logits;
        loss cross_entropy(logits, y, ignore_index = 255, weight = (0.5, 2.0, 1.0), label_smoothing = 0.4);
    }
}

/// Images: per-pixel cross-entropy (and `nll` of `log_softmax`) with void pixels (label 255,
/// past the classes).
#[test]
fn cross_entropy_smoothing_and_weights_on_pixels() {
    let mut rng = StdRng::seed_from_u64(23);
    let x = random(&mut rng, (2, 2, 3, 4), -1.0, 1.0);
    let mut y = Array::from_shape_simple_fn((2, 3, 4), || rng.random_range(0..3usize));
    y[[0, 0, 1]] = 255;
    y[[0, 2, 3]] = 255;
    y[[1, 1, 0]] = 255;
    macro_rules! check_model {
        ($Model:ident) => {
            let mut model = $Model::<f64>::new(&mut rng);
            let mut grads = model.zero_grads();
            model
                .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
                .unwrap();
            check(&model, &grads, |m| {
                m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
            });
        };
    }
    check_model!(CePixelsSmoothed);
    check_model!(CePixelsWeighted);
    check_model!(CePixelsSmoothedWeighted);
    check_model!(NllPixels);
}

kiln::model! {
    /// 1-d convolutions on a sequence batch: strided, padded, dilated and grouped; depthwise
    /// with `padding = same`; `padding = valid` without a bias; a pointwise (kernel 1) one;
    /// and a stride-1 dilated `same` one straight from the input (the implicit-GEMM path),
    /// reduced by a max over the length.
    struct Conv1dLayers {
        input x: [B, 4, 11];
        target y: [B] classes 3;
        let strided = tanh(conv1d(x, 6, kernel = 3, stride = 2, padding = 1, dilation = 2, groups = 2));
        let depthwise = tanh(conv1d(strided, 6, kernel = 3, padding = same, groups = 6));
        let narrow = conv1d(depthwise, 4, kernel = 2, padding = valid, bias = false);
        let point = conv1d(narrow, 3, kernel = 1);
        let wide = conv1d(x, 3, kernel = 3, padding = same, dilation = 2);
        let pooled = max(wide, axis = 2);
        let logits = linear(concat(flatten(point), pooled, axis = 1), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn conv1d_strided_dilated_grouped_depthwise_same_and_valid() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut model = Conv1dLayers::<f64>::new(&mut rng);
    assert_eq!(model.strided.weight.dim(), (6, 2, 3));
    assert_eq!(model.depthwise.weight.dim(), (6, 1, 3));
    assert!(model.narrow.bias.is_none());
    assert_eq!(model.point.weight.dim(), (3, 4, 1));
    assert_eq!(model.wide.weight.dim(), (3, 4, 3));
    let x = random(&mut rng, (3, 4, 11), -1.0, 1.0);
    let y = labels(&mut rng, 3, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    /// `padding = same` where a dilated kernel's span is odd, so that the extra row or column
    /// goes after the input, as PyTorch puts it: on the input itself (no input gradient), then
    /// on a value that also feeds a second branch (its gradient accumulates), through the
    /// implicit-GEMM, grouped and depthwise paths, and a 1-d one.
    struct EvenSamePadding {
        input x: [B, 3, 6, 5];
        target y: [B] classes 3;
        let first = tanh(conv2d(x, 4, kernel = (2, 4), padding = same));
        let grouped = conv2d(first, 4, kernel = 2, dilation = (1, 3), padding = same, groups = 2);
        let depthwise = conv2d(first, 4, kernel = (3, 2), padding = same, groups = 4, bias = false);
        let both = tanh(grouped + depthwise);
        let rows = mean(both, axis = 2);
        let seq = conv1d(rows, 2, kernel = 4, padding = same);
        let logits = linear(flatten(seq), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn conv_same_padding_with_an_odd_span() {
    let mut rng = StdRng::seed_from_u64(29);
    let mut model = EvenSamePadding::<f64>::new(&mut rng);
    assert_eq!(model.first.weight.dim(), (4, 3, 2, 4));
    for batch in [3, 1] {
        let x = random(&mut rng, (batch, 3, 6, 5), -1.0, 1.0);
        let y = labels(&mut rng, batch, 3);
        check_step(
            &mut model,
            x.view().into_dyn(),
            TargetView::Labels(y.view()),
        );
    }
}

kiln::model! {
    /// 1-d convolutions with an even `padding = same` on a symbolic length: the length stays
    /// `T`, and the padded copy is sized for each batch.
    struct EvenSameSymbolicLength {
        input x: [B, 3, T];
        target y: [B] classes 2;
        let even = tanh(conv1d(x, 4, kernel = 4, padding = same));
        let dilated = conv1d(even, 4, kernel = 2, dilation = 3, padding = same, groups = 4);
        let logits = linear(max(dilated, axis = 2), 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn conv1d_even_same_padding_keeps_a_symbolic_length() {
    let mut rng = StdRng::seed_from_u64(31);
    let mut model = EvenSameSymbolicLength::<f64>::new(&mut rng);
    for (batch, length) in [(2, 9), (3, 4), (1, 13)] {
        let x = random(&mut rng, (batch, 3, length), -1.0, 1.0);
        let y = labels(&mut rng, batch, 2);
        check_step(
            &mut model,
            x.view().into_dyn(),
            TargetView::Labels(y.view()),
        );
    }
}

kiln::model! {
    /// A causal (dilated, WaveNet-style) stack on a symbolic length: `padding = causal` pads
    /// the whole span before the sequence, so the length stays `T` and no output sees a later
    /// position; and a strided causal convolution on a fixed length.
    struct CausalStack {
        input x: [B, 3, T];
        input fixed: [B, 2, 9];
        target y: [B, 4, T];
        target z: [B, 3, 5];
        let c1 = tanh(conv1d(x, 4, kernel = 3, padding = causal));
        let c2 = conv1d(c1, 4, kernel = 2, dilation = 4, padding = causal, groups = 2);
        let strided = conv1d(fixed, 3, kernel = 4, stride = 2, padding = causal);
        output c2, strided;
        loss mse(c2, y) + mse(strided, z);
    }
}

#[test]
fn conv1d_causal_padding_sees_no_later_position() {
    let mut rng = StdRng::seed_from_u64(37);
    let mut model = CausalStack::<f64>::new(&mut rng);
    for (batch, length) in [(2, 7), (1, 3), (3, 11)] {
        let x = random(&mut rng, (batch, 3, length), -1.0, 1.0);
        let fixed = random(&mut rng, (batch, 2, 9), -1.0, 1.0);
        let y = random(&mut rng, (batch, 4, length), -1.0, 1.0);
        let z = random(&mut rng, (batch, 3, 5), -1.0, 1.0);
        let mut grads = model.zero_grads();
        let mut ws = model.workspace();
        model
            .loss_and_grad(
                x.view(),
                fixed.view(),
                y.view(),
                z.view(),
                &mut ws,
                &mut grads,
            )
            .unwrap();
        check(&model, &grads, |m| {
            m.loss(
                x.view(),
                fixed.view(),
                y.view(),
                z.view(),
                &mut m.workspace(),
            )
            .unwrap()
        });
        // A change at position t moves outputs from t on, never before.
        let t = length / 2;
        let mut moved = x.clone();
        moved
            .index_axis_mut(kiln::ndarray::Axis(2), t)
            .mapv_inplace(|v| v + 0.5);
        let (before, _) = model.forward(x.view(), fixed.view()).unwrap();
        let (after, _) = model.forward(moved.view(), fixed.view()).unwrap();
        for p in 0..length {
            let change = (&before.index_axis(kiln::ndarray::Axis(2), p)
                - &after.index_axis(kiln::ndarray::Axis(2), p))
                .fold(0.0f64, |m, d| m.max(d.abs()));
            if p < t {
                assert_eq!(change, 0.0, "position {p} saw position {t}");
            } else if p == t {
                assert!(change > 0.0, "position {t} did not see itself");
            }
        }
    }
}

kiln::model! {
    /// Batch norm on sequence batches `[B, C, L]` (BatchNorm1d on 3-D input): after a 1-d
    /// convolution, and straight on an input of symbolic length.
    struct SequenceNorms {
        input x: [B, 3, 9];
        input s: [B, 2, T];
        target t: [B, 2];
        let c = conv1d(x, 4, kernel = 3, padding = 1, bias = false);
        let n = relu(batch_norm(c));
        let pooled = mean(n, axis = 2);
        let sn = batch_norm(s, momentum = 0.3);
        let peak = max(tanh(sn), axis = 2);
        let pred = linear(concat(pooled, peak, axis = 1), 2);
        output pred;
        loss mse(pred, t);
    }
}

/// As for `Norms`: the training-mode gradients against central differences of training-mode
/// losses on copies of the model.
#[test]
fn batch_norm_on_sequences() {
    let mut rng = StdRng::seed_from_u64(22);
    let model = SequenceNorms::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 3, 9), -1.0, 1.0);
    let s = random(&mut rng, (3, 2, 5), -1.0, 1.0);
    let t = random(&mut rng, (3, 2), -1.0, 1.0);
    let after = check_training_mode(&model, &[floats(&x), floats(&s), floats(&t)]);
    assert_ne!(after.n.running_mean, model.n.running_mean);
    assert_ne!(after.sn.running_var, model.sn.running_var);
}

kiln::model! {
    /// Layer norms over two and three trailing axes, with and without bias and affine map, on
    /// images and on sequences of symbolic length (the normalized axes fixed).
    struct LayerNormDims {
        input x: [B, 2, 3, 4];
        input s: [B, T, 2, 3];
        target t: [B, 2];
        let c = conv2d(x, 3, kernel = 1);
        let n1 = layer_norm(c, dims = 3);
        let n2 = layer_norm(tanh(n1) * c, dims = 2, bias = false);
        let m = layer_norm(s, dims = 2, elementwise_affine = false);
        let f = concat(mean(n2 * n1, axis = (2, 3)), flatten(mean(tanh(m) * s, axis = 1)), axis = 1);
        let pred = linear(f, 2);
        output pred, n1, m;
        loss mse(pred, t);
    }
}

#[test]
fn layer_norm_over_several_axes() {
    let mut rng = StdRng::seed_from_u64(41);
    let mut model = LayerNormDims::<f64>::new(&mut rng);
    perturb_affine(&mut model, &mut rng, |layer| layer.starts_with('n'));
    assert_eq!(model.n1.weight.shape(), [3, 3, 4]);
    assert_eq!(model.n2.weight.shape(), [3, 4]);
    assert!(model.n2.bias.is_none());
    let x = random(&mut rng, (3, 2, 3, 4), -1.0, 1.0);
    let s = random(&mut rng, (3, 5, 2, 3), -1.0, 1.0);
    let t = random(&mut rng, (3, 2), -1.0, 1.0);
    let (_, _, m) = model.forward(x.view(), s.view()).unwrap();
    // Each (sample, position) of `m` is normalised over its 2 × 3 values.
    for sample in m.outer_iter() {
        for position in sample.outer_iter() {
            let mean = position.sum() / 6.0;
            assert!(mean.abs() < 1e-12, "{mean}");
        }
    }
    check_batch(&model, &[floats(&x), floats(&s), floats(&t)]);
}

kiln::model! {
    /// `pad` in its four modes, over one, two and three trailing axes (the channels too), a
    /// causal convolution's left padding among them, a circular pad as long as its axis.
    struct Pads {
        input x: [B, 2, 3, 4];
        input s: [B, 3, 5];
        target t: [B, 2];
        let r = pad(x, (2, 1, 1, 2), mode = reflect);
        let c = conv2d(r, 3, kernel = 2);
        let e = pad(tanh(c), (1, 0, 0, 2, 1, 1), mode = replicate);
        let q = pad(s, (2, 0), value = 0.25);
        let causal = conv1d(q, 2, kernel = 3);
        let w = pad(causal, (1, 5), mode = circular);
        let f = concat(flatten(adaptive_avg_pool2d(e * e, 1)), mean(tanh(w) * w, axis = 2), axis = 1);
        let pred = linear(f, 2);
        output pred, r, e, q, w;
        loss mse(pred, t);
    }
}

#[test]
fn pad_in_every_mode() {
    let mut rng = StdRng::seed_from_u64(37);
    let model = Pads::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 2, 3, 4), -1.0, 1.0);
    let s = random(&mut rng, (2, 3, 5), -1.0, 1.0);
    let t = random(&mut rng, (2, 2), -1.0, 1.0);
    let (_, r, e, q, w) = model.forward(x.view(), s.view()).unwrap();
    assert_eq!(r.dim(), (2, 2, 6, 7));
    // Reflection: row 0 of the padded image is input row 1; column 0 is input column 2.
    assert_eq!(r[[1, 1, 0, 0]], x[[1, 1, 1, 2]]);
    assert_eq!(e.dim(), (2, 5, 7, 7));
    assert_eq!(q.dim(), (2, 3, 7));
    assert_eq!(
        (q[[0, 2, 0]], q[[0, 2, 1]], q[[0, 2, 2]]),
        (0.25, 0.25, s[[0, 2, 0]])
    );
    // Circular: position 0 wraps to the last of the 5 values (padded position 5), and the
    // 5 after them start again from the first (padded position 1).
    assert_eq!(w.dim(), (2, 2, 11));
    assert_eq!(w[[1, 1, 0]], w[[1, 1, 5]]);
    assert_eq!(w[[1, 1, 6]], w[[1, 1, 1]]);
    assert_eq!(w[[1, 1, 10]], w[[1, 1, 5]]);
    check_batch(&model, &[floats(&x), floats(&s), floats(&t)]);
}

kiln::model! {
    /// Negative pads crop, then each mode pads from what is left: a centred crop over three
    /// axes, and crops beside reflect, circular and replicate padding, one of them of the
    /// accumulated value `h` used four times.
    struct Crops {
        input x: [B, 2, 6, 7];
        target t: [B, 2];
        let h = tanh(x * 1.5);
        let centre = pad(h, (-1, -2, -2, -1, 0, -1));
        let shifted = pad(h, (2, -3), mode = reflect);
        let wrapped = pad(h, (-2, 3, 1, -4), mode = circular);
        let replicated = pad(h, (-6, 1, 1, 0), mode = replicate);
        let f = concat(flatten(centre), flatten(shifted), flatten(wrapped), flatten(replicated), axis = 1);
        let pred = linear(f * f, 2);
        output pred, centre, wrapped;
        loss mse(pred, t);
    }
}

#[test]
fn negative_pads_crop_in_every_mode() {
    let mut rng = StdRng::seed_from_u64(47);
    let model = Crops::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 2, 6, 7), -1.0, 1.0);
    let t = random(&mut rng, (3, 2), -1.0, 1.0);
    let (_, centre, wrapped) = model.forward(x.view()).unwrap();
    let h = x.mapv(|v| (v * 1.5).tanh());
    assert_eq!(centre.dim(), (3, 1, 3, 4));
    assert_eq!(centre[[2, 0, 0, 0]], h[[2, 0, 2, 1]]);
    // The rows: one wrapped from the end of the 2 left after cropping 4, then those 2; the
    // columns: the 5 left after cropping 2, then 3 wrapped from their start.
    assert_eq!(wrapped.dim(), (3, 2, 3, 8));
    assert_eq!(wrapped[[0, 1, 0, 0]], h[[0, 1, 1, 2]]);
    assert_eq!(wrapped[[0, 1, 1, 5]], h[[0, 1, 0, 2]]);
    check_batch(&model, &[floats(&x), floats(&t)]);
}

kiln::model! {
    /// `narrow` and `select` along a symbolic time axis (from the front and from the end,
    /// checked at run time) and a fixed feature axis, each from one value used four times (its
    /// gradient accumulates).
    struct Windows {
        input x: [B, T, 4];
        target y: [B] classes 3;
        let h = tanh(linear(x, 6));
        let last = select(h, axis = 1, index = -1);
        let first = select(h, axis = 1, index = 0);
        let tail = narrow(h, axis = 1, start = -2, length = 2);
        let head = narrow(h, axis = 1, start = 1, length = 2);
        let feats = narrow(h, axis = -1, start = 2, length = 3);
        let f = concat(last * first, flatten(tail + head), mean(feats, axis = 1), axis = 1);
        let logits = linear(f, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn narrow_and_select_on_fixed_and_symbolic_axes() {
    let mut rng = StdRng::seed_from_u64(41);
    let mut model = Windows::<f64>::new(&mut rng);
    for (batch, length) in [(2, 3), (3, 6)] {
        let x = random(&mut rng, (batch, length, 4), -1.0, 1.0);
        let y = labels(&mut rng, batch, 3);
        check_step(
            &mut model,
            x.view().into_dyn(),
            TargetView::Labels(y.view()),
        );
    }
    // `head` needs positions 1 and 2: a batch of two positions is an error, not a panic.
    let short = random(&mut rng, (2, 2, 4), -1.0, 1.0);
    let err = model.forward(short.view()).unwrap_err().to_string();
    assert_eq!(
        err,
        "layer `head`: `narrow` of 2 positions from 1 ([1:3]) along axis 1 needs at least 3 positions, but this batch has 2"
    );
}

kiln::model! {
    /// gelu of relu of silu of a layer's output, fused into one loop: the input gradient has
    /// an `if` (relu's) as the left operand of `+` inside another `if`'s branch, which must be
    /// parenthesised for rustc to read it as an expression (random model 3,000,343 did not
    /// compile).
    struct GeluOfReluOfSilu {
        input x: [B, 4];
        target y: [B] classes 3;
        let h = linear(x, 4);
        let u1 = h * sigmoid(h);
        let u2 = relu(u1);
        let u3 = gelu(u2);
        let u4 = h + u3;
        let logits = linear(u4, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn a_fused_chain_whose_derivative_nests_conditions() {
    let mut rng = StdRng::seed_from_u64(43);
    let mut model = GeluOfReluOfSilu::<f64>::new(&mut rng);
    let x = random(&mut rng, (5, 4), -2.0, 2.0);
    let y = labels(&mut rng, 5, 3);
    check_step(
        &mut model,
        x.view().into_dyn(),
        TargetView::Labels(y.view()),
    );
}

kiln::model! {
    /// Batch norms without the affine map on [B, C, H, W] and on [B, C, L] of symbolic length:
    /// the gradients reach the layers before them through the batch statistics alone.
    struct PlainBatchNorms {
        input x: [B, 2, 3, 4];
        input s: [B, 3, T];
        target t: [B, 2];
        let c = conv2d(x, 4, kernel = 1);
        let n = batch_norm(c, affine = false);
        let p = transpose(linear(transpose(s, 1, 2), 3), 1, 2);
        let sn = batch_norm(tanh(p), affine = false, momentum = 0.3);
        let f = concat(flatten(adaptive_avg_pool2d(tanh(n) * c, 1)), max(sn * p, axis = 2), axis = 1);
        let pred = linear(f, 2);
        output pred;
        loss mse(pred, t);
    }
}

/// As for `Norms`: the training-mode gradients against central differences of training-mode
/// losses on copies of the model.
#[test]
fn batch_norm_without_affine_map() {
    use kiln::Model;
    let mut rng = StdRng::seed_from_u64(31);
    let model = PlainBatchNorms::<f64>::new(&mut rng);
    let mut names = Vec::new();
    model.visit_params(&mut |name, _| names.push(name));
    assert_eq!(
        names,
        [
            "c.weight",
            "c.bias",
            "p.weight",
            "p.bias",
            "pred.weight",
            "pred.bias"
        ]
    );
    let mut buffers = Vec::new();
    model.visit_buffers(&mut |name, _| buffers.push(name));
    assert_eq!(
        buffers,
        [
            "n.running_mean",
            "n.running_var",
            "sn.running_mean",
            "sn.running_var"
        ]
    );
    let x = random(&mut rng, (3, 2, 3, 4), -1.0, 1.0);
    let s = random(&mut rng, (3, 3, 5), -1.0, 1.0);
    let t = random(&mut rng, (3, 2), -1.0, 1.0);
    let after = check_training_mode(&model, &[floats(&x), floats(&s), floats(&t)]);
    assert_ne!(after.n.running_mean, model.n.running_mean);
    assert_ne!(after.sn.running_var, model.sn.running_var);
}

kiln::model! {
    /// 1-d convolutions that keep a symbolic length (stride 1, `padding = same` or its
    /// explicit value), through the implicit-GEMM, grouped and depthwise paths; a max over
    /// the length makes the head's input fixed.
    struct Conv1dSymbolicLength {
        input x: [B, 4, T];
        target y: [B] classes 3;
        let dilated = tanh(conv1d(x, 6, kernel = 3, padding = same, dilation = 2));
        let grouped = tanh(conv1d(dilated, 6, kernel = 5, padding = 2, groups = 3));
        let depthwise = conv1d(grouped, 6, kernel = 3, padding = same, groups = 6);
        let logits = linear(max(depthwise, axis = 2), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn conv1d_keeps_a_symbolic_length() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut model = Conv1dSymbolicLength::<f64>::new(&mut rng);
    for length in [9, 4, 13] {
        let x = random(&mut rng, (2, 4, length), -1.0, 1.0);
        let y = labels(&mut rng, 2, 3);
        check_step(
            &mut model,
            x.view().into_dyn(),
            TargetView::Labels(y.view()),
        );
    }
}
