//! Models whose spatial sizes are symbolic (`[B, 1, 4 * H, 4 * W]`): every size a layer
//! computes from `H` is a formula of it, so one model runs on images or sequences of any
//! size the formulas allow. Each model is checked against a twin declared with fixed sizes
//! (the same layers, so the same parameters; `twins!` writes both from one body): equal
//! outputs, losses and gradients at that size, and central differences of its own at
//! another size.

use super::{check, random};
use kiln::ndarray::{Array1, Array3};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::Model;

/// A model of symbolic size and its twin declared with fixed sizes, from one body: the same
/// layers in the same order, so the same parameters.
macro_rules! twins {
    (
        $(#[$any_doc:meta])* $any:ident { $($any_decl:tt)* }
        $(#[$fixed_doc:meta])* $fixed:ident { $($fixed_decl:tt)* }
        body { $($body:tt)* }
    ) => {
        kiln::model! {
            $(#[$any_doc])*
            struct $any { $($any_decl)* $($body)* }
        }
        kiln::model! {
            $(#[$fixed_doc])*
            struct $fixed { $($fixed_decl)* $($body)* }
        }
    };
}

twins! {
    /// A small U-Net on images of any size divisible by 4.
    UNetAnySize {
        input x: [B, 2, 4 * H, 4 * W];
        target y: [B, 4 * H, 4 * W] classes 3;
    }
    /// `UNetAnySize` on 12×16 images only.
    UNetFixed {
        input x: [B, 2, 12, 16];
        target y: [B, 12, 16] classes 3;
    }
    body {
        let c1 = relu(conv2d(x, 4, kernel = 3, padding = 1));
        let p1 = max_pool2d(instance_norm(c1), 2);
        let c2 = tanh(conv2d(p1, 6, kernel = 3, padding = same, dilation = 2));
        let n2 = group_norm(c2, groups = 2);
        let p2 = avg_pool2d(n2, 2);
        let c3 = conv2d(p2, 6, kernel = 3);
        let u3 = conv_transpose2d(c3, 6, kernel = 3);
        let u2 = upsample(u3, scale = 2, mode = bilinear);
        let m2 = concat(u2, c2, axis = 1);
        let u1 = conv_transpose2d(m2, 4, kernel = 2, stride = 2);
        let m1 = concat(u1, c1, axis = 1);
        let s1 = conv2d(m1, 4, kernel = 3, stride = 2, padding = 1);
        let up = upsample(s1, scale = 2);
        let logits = conv2d(up, 3, kernel = 1);
        output logits;
        loss cross_entropy(logits, y);
    }
}

twins! {
    /// A classifier of images of any size: global pooling ends the symbolic extents.
    ClassifierAnySize {
        input x: [B, 3, H, W];
        target y: [B] classes 4;
    }
    /// `ClassifierAnySize` on 5×7 images only.
    ClassifierFixed {
        input x: [B, 3, 5, 7];
        target y: [B] classes 4;
    }
    body {
        let c = relu(conv2d(x, 5, kernel = 3, padding = same));
        let d = conv2d(c, 5, kernel = 2, padding = same);
        let avg = flatten(adaptive_avg_pool2d(d, 1));
        let top = flatten(adaptive_max_pool2d(d, (2, 1)));
        let logits = linear(concat(avg, top), 4);
        output logits;
        loss cross_entropy(logits, y);
    }
}

twins! {
    /// Strided 1-d convolutions and a ceil-mode pooling over sequences of any length
    /// divisible by 4.
    SequenceAnyLength {
        input x: [B, 3, 4 * T];
        target y: [B] classes 4;
    }
    /// `SequenceAnyLength` on sequences of 12 only.
    SequenceFixed {
        input x: [B, 3, 12];
        target y: [B] classes 4;
    }
    body {
        let c = relu(conv1d(x, 5, kernel = 3, stride = 2, padding = 1));
        let p = max_pool1d(c, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let q = avg_pool1d(p, kernel = 2, stride = 1, ceil_mode = true);
        let k = conv1d(q, 5, kernel = 3, padding = causal);
        let logits = linear(mean(k, axis = 2), 4);
        output logits;
        loss cross_entropy(logits, y);
    }
}

twins! {
    /// Sequences joined along their symbolic time axis: with themselves shifted (`T` and
    /// `T - 1` make `2 * T - 1`), and with a fixed number of positions (`T + 2`).
    JoinedAnyLength {
        input x: [B, T, 3];
        target y: [B, 2 * T - 1, 2];
    }
    /// `JoinedAnyLength` on sequences of 5 only.
    JoinedFixed {
        input x: [B, 5, 3];
        target y: [B, 9, 2];
    }
    body {
        let h = linear(x, 2);
        let joined = concat(h, narrow(h, axis = 1, start = 1), axis = 1);
        let framed = concat(narrow(h, axis = 1, start = 0, length = 1), h, narrow(h, axis = 1, start = -1), axis = 1);
        let gated = tanh(joined);
        output gated, framed;
        loss mse(gated, y) + mean(square(framed)) + sum(narrow(framed, axis = 1, start = 1, end = -1));
    }
}

twins! {
    /// Reflection, circular and replicate padding and crops of symbolic axes.
    PadAnySize {
        input x: [B, 2, H, W];
        target y: [B, 2, H, W];
    }
    /// `PadAnySize` on 4×5 inputs only.
    PadFixed {
        input x: [B, 2, 4, 5];
        target y: [B, 2, 4, 5];
    }
    body {
        let r = pad(x, (2, 2, 1, 1), mode = reflect);
        let c = conv2d(r, 2, kernel = 3);
        let k = pad(c, (-1, -1, 1, 0), mode = circular);
        let crop = pad(k, (0, 0, 0, -1));
        let out = crop * pad(x, (1, -1, 0, 0), mode = replicate);
        output out;
        loss mse(out, y);
    }
}

twins! {
    /// Residual blocks on a computed size: each block is compiled for `[B, 4, 2 * H, 2 * W]`.
    BlocksAnySize {
        input x: [B, 2, 4 * H, 4 * W];
        target y: [B, 4, 2 * H, 2 * W];
    }
    /// `BlocksAnySize` on 8×12 images only.
    BlocksFixed {
        input x: [B, 2, 8, 12];
        target y: [B, 4, 4, 6];
    }
    body {
        let p = max_pool2d(conv2d(x, 4, kernel = 3, padding = 1), 2);
        let r = Residual(p, repeat = 2);
        output r;
        loss mse(r, y);

        block Residual(v) {
            let c = tanh(conv2d(v, 4, kernel = 3, padding = 1));
            let down = avg_pool2d(c, 2);
            let up = upsample(down, scale = 2);
            let out = v + up;
            output out;
        }
    }
}

kiln::model! {
    /// A block that shrinks what it is given and pads it back: the caller checks the
    /// block's least size, which none of its own values shows.
    struct ShrinkingBlock {
        input x: [B, 2, 2 * H, W];
        let r = Shrink(x, repeat = 2);
        output r;

        block Shrink(v) {
            let c = conv2d(v, 2, kernel = 5);
            let back = pad(c, (2, 2, 2, 2));
            output back;
        }
    }
}

twins! {
    /// Batch statistics over computed sizes, in training and inference.
    NormsAnySize {
        input x: [B, 3, 2 * H, W];
        target y: [B, 3, H, W - 2];
    }
    /// `NormsAnySize` on 6×5 inputs only.
    NormsFixed {
        input x: [B, 3, 6, 5];
        target y: [B, 3, 3, 3];
    }
    body {
        let c = conv2d(x, 3, kernel = (2, 3), stride = (2, 1));
        let n = batch_norm(c);
        let out = n + instance_norm(c, affine = true);
        output out;
        loss mse(out, y);
    }
}

kiln::model! {
    /// One step ahead: the sequence without its first position against the target without
    /// its last (`h[:, 1:]`, `T - 1` positions), the sequence without its last position
    /// (`h[:, :-1]`) against the one without its first, the inner positions (`h[:, 1:-1]`,
    /// `T - 2`), and the last two positions from the end.
    struct ShiftAnyLength {
        input x: [B, T, 3];
        target y: [B, T - 1, 2];
        let h = linear(x, 2);
        let next = narrow(h, axis = 1, start = 1);
        let previous = narrow(h, axis = 1, start = 0, end = -1);
        let inner = narrow(h, axis = 1, start = 1, end = -1);
        let tail = narrow(h, axis = 1, start = -2);
        let feats = narrow(next, axis = 2, start = 1);
        output next, tail, inner;
        loss mse(next, y) + mean(feats) + sum(tail) + mean(previous * next) + sum(inner * inner);
    }
}

kiln::model! {
    /// `ShiftAnyLength` on sequences of 5 only.
    struct ShiftFixed {
        input x: [B, 5, 3];
        target y: [B, 4, 2];
        let h = linear(x, 2);
        let next = narrow(h, axis = 1, start = 1, length = 4);
        let previous = narrow(h, axis = 1, start = 0, length = 4);
        let inner = narrow(h, axis = 1, start = 1, length = 3);
        let tail = narrow(h, axis = 1, start = -2, length = 2);
        let feats = narrow(next, axis = 2, start = 1, length = 1);
        output next, tail, inner;
        loss mse(next, y) + mean(feats) + sum(tail) + mean(previous * next) + sum(inner * inner);
    }
}

/// Copies `from`'s parameters into `to`, which has the same ones in the same order.
fn copy_params<A: Model<f64>, B: Model<f64>>(from: &A, to: &mut B) {
    let mut values = Vec::new();
    from.visit_params(&mut |name, p| values.push((name, p.to_owned())));
    let mut next = values.into_iter();
    to.visit_params_mut(&mut |name, mut p| {
        let (from_name, value) = next.next().expect("as many parameters");
        assert_eq!(name, from_name);
        p.assign(&value);
    });
}

/// Asserts that twins `$any` and `$fixed` (the same layers and parameters) give equal
/// outputs, losses and gradients on the batch `$x`, `$y`.
macro_rules! assert_twins_agree {
    ($any:expr, $fixed:expr, $x:expr, $y:expr) => {{
        let (any, fixed) = (&mut $any, &mut $fixed);
        assert_eq!(
            any.forward($x.view()).unwrap(),
            fixed.forward($x.view()).unwrap()
        );
        let (mut g_any, mut g_fixed) = (any.zero_grads(), fixed.zero_grads());
        let (mut ws_any, mut ws_fixed) = (any.workspace(), fixed.workspace());
        let loss_any = any
            .loss_and_grad($x.view(), $y.view(), &mut ws_any, &mut g_any)
            .unwrap();
        let loss_fixed = fixed
            .loss_and_grad($x.view(), $y.view(), &mut ws_fixed, &mut g_fixed)
            .unwrap();
        assert_eq!(loss_any, loss_fixed);
        assert_eq!(flat_grads(any, &g_any), flat_grads(fixed, &g_fixed));
    }};
}

/// Asserts that `$model`'s gradients on the batch `$x`, `$y` match central differences of its
/// loss.
macro_rules! assert_central_differences {
    ($model:expr, $x:expr, $y:expr) => {{
        let model = &mut $model;
        let (mut grads, mut ws) = (model.zero_grads(), model.workspace());
        model
            .loss_and_grad($x.view(), $y.view(), &mut ws, &mut grads)
            .unwrap();
        check(&*model, &grads, |m| {
            m.loss($x.view(), $y.view(), &mut m.workspace()).unwrap()
        });
    }};
}

/// Every gradient of a model, flat, in parameter order.
fn flat_grads<M: Model<f64>>(model: &mut M, grads: &M::Grads) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    model.visit_params_with_grads(grads, &mut |_, _, g| out.push(g.to_vec()));
    out
}

fn labels(rng: &mut StdRng, shape: (usize, usize, usize), classes: usize) -> Array3<usize> {
    Array3::from_shape_simple_fn(shape, || rng.random_range(0..classes))
}

fn classes(rng: &mut StdRng, n: usize, classes: usize) -> Array1<usize> {
    Array1::from_shape_simple_fn(n, || rng.random_range(0..classes))
}

#[test]
fn a_unet_of_symbolic_size_matches_its_fixed_twin_and_its_central_differences() {
    let mut rng = StdRng::seed_from_u64(71);
    let mut any = UNetAnySize::<f64>::new(&mut rng);
    any.visit_params_mut(&mut |_, mut p| p.mapv_inplace(|v| v + rng.random_range(-0.2..0.2)));
    let mut fixed = UNetFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);

    let x = random(&mut rng, (2, 2, 12, 16), -1.0, 1.0);
    let y = labels(&mut rng, (2, 12, 16), 3);
    assert_twins_agree!(any, fixed, x, y);

    // One workspace across sizes, growing and shrinking: each size's step as a fresh one's.
    let mut ws = any.workspace();
    for (h, w) in [(16, 12), (12, 16), (20, 12)] {
        let x = random(&mut rng, (1, 2, h, w), -1.0, 1.0);
        let y = labels(&mut rng, (1, h, w), 3);
        let logits = any.forward(x.view()).unwrap();
        assert_eq!(logits.shape(), &[1, 3, h, w]);
        let (mut reused, mut fresh) = (any.zero_grads(), any.zero_grads());
        let a = any
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut reused)
            .unwrap();
        let b = any
            .loss_and_grad(x.view(), y.view(), &mut any.workspace(), &mut fresh)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(flat_grads(&mut any, &reused), flat_grads(&mut any, &fresh));
    }

    let x = random(&mut rng, (1, 2, 16, 12), -1.0, 1.0);
    let y = labels(&mut rng, (1, 16, 12), 3);
    assert_central_differences!(any, x, y);
}

#[test]
fn a_classifier_of_any_image_size_matches_its_fixed_twin_and_its_central_differences() {
    let mut rng = StdRng::seed_from_u64(72);
    let mut any = ClassifierAnySize::<f64>::new(&mut rng);
    let mut fixed = ClassifierFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (3, 3, 5, 7), -1.0, 1.0);
    let y = classes(&mut rng, 3, 4);
    assert_twins_agree!(any, fixed, x, y);

    for (h, w) in [(1, 1), (2, 9), (6, 4)] {
        let x = random(&mut rng, (2, 3, h, w), -1.0, 1.0);
        let y = classes(&mut rng, 2, 4);
        assert_central_differences!(any, x, y);
    }
}

#[test]
fn strided_and_ceil_mode_layers_over_a_symbolic_length_match_their_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(73);
    let mut any = SequenceAnyLength::<f64>::new(&mut rng);
    let mut fixed = SequenceFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (2, 3, 12), -1.0, 1.0);
    let y = classes(&mut rng, 2, 4);
    assert_twins_agree!(any, fixed, x, y);

    let x = random(&mut rng, (2, 3, 20), -1.0, 1.0);
    assert_central_differences!(any, x, y);
}

