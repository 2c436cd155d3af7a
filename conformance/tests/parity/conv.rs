//! PyTorch parity for the convolution and normalisation fixture cases
//! (`tests/fixtures/<case>/`, see its README): conv2d (square and rectangular kernel, stride and
//! padding), max and average pooling, flatten, batch norm on `[N, C]` and `[N, C, H, W]`,
//! layer norm, grouped, dilated and depthwise convolutions and transposed convolutions, and
//! 1-d convolutions with batch norm on `[N, C, L]` (`gen_vision.py`), in f64 and f32.
//!
//! For each case and dtype the model is declared with `model!` step by step as in the
//! manifest's `forward` list (each layer's value bound to the layer's name, every step an
//! output), loaded from `param.*`, and checked against PyTorch:
//!
//! - the `loss`, every forward value `output.*` (TRAINING mode: `loss_and_grad`, read from the
//!   workspace) and every parameter gradient `grad.<layer>.*`;
//! - the batch-norm running statistics `buffer.*` after that one training-mode step;
//! - the inference-mode `forward` after that step: `eval.output.*` for the batch-norm step and
//!   every step after it (eval mode normalises with the updated running statistics), and
//!   `output.*` for the steps before it and for the cases without batch norm;
//! - loading the PyTorch `state_dict` file;
//! - three steps of every optimizer in the manifest (`after.<opt>.step<k>.*`), each from a
//!   fresh model and optimizer on the same batch.
//!
//! As in `dense.rs`, `grad.input.*` is not compared: kiln computes no gradient with
//! respect to the input data.
//!
//! Run with `--nocapture` to see the largest errors per category.

use crate::common::{Fixture, Report};
use kiln::Float;