kiln::model! {
    /// A loss term over all but the last position (`h[:, :-1]`): only the loss needs two
    /// positions; inference runs on one.
    struct LossOnlyWindow {
        input x: [B, T, 3];
        target y: [B, T, 2];
        let h = linear(x, 2);
        let previous = narrow(h, axis = 1, start = 0, end = -1);
        output h;
        loss mse(h, y) + mean(square(previous));
    }
}

#[test]
fn a_window_only_the_loss_reads_does_not_limit_inference() {
    let mut rng = StdRng::seed_from_u64(81);
    let model = LossOnlyWindow::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 1, 3), -1.0, 1.0);
    assert_eq!(model.forward(x.view()).unwrap().shape(), &[2, 1, 2]);
    let y = random(&mut rng, (2, 1, 2), -1.0, 1.0);
    let message = model
        .loss(x.view(), y.view(), &mut model.workspace())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("input `x`") && message.contains("at least 2"),
        "{message}"
    );
}

#[test]
fn concat_along_a_symbolic_axis_matches_its_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(79);
    let mut any = JoinedAnyLength::<f64>::new(&mut rng);
    let mut fixed = JoinedFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (2, 5, 3), -1.0, 1.0);
    let y = random(&mut rng, (2, 9, 2), -1.0, 1.0);
    assert_twins_agree!(any, fixed, x, y);

    let x = random(&mut rng, (3, 7, 3), -1.0, 1.0);
    let y = random(&mut rng, (3, 13, 2), -1.0, 1.0);
    assert_central_differences!(any, x, y);
    let (gated, framed) = any.forward(x.view()).unwrap();
    assert_eq!(
        (gated.shape(), framed.shape()),
        (&[3, 13, 2][..], &[3, 9, 2][..])
    );
    // A target of another length than `2 * T - 1` is an error naming it.
    let short = random(&mut rng, (3, 12, 2), -1.0, 1.0);
    let message = any
        .loss_and_grad(
            x.view(),
            short.view(),
            &mut any.workspace(),
            &mut any.zero_grads(),
        )
        .unwrap_err()
        .to_string();
    assert!(message.contains("target `y`"), "{message}");
}

#[test]
fn padding_and_crops_of_symbolic_axes_match_their_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(75);
    let mut any = PadAnySize::<f64>::new(&mut rng);
    let mut fixed = PadFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (2, 2, 4, 5), -1.0, 1.0);
    let y = random(&mut rng, (2, 2, 4, 5), -1.0, 1.0);
    assert_twins_agree!(any, fixed, x, y);

    // The least size: the reflection of the columns by 2 needs 3 of them, the reflection of
    // the rows by 1 needs 2.
    let x = random(&mut rng, (1, 2, 2, 3), -1.0, 1.0);
    let y = random(&mut rng, (1, 2, 2, 3), -1.0, 1.0);
    assert_central_differences!(any, x, y);
    let narrow = random(&mut rng, (1, 2, 4, 2), -1.0, 1.0);
    let message = any.forward(narrow.view()).unwrap_err().to_string();
    assert!(message.contains("W of at least 3"), "{message}");
    let short = random(&mut rng, (1, 2, 1, 5), -1.0, 1.0);
    let message = any.forward(short.view()).unwrap_err().to_string();
    assert!(message.contains("H of at least 2"), "{message}");
}

#[test]
fn blocks_on_a_computed_size_match_their_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(76);
    let mut any = BlocksAnySize::<f64>::new(&mut rng);
    let mut fixed = BlocksFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (2, 2, 8, 12), -1.0, 1.0);
    let y = random(&mut rng, (2, 4, 4, 6), -1.0, 1.0);
    assert_twins_agree!(any, fixed, x, y);

    let x = random(&mut rng, (1, 2, 12, 4), -1.0, 1.0);
    let y = random(&mut rng, (1, 4, 6, 2), -1.0, 1.0);
    assert_central_differences!(any, x, y);
}