kiln::model! {
    /// `conv_pool`: conv 2 -> 3 k3 p1, relu, max pool 2, conv 3 -> 4 k2, relu, avg pool 2,
    /// flatten, linear 4 -> 3; cross-entropy.
    pub struct ConvPool {
        input x: [B, 2, 7, 7];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let r1 = relu(conv1);
        let p1 = max_pool2d(r1, 2);
        let conv2 = conv2d(p1, 4, kernel = 2);
        let r2 = relu(conv2);
        let p2 = avg_pool2d(r2, 2);
        let f = flatten(p2);
        let fc = linear(f, 3);
        output conv1, r1, p1, conv2, r2, p2, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `conv_rect`: conv 1 -> 2, kernel (3, 2), stride (2, 1), padding (1, 0), relu, flatten,
    /// linear 24 -> 2; MSE.
    pub struct ConvRect {
        input x: [B, 1, 6, 5];
        target y: [B, 2];
        let conv = conv2d(x, 2, kernel = (3, 2), stride = (2, 1), padding = (1, 0));
        let r = relu(conv);
        let f = flatten(r);
        let fc = linear(f, 2);
        output conv, r, f, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `batchnorm1d`: linear 5 -> 4 without bias, batch norm, relu, linear 4 -> 2; MSE.
    pub struct BatchNorm1d {
        input x: [B, 5];
        target y: [B, 2];
        let fc1 = linear(x, 4, bias = false);
        let bn = batch_norm(fc1);
        let h1 = relu(bn);
        let fc2 = linear(h1, 2);
        output fc1, bn, h1, fc2;
        loss mse(fc2, y);
    }
}

kiln::model! {
    /// `batchnorm2d`: conv 2 -> 3 k3 p1 without bias, batch norm, relu, flatten,
    /// linear 48 -> 2; cross-entropy.
    pub struct BatchNorm2d {
        input x: [B, 2, 4, 4];
        target label: [B] classes 2;
        let conv = conv2d(x, 3, kernel = 3, padding = 1, bias = false);
        let bn = batch_norm(conv);
        let r = relu(bn);
        let f = flatten(r);
        let fc = linear(f, 2);
        output conv, bn, r, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `layernorm`: linear 6 -> 5, layer norm, tanh, linear 5 -> 2; MSE.
    pub struct LayerNormCase {
        input x: [B, 6];
        target y: [B, 2];
        let fc1 = linear(x, 5);
        let ln = layer_norm(fc1);
        let h1 = tanh(ln);
        let fc2 = linear(h1, 2);
        output fc1, ln, h1, fc2;
        loss mse(fc2, y);
    }
}

kiln::model! {
    /// `vision_conv_grouped`: conv 4 -> 6 kernel (3, 2) stride (2, 1) padding 1 dilation
    /// (2, 1) groups 2, relu, depthwise conv 6 -> 6 k3 p1, flatten, linear 126 -> 3;
    /// cross-entropy.
    pub struct VisionConvGrouped {
        input x: [B, 4, 7, 6];
        target label: [B] classes 3;
        let conv = conv2d(x, 6, kernel = (3, 2), stride = (2, 1), padding = 1, dilation = (2, 1), groups = 2);
        let r = relu(conv);
        let dw = conv2d(r, 6, kernel = 3, padding = 1, groups = 6);
        let f = flatten(dw);
        let fc = linear(f, 3);
        output conv, r, dw, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_conv_transpose`: conv_transpose 4 -> 4 k3 stride 2 padding 1 output_padding 1
    /// groups 2, tanh, depthwise conv_transpose 4 -> 4 kernel (3, 2) padding (1, 0),
    /// conv_transpose 4 -> 2 kernel (2, 3) padding (0, 1) output_padding 1 dilation 2 without
    /// bias, flatten, linear 216 -> 2; MSE.
    pub struct VisionConvTranspose {
        input x: [B, 4, 3, 4];
        target y: [B, 2];
        let up = conv_transpose2d(x, 4, kernel = 3, stride = 2, padding = 1, output_padding = 1, groups = 2);
        let t = tanh(up);
        let dw = conv_transpose2d(t, 4, kernel = (3, 2), padding = (1, 0), groups = 4);
        let dil = conv_transpose2d(dw, 2, kernel = (2, 3), padding = (0, 1), output_padding = 1, dilation = 2, bias = false);
        let f = flatten(dil);
        let fc = linear(f, 2);
        output up, t, dw, dil, f, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `vision_batch_norm_plain`: batch norms without the affine map (`affine = false`) on
    /// [B, C, H, W] and [B, C, L] (momentum 0.2); cross-entropy.
    pub struct VisionBatchNormPlain {
        input x: [B, 2, 4, 5];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1, bias = false);
        let bn1 = batch_norm(conv1, affine = false);
        let r = relu(bn1);
        let s = reshape(r, (B, 4, 20));
        let bn2 = batch_norm(s, affine = false, momentum = 0.2);
        let t = tanh(bn2);
        let a = mean(t, axis = 2);
        let fc = linear(a, 3);
        output conv1, bn1, r, s, bn2, t, a, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_conv1d`: conv1d 5 -> 6 k3 p1 without bias, batch norm on [B, 6, 12], relu,
    /// conv1d 6 -> 8 k3 stride 2 padding 2 dilation 2 groups 2, max over the length,
    /// linear 8 -> 4; cross-entropy.
    pub struct VisionConv1d {
        input x: [B, 5, 12];
        target label: [B] classes 4;
        let conv1 = conv1d(x, 6, kernel = 3, padding = 1, bias = false);
        let bn = batch_norm(conv1);
        let r = relu(bn);
        let conv2 = conv1d(r, 8, kernel = 3, stride = 2, padding = 2, dilation = 2, groups = 2);
        let p = max(conv2, axis = 2);
        let fc = linear(p, 4);
        output conv1, bn, r, conv2, p, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_pool1d`: conv1d 3 -> 4 k3 p1; max_pool1d k3 s2 p1 ceil_mode; avg_pool1d 2;
    /// avg_pool1d k3 s2 p1 ceil_mode without the padding in the divisor; linear 68 -> 3.
    pub struct VisionPool1d {
        input x: [B, 3, 11];
        target label: [B] classes 3;
        let conv1 = conv1d(x, 4, kernel = 3, padding = 1);
        let mp = max_pool1d(conv1, 3, stride = 2, padding = 1, ceil_mode = true);
        let ap = avg_pool1d(conv1, 2);
        let aq = avg_pool1d(conv1, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false);
        let f = concat(flatten(mp), flatten(ap), flatten(aq), axis = 1);
        let fc = linear(f, 3);
        output conv1, mp, ap, aq, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_conv_same_even`: `padding = same` where the dilated kernel's span is odd, so
    /// the extra row or column goes after the input (conv2d kernel (4, 2); kernel (2, 3)
    /// dilated (3, 1); conv1d kernels 4 and 2 dilated 3), through relu, a mean over the
    /// height, tanh and a linear head; cross-entropy.
    pub struct VisionConvSameEven {
        input x: [B, 3, 7, 6];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = (4, 2), padding = same);
        let r = relu(conv1);
        let conv2 = conv2d(r, 4, kernel = (2, 3), dilation = (3, 1), padding = same, bias = false);
        let a = mean(conv2, axis = 2);
        let conv3 = conv1d(a, 5, kernel = 4, padding = same);
        let t = tanh(conv3);
        let conv4 = conv1d(t, 3, kernel = 2, dilation = 3, padding = same);
        let f = flatten(conv4);
        let fc = linear(f, 3);
        output conv1, r, conv2, a, conv3, t, conv4, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `narrow_select`: the first and last positions of a sequence (`h[:, 0]`, `h[:, -1]`), a
    /// window of its positions and one of its features counted from the end; cross-entropy.
    pub struct NarrowSelect {
        input x: [B, 6, 5];
        target label: [B] classes 4;
        let proj = linear(x, 8);
        let h = tanh(proj);
        let first = select(h, axis = 1, index = 0);
        let last = select(h, 1, -1);
        let mid = narrow(h, axis = 1, start = 1, length = 3);
        let feat = narrow(mid, axis = 2, start = -4, length = 2);
        let f = concat(first, last, flatten(feat), axis = 1);
        let fc = linear(f, 4);
        output proj, h, first, last, mid, feat, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `chunk_split`: a projection cut into three by `chunk` and gated (GLU-like), its
    /// positions cut in two by `split`, and parts of the input taken from an uneven `chunk` (7
    /// into 3, 3, 1) and from `split` sections, skipping the others; cross-entropy.
    pub struct ChunkSplit {
        input x: [B, 4, 7];
        target label: [B] classes 4;
        let proj = linear(x, 12);
        let h = tanh(proj);
        let (a, b, c) = chunk(h, 3, axis = 2);
        let gated = a * sigmoid(b) + c;
        let (early, late) = split(gated, 2, axis = 1);
        let (_, _, r) = chunk(x, 3, axis = 2);
        let (_, wide) = split(x, (2, 5), axis = -1);
        let f = concat(flatten(early * late), flatten(r), flatten(wide), axis = 1);
        let fc = linear(f, 4);
        output proj, h, a, b, c, gated, early, late, r, wide, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_conv1d_causal`: Keras' `padding = causal` 1-d convolutions (the whole dilated
    /// span before the sequence): plain, dilated and grouped, and strided; cross-entropy.
    pub struct VisionConv1dCausal {
        input x: [B, 3, 8];
        target label: [B] classes 3;
        let conv1 = conv1d(x, 4, kernel = 3, padding = causal);
        let t = tanh(conv1);
        let conv2 = conv1d(t, 4, kernel = 2, dilation = 3, groups = 2, padding = causal);
        let conv3 = conv1d(conv2, 2, kernel = 3, stride = 2, padding = causal);
        let f = flatten(conv3);
        let fc = linear(f, 3);
        output conv1, t, conv2, conv3, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_pad_crop`: negative pads crop before each mode pads from what is left: a
    /// centred crop, and crops beside reflect, circular and replicate padding.
    pub struct VisionPadCrop {
        input x: [B, 2, 6, 7];
        target label: [B] classes 3;
        let centre = pad(x, (-1, -2, -2, -1));
        let shifted = pad(x, (2, -3), mode = reflect);
        let wrapped = pad(x, (-2, 3, 1, -4), mode = circular);
        let replicated = pad(x, (-6, 1), mode = replicate);
        let f = concat(flatten(centre), flatten(shifted), flatten(wrapped), flatten(replicated), axis = 1);
        let t = tanh(f);
        let fc = linear(t, 3);
        output centre, shifted, wrapped, replicated, f, t, fc;
        loss cross_entropy(fc, label);
    }
}

/// One module per case with an `f64` and an `f32` test. The input has rank `$Ix` (`Ix4` for
/// images); the target is a `float` matrix or class `labels`. `outputs` maps each model
/// output to the fixture's step name: a layer's value is bound to the layer's name (`conv1`)
/// so that its parameters are `conv1.weight`, where the fixture calls the value `c1`.
macro_rules! parity_case {
    (@target float, $fixture:ident, $name:expr) => {
        $fixture.array::<F, kiln::ndarray::Ix2>($name)
    };
    (@target labels, $fixture:ident, $name:expr) => {
        $fixture.labels($name)
    };
    (
        $case:ident, $Model:ident,
        input x: $Ix:ident,
        target $target:ident: $kind:ident,
        outputs { $($out:ident => $step:ident),+ $(,)? } $(,)?
    ) => {
        mod $case {
            use super::*;

            fn run<F: Float>() {
                open_case!($case, $Model => fixture, report, fresh);
                let mut model = fresh();
                let x: kiln::ndarray::Array<F, kiln::ndarray::$Ix> = fixture.array("input.x");
                let target = parity_case!(@target $kind, fixture, concat!("target.", stringify!($target)));

                // One training-mode step: loss, forward values, gradients, running statistics.
                check_training_step!(fixture, report, model: $Model, (x.view(), target.view()), ws, { $($out => $step),+ });
                let steps = fixture.names_with("output.");
                report.require_checked("forward values", steps);
                fixture.check_buffers(&mut report, &model);

                // Inference after that step: batch norm normalises with the updated running
                // statistics (`eval.output.*`); the other steps equal the training values.
                #[allow(unused_parens)]
                let ($($out),+) = model.forward(x.view()).expect("forward");
                $(
                    fixture.check_inference_output(&mut report, stringify!($step), $out.view().into_dyn());
                )+
                let eval_steps = fixture.names_with("eval.output.");
                report.require_checked("eval-mode forward values", eval_steps);

                fixture.check_state_dict_with_buffers(&mut report, $Model::<F>::zeros);

                check_trajectories!(fixture, report, fresh, (x.view(), target.view()), ws);
                report.finish();
            }

            in_f64_and_f32!();
        }
    };
}

parity_case! {
    conv_pool, ConvPool,
    input x: Ix4,
    target label: labels,
    outputs {
        conv1 => c1, r1 => r1, p1 => p1, conv2 => c2, r2 => r2, p2 => p2, f => f, fc => logits,
    },
}

parity_case! {
    conv_rect, ConvRect,
    input x: Ix4,
    target y: float,
    outputs { conv => c, r => r, f => f, fc => pred },
}

parity_case! {
    batchnorm1d, BatchNorm1d,
    input x: Ix2,
    target y: float,
    outputs { fc1 => z1, bn => n1, h1 => h1, fc2 => pred },
}

parity_case! {
    batchnorm2d, BatchNorm2d,
    input x: Ix4,
    target label: labels,
    outputs { conv => c, bn => n, r => r, f => f, fc => logits },
}

parity_case! {
    layernorm, LayerNormCase,
    input x: Ix2,
    target y: float,
    outputs { fc1 => z1, ln => n1, h1 => h1, fc2 => pred },
}

parity_case! {
    vision_conv_grouped, VisionConvGrouped,
    input x: Ix4,
    target label: labels,
    outputs { conv => c, r => r, dw => d, f => f, fc => logits },
}

parity_case! {
    vision_conv_transpose, VisionConvTranspose,
    input x: Ix4,
    target y: float,
    outputs { up => u, t => t, dw => d, dil => e, f => f, fc => pred },
}

parity_case! {
    vision_batch_norm_plain, VisionBatchNormPlain,
    input x: Ix4,
    target label: labels,
    outputs { conv1 => c1, bn1 => n1, r => r, s => s, bn2 => n2, t => t, a => a, fc => logits },
}

parity_case! {
    vision_conv1d, VisionConv1d,
    input x: Ix3,
    target label: labels,
    outputs { conv1 => c1, bn => n, r => r, conv2 => c2, p => p, fc => logits },
}

parity_case! {
    vision_conv_same_even, VisionConvSameEven,
    input x: Ix4,
    target label: labels,
    outputs { conv1 => c1, r => r, conv2 => c2, a => a, conv3 => c3, t => t, conv4 => c4, f => f, fc => logits },
}

parity_case! {
    narrow_select, NarrowSelect,
    input x: Ix3,
    target label: labels,
    outputs { proj => h_lin, h => h, first => first, last => last, mid => mid, feat => feat, f => f, fc => logits },
}

parity_case! {
    chunk_split, ChunkSplit,
    input x: Ix3,
    target label: labels,
    outputs { proj => h_lin, h => h, a => a, b => b, c => c, gated => gated, early => early, late => late, r => r, wide => wide, f => f, fc => logits },
}

parity_case! {
    vision_conv1d_causal, VisionConv1dCausal,
    input x: Ix3,
    target label: labels,
    outputs { conv1 => c1, t => t, conv2 => c2, conv3 => c3, f => f, fc => logits },
}

parity_case! {
    vision_pad_crop, VisionPadCrop,
    input x: Ix4,
    target label: labels,
    outputs { centre => centre, shifted => shifted, wrapped => wrapped, replicated => replicated, f => f, t => t, fc => logits },
}

parity_case! {
    vision_pool1d, VisionPool1d,
    input x: Ix3,
    target label: labels,
    outputs { conv1 => c1, mp => mp, ap => ap, aq => aq, f => f, fc => logits },
}

/// A batch-norm `state_dict` exactly as PyTorch writes it after one training step: the
/// parameters `param.*`, the running statistics `buffer.*` and the int64 scalar
/// `bn.num_batches_tracked` (1). Loading it must give those parameters and running statistics;
/// kiln keeps no `num_batches_tracked` (with a fixed momentum it affects no value), so the
/// loader has to skip it. (The state_dict files of `batchnorm1d` and `batchnorm2d` leave out
/// the buffers and `num_batches_tracked` altogether; `vision_conv1d`'s is torch's whole
/// `state_dict()` at the initial state, loaded by its parity case.)
#[test]
fn torch_batch_norm_state_dict_with_num_batches_tracked() {
    use crate::common::{scratch_dir, write_safetensors, RawTensor, Tolerance};
    use kiln::Model;

    fn run<F: Float, M: Model<F>>(case: &str, fresh: impl Fn() -> M) {
        let fixture = Fixture::open::<F>(case);
        let mut report = Report::new(format!("{} torch state_dict", fixture.title()));
        let mut tensors = Vec::new();
        for name in fixture
            .names_with("param.")
            .into_iter()
            .chain(fixture.names_with("buffer."))
        {
            let (_, key) = name.split_once('.').expect("a prefixed name");
            tensors.push(RawTensor::float(key, fixture.tensor::<F>(name).view()));
        }
        tensors.push(RawTensor {
            name: "bn.num_batches_tracked".to_string(),
            dtype: safetensors::Dtype::I64,
            shape: Vec::new(),
            data: 1i64.to_le_bytes().to_vec(),
        });
        let path = scratch_dir().join(format!("{case}.{}.torch_state_dict.safetensors", F::NAME));
        write_safetensors(&path, &tensors);
        let mut model = fresh();
        match kiln::io::load(&mut model, &path) {
            Ok(()) => {
                model.visit_params(&mut |name, view| {
                    let key = format!("param.{name}");
                    let expected = fixture.tensor::<F>(&key);
                    report.check("state_dict", &key, view, expected.view(), Tolerance::EXACT);
                });
                model.visit_buffers(&mut |name, view| {
                    let key = format!("buffer.{name}");
                    let expected = fixture.tensor::<F>(&key);
                    report.check("state_dict", &key, view, expected.view(), Tolerance::EXACT);
                });
            }
            Err(e) => report.fail(format!(
                "kiln::io::load of a torch batch-norm state_dict: {e}"
            )),
        }
        report.finish();
    }

    run::<f64, _>("batchnorm1d", BatchNorm1d::<f64>::zeros);
    run::<f32, _>("batchnorm1d", BatchNorm1d::<f32>::zeros);
    run::<f64, _>("batchnorm2d", BatchNorm2d::<f64>::zeros);
    run::<f32, _>("batchnorm2d", BatchNorm2d::<f32>::zeros);
    run::<f64, _>("vision_conv1d", VisionConv1d::<f64>::zeros);
    run::<f32, _>("vision_conv1d", VisionConv1d::<f32>::zeros);
}

kiln::model! {
    /// `padding = same` (odd kernels, any dilation) and `padding = valid`.
    pub struct SamePadding {
        input x: [B, 2, 9, 11];
        let wide = conv2d(x, 3, kernel = (3, 5), dilation = 2, padding = same);
        let point = conv2d(wide, 2, kernel = 3, padding = valid);
        output wide;
        output point;
    }
}

kiln::model! {
    /// The same layers with their padding written out.
    pub struct ExplicitPadding {
        input x: [B, 2, 9, 11];
        let wide = conv2d(x, 3, kernel = (3, 5), dilation = 2, padding = (2, 4));
        let point = conv2d(wide, 2, kernel = 3);
        output wide;
        output point;
    }
}

/// `padding = same` keeps the height and width and is the explicit padding `d·(k − 1)/2` per
/// side, as `nn.Conv2d(padding='same')`; `valid` is no padding.
#[test]
fn padding_same_and_valid_are_the_explicit_paddings() {
    use kiln::rand::{rngs::StdRng, RngExt, SeedableRng};
    use kiln::Model;
    let mut rng = StdRng::seed_from_u64(3);
    let same = SamePadding::<f64>::new(&mut rng);
    let mut explicit = ExplicitPadding::<f64>::zeros();
    let mut weights = Vec::new();
    same.visit_params(&mut |_, p| weights.push(p.to_owned()));
    let mut next = weights.into_iter();
    explicit.visit_params_mut(&mut |name, mut p| {
        p.assign(
            &next
                .next()
                .unwrap_or_else(|| panic!("no weights for {name}")),
        )
    });
    let x =
        kiln::ndarray::Array4::from_shape_simple_fn((2, 2, 9, 11), || rng.random_range(-1.0..1.0));
    let (wide, point) = same.forward(x.view()).expect("forward");
    let (wide_explicit, point_explicit) = explicit.forward(x.view()).expect("forward");
    assert_eq!(wide.shape(), [2, 3, 9, 11]);
    assert_eq!(point.shape(), [2, 2, 7, 9]);
    assert_eq!(wide, wide_explicit);
    assert_eq!(point, point_explicit);
}

kiln::model! {
    /// 1-d convolutions that keep a symbolic length, reduced over it by a max.
    pub struct SymbolicLength {
        input x: [B, 4, T];
        target y: [B] classes 3;
        let conv = conv1d(x, 6, kernel = 3, padding = same, dilation = 2);
        let grouped = conv1d(relu(conv), 6, kernel = 5, padding = 2, groups = 3);
        let fc = linear(max(grouped, axis = 2), 3);
        output grouped, fc;
        loss cross_entropy(fc, y);
    }
}

kiln::model! {
    /// The same layers at the fixed length 9.
    pub struct FixedLength {
        input x: [B, 4, 9];
        target y: [B] classes 3;
        let conv = conv1d(x, 6, kernel = 3, padding = same, dilation = 2);
        let grouped = conv1d(relu(conv), 6, kernel = 5, padding = 2, groups = 3);
        let fc = linear(max(grouped, axis = 2), 3);
        output grouped, fc;
        loss cross_entropy(fc, y);
    }
}

/// A symbolic length: one workspace serves batches of several lengths (its convolution
/// scratch sized for the longest, then reused by shorter ones) and gives what a fresh
/// workspace gives, and at length 9 what the model of fixed length 9 gives.
#[test]
fn conv1d_with_a_symbolic_length_reuses_its_workspace() {
    use kiln::ndarray::{Array1, Array3, ArrayD};
    use kiln::rand::{rngs::StdRng, RngExt, SeedableRng};
    use kiln::Model;

    fn grads_of<M: Model<f64>>(grads: &M::Grads) -> Vec<ArrayD<f64>> {
        let mut out = Vec::new();
        M::visit_grads(grads, &mut |_, g| out.push(g.to_owned()));
        out
    }

    let mut rng = StdRng::seed_from_u64(9);
    let mut model = SymbolicLength::<f64>::new(&mut rng);
    let mut fixed = FixedLength::<f64>::zeros();
    let mut weights = Vec::new();
    model.visit_params(&mut |_, p| weights.push(p.to_owned()));
    let mut next = weights.into_iter();
    fixed.visit_params_mut(&mut |name, mut p| {
        p.assign(
            &next
                .next()
                .unwrap_or_else(|| panic!("no weights for {name}")),
        )
    });

    let mut shared = model.workspace();
    for length in [13, 4, 9, 1] {
        let x = Array3::from_shape_simple_fn((3, 4, length), || rng.random_range(-1.0..1.0));
        let y = Array1::from_shape_simple_fn(3, || rng.random_range(0..3usize));
        let mut grads = model.zero_grads();
        let loss = model
            .loss_and_grad(x.view(), y.view(), &mut shared, &mut grads)
            .expect("loss_and_grad");
        let grouped = shared.grouped().expect("grouped").to_owned();
        assert_eq!(grouped.dim(), (3, 6, length));

        let mut fresh = model.workspace();
        let mut fresh_grads = model.zero_grads();
        let fresh_loss = model
            .loss_and_grad(x.view(), y.view(), &mut fresh, &mut fresh_grads)
            .expect("loss_and_grad");
        assert_eq!(loss, fresh_loss, "length {length}");
        assert_eq!(
            grouped,
            fresh.grouped().expect("grouped"),
            "length {length}"
        );
        assert_eq!(
            grads_of::<SymbolicLength<f64>>(&grads),
            grads_of::<SymbolicLength<f64>>(&fresh_grads),
            "length {length}"
        );

        if length == 9 {
            let mut ws = fixed.workspace();
            let mut fixed_grads = fixed.zero_grads();
            let fixed_loss = fixed
                .loss_and_grad(x.view(), y.view(), &mut ws, &mut fixed_grads)
                .expect("loss_and_grad");
            assert_eq!(loss, fixed_loss);
            assert_eq!(grouped, ws.grouped().expect("grouped"));
            assert_eq!(
                grads_of::<SymbolicLength<f64>>(&grads),
                grads_of::<FixedLength<f64>>(&fixed_grads)
            );
            let (forward_grouped, _) = model.forward(x.view()).expect("forward");
            assert_eq!(forward_grouped, grouped);
        }
    }
}

kiln::model! {
    /// 1-d convolutions on a batch large enough for the kernels to share it between threads.
    pub struct Conv1dWide {
        input x: [B, 8, 40];
        target y: [B] classes 5;
        let a = conv1d(x, 16, kernel = 5, stride = 2, padding = 2, dilation = 2, groups = 4);
        let b = conv1d(tanh(a), 16, kernel = 3, padding = same);
        let fc = linear(max(b, axis = 2), 5);
        output b;
        loss cross_entropy(fc, y);
    }
}

kiln::model! {
    /// The same layers as 2-d convolutions of height 1 on `[B, 8, 1, 40]`.
    pub struct Conv2dFlat {
        input x: [B, 8, 1, 40];
        target y: [B] classes 5;
        let a = conv2d(x, 16, kernel = (1, 5), stride = (1, 2), padding = (0, 2), dilation = (1, 2), groups = 4);
        let b = conv2d(tanh(a), 16, kernel = (1, 3), padding = (0, 1));
        let fc = linear(max(reshape(b, (B, 16, 18)), axis = 2), 5);
        output b;
        loss cross_entropy(fc, y);
    }
}

/// `conv1d` is `conv2d` of height 1 with the weight `[out, in/g, k]` read as `[out, in/g, 1,
/// k]`: the same values bit for bit, forward and backward, on a batch of 48.
#[test]
fn conv1d_is_conv2d_of_height_one() {
    use kiln::ndarray::{Array1, Array3};
    use kiln::rand::{rngs::StdRng, RngExt, SeedableRng};
    use kiln::Model;

    let mut rng = StdRng::seed_from_u64(12);
    let mut one = Conv1dWide::<f32>::new(&mut rng);
    let mut two = Conv2dFlat::<f32>::zeros();
    let mut weights = Vec::new();
    one.visit_params(&mut |name, p| weights.push((name, p.iter().copied().collect::<Vec<_>>())));
    let mut next = weights.iter();
    two.visit_params_mut(&mut |name, mut p| {
        let (from, values) = next.next().expect("as many parameters");
        assert_eq!(*from, name);
        assert_eq!(p.len(), values.len(), "{name}");
        p.iter_mut().zip(values).for_each(|(p, v)| *p = *v);
    });
    let x = Array3::from_shape_simple_fn((48, 8, 40), || rng.random_range(-1.0f32..1.0));
    let y = Array1::from_shape_simple_fn(48, || rng.random_range(0..5usize));
    let x4 = x
        .clone()
        .into_shape_with_order((48, 8, 1, 40))
        .expect("a view");

    let (mut ws1, mut grads1) = (one.workspace(), one.zero_grads());
    let loss1 = one
        .loss_and_grad(x.view(), y.view(), &mut ws1, &mut grads1)
        .expect("loss_and_grad");
    let (mut ws2, mut grads2) = (two.workspace(), two.zero_grads());
    let loss2 = two
        .loss_and_grad(x4.view(), y.view(), &mut ws2, &mut grads2)
        .expect("loss_and_grad");
    assert_eq!(loss1, loss2);
    let b1: Vec<f32> = ws1.b().expect("b").iter().copied().collect();
    let b2: Vec<f32> = ws2.b().expect("b").iter().copied().collect();
    assert_eq!(b1, b2);
    let mut g1 = Vec::new();
    Conv1dWide::<f32>::visit_grads(&grads1, &mut |n, g| {
        g1.push((n, g.iter().copied().collect::<Vec<_>>()))
    });
    let mut g2 = Vec::new();
    Conv2dFlat::<f32>::visit_grads(&grads2, &mut |n, g| {
        g2.push((n, g.iter().copied().collect::<Vec<_>>()))
    });
    assert_eq!(g1, g2);
}