#[test]
fn normalizations_over_computed_sizes_match_their_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(77);
    let mut any = NormsAnySize::<f64>::new(&mut rng);
    let mut fixed = NormsFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (4, 3, 6, 5), -1.0, 1.0);
    let y = random(&mut rng, (4, 3, 3, 3), -1.0, 1.0);
    assert_twins_agree!(any, fixed, x, y);

    // The target is declared `[B, 3, H, W - 2]`.
    let wide = random(&mut rng, (4, 3, 3, 5), -1.0, 1.0);
    let message = any
        .loss_and_grad(
            x.view(),
            wide.view(),
            &mut any.workspace(),
            &mut any.zero_grads(),
        )
        .unwrap_err()
        .to_string();
    assert!(message.contains("target `y`"), "{message}");
    assert!(message.contains("W - 2 = 3"), "{message}");
}

#[test]
fn windows_to_the_end_of_a_symbolic_axis_match_their_fixed_twin() {
    let mut rng = StdRng::seed_from_u64(78);
    let mut any = ShiftAnyLength::<f64>::new(&mut rng);
    let mut fixed = ShiftFixed::<f64>::new(&mut rng);
    copy_params(&any, &mut fixed);
    let x = random(&mut rng, (2, 5, 3), -1.0, 1.0);
    let y = random(&mut rng, (2, 4, 2), -1.0, 1.0);
    assert_twins_agree!(any, fixed, x, y);

    let x = random(&mut rng, (3, 8, 3), -1.0, 1.0);
    let y = random(&mut rng, (3, 7, 2), -1.0, 1.0);
    assert_central_differences!(any, x, y);
    // `h[:, 1:-1]` needs three positions (`h[:, 1:]` and `h[:, -2:]` two).
    for short in [1, 2] {
        let x = random(&mut rng, (1, short, 3), -1.0, 1.0);
        let message = any.forward(x.view()).unwrap_err().to_string();
        assert!(message.contains("input `x`"), "{message}");
        assert!(message.contains("at least 3"), "{message}");
    }
    let x = random(&mut rng, (1, 3, 3), -1.0, 1.0);
    let (_, _, inner) = any.forward(x.view()).unwrap();
    assert_eq!(inner.shape(), &[1, 1, 2]);
}

#[test]
fn sizes_a_model_cannot_take_are_errors_naming_the_input() {
    let mut rng = StdRng::seed_from_u64(74);
    let unet = UNetAnySize::<f64>::new(&mut rng);
    let odd = random(&mut rng, (1, 2, 14, 16), -1.0, 1.0);
    let message = unet.forward(odd.view()).unwrap_err().to_string();
    assert!(message.contains("input `x`"), "{message}");
    assert!(
        message.contains("axis 2 is 14, not a multiple of 4"),
        "{message}"
    );
    // `c3`, a valid 3×3 convolution at a quarter of the size, needs H ≥ 3.
    let small = random(&mut rng, (1, 2, 8, 16), -1.0, 1.0);
    let message = unet.forward(small.view()).unwrap_err().to_string();
    assert!(message.contains("4 * H of at least 12"), "{message}");
    let mut grads = unet.zero_grads();
    let y = labels(&mut rng, (1, 12, 20), 3);
    let x = random(&mut rng, (1, 2, 12, 16), -1.0, 1.0);
    let mut model = unet.clone();
    let message = model
        .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
        .unwrap_err()
        .to_string();
    assert!(message.contains("target `y`"), "{message}");
    assert!(message.contains("W = 4 from an earlier input"), "{message}");

    // The block's valid 5×5 convolution needs `2 * H - 4` and `W - 4` of at least 1.
    let shrinking = ShrinkingBlock::<f64>::new(&mut rng);
    let fits = random(&mut rng, (1, 2, 6, 5), -1.0, 1.0);
    assert_eq!(
        shrinking.forward(fits.view()).unwrap().shape(),
        &[1, 2, 6, 5]
    );
    let short = random(&mut rng, (1, 2, 4, 5), -1.0, 1.0);
    let message = shrinking.forward(short.view()).unwrap_err().to_string();
    assert!(message.contains("2 * H of at least 6"), "{message}");
    let narrow = random(&mut rng, (1, 2, 6, 4), -1.0, 1.0);
    let message = shrinking.forward(narrow.view()).unwrap_err().to_string();
    assert!(message.contains("W of at least 5"), "{message}");
}
