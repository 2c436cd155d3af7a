//! ONNX export checked in another runtime: each model is exported with `kiln::onnx::export`,
//! the file is run by tract (`tract-onnx`) on random inputs, and every output must equal
//! kiln's inference `forward` (in f64) within 1e-5 relative (`|onnx - kiln| <= 1e-5 *
//! max(|kiln|, 1)`; the file holds f32 weights and tract computes in f32).
//!
//! One model per op family: dense layers with every pointwise op, softmaxes and residuals;
//! tensor ops (rank-3 linear, layer norm, matmul, transpose, permute, reshape, concat,
//! reductions over one or several axes, softmaxes over the time axis, group norm);
//! convolutions, pooling (adaptive max too), batch norm, group norm, dropout, upsampling (with
//! aligned corners too), softmaxes over the channels; 1-d convolutions and batch norm on
//! sequences (fixed and symbolic length); token models
//! (embedding, position embedding, causal mask, a tied head, a mean over lengths); rotary
//! position embeddings. Token ids
//! and lengths are `usize` in kiln and `int64` in the file: the test feeds the same numbers as
//! i64 tensors.
//!
//! Part of the default test run (`cargo test -p kiln-conformance --test onnx_export`); tract,
//! and this package's code, are built unoptimised for it (see the workspace's `Cargo.toml`).

use kiln::ndarray::{ArrayD, IxDyn};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::Model;
use std::path::PathBuf;
use tract_onnx::prelude::*;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn random(rng: &mut StdRng, shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

/// A fresh path in the system's temp directory.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{name}.onnx"))
}

/// An input for tract.
enum Feed {
    Float(ArrayD<f64>),
    Ints(ArrayD<usize>),
}

fn tensor(feed: &Feed) -> Tensor {
    match feed {
        Feed::Float(a) => {
            let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            Tensor::from_shape(a.shape(), &v).expect("tensor")
        }
        Feed::Ints(a) => {
            let v: Vec<i64> = a.iter().map(|&x| x as i64).collect();
            Tensor::from_shape(a.shape(), &v).expect("tensor")
        }
    }
}

/// With `KILN_ONNX_DUMP=DIR`, writes the exported file, the inputs and kiln's outputs
/// (`DIR/NAME.onnx`, `DIR/NAME.json`) for a check in another runtime (onnxruntime).
fn dump<M: Model<f64>>(name: &str, model: &M, feeds: &[Feed], want: &[ArrayD<f64>]) {
    let Some(dir) = std::env::var_os("KILN_ONNX_DUMP") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("dump dir");
    kiln::onnx::export(model, dir.join(format!("{name}.onnx"))).expect("export");
    let array = |shape: &[usize], data: Vec<f64>, int: bool| serde_json::json!({ "shape": shape, "data": data, "int": int });
    let inputs: Vec<_> = feeds
        .iter()
        .map(|f| match f {
            Feed::Float(a) => array(a.shape(), a.iter().copied().collect(), false),
            Feed::Ints(a) => array(a.shape(), a.iter().map(|&v| v as f64).collect(), true),
        })
        .collect();
    let outputs: Vec<_> = want
        .iter()
        .map(|a| array(a.shape(), a.iter().copied().collect(), false))
        .collect();
    let json = serde_json::json!({ "inputs": inputs, "outputs": outputs });
    std::fs::write(dir.join(format!("{name}.json")), json.to_string()).expect("dump");
}

/// Exports `model`, runs the file in tract on `feeds`, and compares each output with `want`.
fn check<M: Model<f64>>(name: &str, model: &M, feeds: &[Feed], want: &[ArrayD<f64>]) {
    dump(name, model, feeds, want);
    let path = temp_path(name);
    kiln::onnx::export(model, &path).expect("export");
    let mut onnx = tract_onnx::onnx()
        .model_for_path(&path)
        .expect("tract reads the file");
    for (i, feed) in feeds.iter().enumerate() {
        let t = tensor(feed);
        onnx.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
            .expect("input fact");
    }
    let plan = onnx
        .into_optimized()
        .expect("tract optimizes the graph")
        .into_runnable()
        .expect("tract plans the graph");
    let outputs = plan
        .run(feeds.iter().map(|f| tensor(f).into()).collect())
        .expect("tract runs the graph");
    assert_eq!(outputs.len(), want.len(), "{name}: output count");
    for (k, (got, want)) in outputs.iter().zip(want).enumerate() {
        let got = got.to_plain_array_view::<f32>().expect("f32 output");
        assert_eq!(got.shape(), want.shape(), "{name}: output {k} shape");
        let mut worst = 0.0f64;
        for (g, w) in got.iter().zip(want.iter()) {
            let err = (f64::from(*g) - w).abs() / w.abs().max(1.0);
            assert!(
                err <= 1e-5 || (w.is_infinite() && f64::from(*g) == *w),
                "{name}: output {k}: onnx {g} vs kiln {w}"
            );
            if err.is_finite() {
                worst = worst.max(err);
            }
        }
        eprintln!("{name}: output {k}: largest relative error {worst:.2e}");
    }
    let _ = std::fs::remove_file(&path);
}

fn dyn_f<D: kiln::ndarray::Dimension>(a: kiln::ndarray::Array<f64, D>) -> ArrayD<f64> {
    a.into_dyn()
}

kiln::model! {
    /// Dense layers, every pointwise op, and a group norm of [B, C] features.
    struct Dense {
        input x: [B, 6];
        let h = linear(x, 8);
        let a = relu(h) + gelu(h) * 0.5 - tanh(h) / 3.0;
        let s = sigmoid(a) * softplus(h) + exp(0.3 * h) - log(1.5 + sigmoid(h));
        let l = leaky_relu(s) + sqrt(1.0 + square(h));
        let w = 3.0 * h;
        let m = abs(w) + elu(w, alpha = 0.5) + selu(w) * mish(w) + softsign(w) - logsigmoid(w);
        let k = clamp(w, min = -1.0, max = 0.5) + hardtanh(w) + clamp(w, max = 0.2)
            + maximum(w, h) - minimum(0.1, h) + pow(sigmoid(h), 1.5) + pow(h, 3);
        let r = linear(l + 0.1 * m + k, 8) + h;
        let y = linear(r, 4, bias = false);
        let p = softmax(y);
        let lp = log_softmax(y);
        let gn = group_norm(h, groups = 2);
        output y, p, lp, gn;
    }
}

#[test]
fn dense_and_pointwise_ops_match() {
    let mut rng = rng();
    let mut model = Dense::<f64>::new(&mut rng);
    // Non-trivial norm weights, so that they are checked too.
    model.visit_params_mut(&mut |name, mut p| {
        if name.starts_with("gn") {
            p.iter_mut().for_each(|v| *v = rng.random_range(0.5..1.5));
        }
    });
    let x = random(&mut rng, &[3, 6]);
    let (y, p, lp, gn) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "dense",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(y), dyn_f(p), dyn_f(lp), dyn_f(gn)],
    );
}

kiln::model! {
    /// Tensor ops on [B, T, D] values.
    struct Tensors {
        input x: [B, 5, 6];
        let h = linear(x, 8);
        let n = layer_norm(h);
        let s = matmul(n, transpose(n, 1, 2));
        let p = permute(s, (0, 2, 1));
        let c = concat(p, s, axis = 2);
        let r = reshape(c, (B, 2, 25));
        let f = flatten(r);
        let total = sum(n, axis = 2);
        let avg = mean(n, axis = -1);
        let top = max(n, axis = 1);
        let over_time = softmax(n, axis = 1);
        let log_over_time = log_softmax(h, axis = -2);
        let ng = group_norm(h, groups = 1, eps = 1e-3);
        let inst = instance_norm(h);
        let plain = group_norm(h, groups = 5, affine = false);
        let padded = pad(h, (1, 2), mode = reflect) + pad(h, (0, 3), value = 0.5)
            - pad(h, (2, 1), mode = replicate)
            + pad(h, (3, 0), mode = circular);
        let n2 = layer_norm(h, dims = 2);
        let whole = layer_norm(h, dims = 2, elementwise_affine = false);
        output f, total, avg, top, over_time, log_over_time, ng, inst, plain, padded, n2, whole;
    }
}

#[test]
fn tensor_ops_and_layer_norm_match() {
    let mut rng = rng();
    let mut model = Tensors::<f64>::new(&mut rng);
    // Non-trivial norm weights, so that they are checked too.
    model.visit_params_mut(&mut |name, mut p| {
        if name.starts_with('n') {
            p.iter_mut().for_each(|v| *v = rng.random_range(0.5..1.5));
        }
    });
    let x = random(&mut rng, &[2, 5, 6]);
    let (f, t, a, m, s, ls, ng, inst, plain, padded, n2, whole) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "tensors",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(f),
            dyn_f(t),
            dyn_f(a),
            dyn_f(m),
            dyn_f(s),
            dyn_f(ls),
            dyn_f(ng),
            dyn_f(inst),
            dyn_f(plain),
            dyn_f(padded),
            dyn_f(n2),
            dyn_f(whole),
        ],
    );
}

kiln::model! {
    /// Sums and means over several adjacent axes.
    struct SeveralAxes {
        input x: [B, 3, 4, 5];
        let spatial = mean(x, axis = (2, 3));
        let front = sum(x, axis = (-3, -2));
        output spatial, front;
    }
}

#[test]
fn reductions_over_several_axes_match() {
    let mut rng = rng();
    let model = SeveralAxes::<f64>::zeros();
    let x = random(&mut rng, &[2, 3, 4, 5]);
    let (spatial, front) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "several_axes",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(spatial), dyn_f(front)],
    );
}

kiln::model! {
    /// RMS norms, with PyTorch's default eps and a weight, and without the weight.
    struct RmsNorms {
        input x: [B, 5, 6];
        let scaled = rms_norm(x);
        let bare = rms_norm(scaled, eps = 1e-6, elementwise_affine = false);
        output scaled, bare;
    }
}

#[test]
fn rms_norms_match() {
    let mut rng = rng();
    let mut model = RmsNorms::<f64>::new(&mut rng);
    model
        .scaled
        .weight
        .iter_mut()
        .for_each(|w| *w = rng.random_range(0.5..1.5));
    let x = random(&mut rng, &[2, 5, 6]);
    let (scaled, bare) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "rms_norms",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(scaled), dyn_f(bare)],
    );
}

kiln::model! {
    /// Layer norms without a bias and without the affine map.
    struct NormOptions {
        input x: [B, 5, 6];
        let unbiased = layer_norm(x, bias = false);
        let bare = layer_norm(unbiased, elementwise_affine = false);
        output unbiased, bare;
    }
}

#[test]
fn layer_norms_without_bias_or_affine_map_match() {
    let mut rng = rng();
    let mut model = NormOptions::<f64>::new(&mut rng);
    model
        .unbiased
        .weight
        .iter_mut()
        .for_each(|w| *w = rng.random_range(0.5..1.5));
    let x = random(&mut rng, &[2, 5, 6]);
    let (unbiased, bare) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "norm_options",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(unbiased), dyn_f(bare)],
    );
}

kiln::model! {
    /// Bilinear upsampling with the corners aligned, by a scale and to a size (one pixel wide);
    /// adaptive max pooling to a size that tiles the input, and global.
    struct Aligned {
        input x: [B, 2, 3, 4];
        let scaled = upsample(x, scale = (2, 3), mode = bilinear, align_corners = true);
        let sized = upsample(x, size = (5, 1), mode = bilinear, align_corners = true);
        let tiled_max = adaptive_max_pool2d(scaled, (3, 4));
        let global_max = adaptive_max_pool2d(x, 1);
        output scaled, sized, tiled_max, global_max;
    }
}

#[test]
fn aligned_bilinear_upsampling_and_adaptive_max_pooling_match() {
    let mut rng = rng();
    let model = Aligned::<f64>::zeros();
    let x = random(&mut rng, &[2, 2, 3, 4]);
    let (scaled, sized, tiled_max, global_max) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "aligned",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(scaled),
            dyn_f(sized),
            dyn_f(tiled_max),
            dyn_f(global_max),
        ],
    );
}

kiln::model! {
    /// Convolutions, pooling (padding, ceil mode, count_include_pad), batch norm, dropout,
    /// adaptive pooling and upsampling.
    struct Vision {
        input x: [B, 4, 9, 8];
        let c1 = conv2d(x, 6, kernel = 3, padding = 1, groups = 2);
        let c2 = conv2d(c1, 4, kernel = 3, stride = 2, dilation = 2, padding = 2);
        let bn = relu(batch_norm(c1));
        let d = dropout(bn, 0.5);
        let mp = max_pool2d(d, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let ap = avg_pool2d(d, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false);
        let ai = avg_pool2d(d, kernel = 2, padding = 1);
        let act = relu6(6.0 * c1) + silu(c1) * hardsigmoid(3.0 * c1) + hardswish(4.0 * c1);
        let ct = conv_transpose2d(c2, 3, kernel = 3, stride = 2, padding = 1, output_padding = 1);
        // An output padding below the dilation but not the stride, and one beyond the padding.
        let ct_dilated = conv_transpose2d(c2, 2, kernel = 3, dilation = 2, padding = 1, output_padding = 1);
        let ct_unpadded = conv_transpose2d(c2, 2, kernel = 2, stride = 2, output_padding = 1);
        let g = adaptive_avg_pool2d(ct, 1);
        let a2 = adaptive_avg_pool2d(c1, (3, 4));
        let un = upsample(mp, scale = 2);
        let ub = upsample(ap, scale = 2, mode = bilinear);
        let us = upsample(c2, size = (6, 8), mode = bilinear);
        let head = linear(flatten(g), 3);
        let seg = softmax(c1, axis = 1);
        let log_seg = log_softmax(c2, axis = 1);
        let gn = group_norm(c1, groups = 3);
        output c2, act, mp, ap, ai, ct, ct_dilated, ct_unpadded, g, a2, un, ub, us, head, seg, log_seg, gn;
    }
}

#[test]
fn vision_ops_match() {
    let mut rng = rng();
    let mut model = Vision::<f64>::new(&mut rng);
    // Non-trivial group norm weights and biases, so that they are checked too.
    model.visit_params_mut(&mut |name, mut p| {
        if name.starts_with("gn") {
            p.iter_mut().for_each(|v| *v = rng.random_range(-1.5..1.5));
        }
    });
    // Running statistics away from (0, 1), so that inference mode is what is checked.
    model.visit_buffers_mut(&mut |name, mut b| {
        let range = if name.ends_with("running_var") {
            0.5..2.0
        } else {
            -0.5..0.5
        };
        b.iter_mut()
            .for_each(|v| *v = rng.random_range(range.clone()));
    });
    let x = random(&mut rng, &[2, 4, 9, 8]);
    let out = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    let (
        c2,
        act,
        mp,
        ap,
        ai,
        ct,
        ct_dilated,
        ct_unpadded,
        g,
        a2,
        un,
        ub,
        us,
        head,
        seg,
        log_seg,
        gn,
    ) = out;
    check(
        "vision",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(c2),
            dyn_f(act),
            dyn_f(mp),
            dyn_f(ap),
            dyn_f(ai),
            dyn_f(ct),
            dyn_f(ct_dilated),
            dyn_f(ct_unpadded),
            dyn_f(g),
            dyn_f(a2),
            dyn_f(un),
            dyn_f(ub),
            dyn_f(us),
            dyn_f(head),
            dyn_f(seg),
            dyn_f(log_seg),
            dyn_f(gn),
        ],
    );
}

kiln::model! {
    /// 1-d convolutions (grouped; strided and dilated; depthwise with `padding = same` and no
    /// bias) and batch norm on sequence batches [B, C, L], a max over the length, 1-d max and
    /// average pooling.
    struct Sequences {
        input x: [B, 4, 10];
        let c1 = conv1d(x, 6, kernel = 3, padding = 1, groups = 2);
        let bn = relu(batch_norm(c1));
        let c2 = conv1d(bn, 4, kernel = 3, stride = 2, dilation = 2, padding = 2);
        let dw = conv1d(c2, 4, kernel = 3, padding = same, groups = 4, bias = false);
        let head = linear(max(dw, axis = 2), 3);
        let mp = max_pool1d(c1, 3, stride = 2, padding = 1, ceil_mode = true);
        let ap = avg_pool1d(bn, kernel = 3, stride = 2, padding = 1, count_include_pad = false);
        output c1, bn, c2, dw, head, mp, ap;
    }
}

kiln::model! {
    /// A 1-d convolution and batch norms (with and without the affine map) over a symbolic
    /// length, then a causal convolution (all its padding at the start of ONNX's `pads`).
    struct SymbolicSequences {
        input x: [B, 4, T];
        let c = conv1d(x, 5, kernel = 5, padding = same);
        let n = batch_norm(c);
        let plain = batch_norm(c, affine = false);
        let causal = conv1d(plain, 3, kernel = 3, dilation = 2, padding = causal);
        output n, plain, causal;
    }
}

kiln::model! {
    /// `padding = same` with odd dilated spans: the extra row, column or position goes at the
    /// end of ONNX's `pads`. Circular padding of two axes (slices and concatenations), and
    /// negative pads (a `Slice` before the padding).
    struct EvenSame {
        input x: [B, 3, 6, 5];
        let c = conv2d(x, 4, kernel = (2, 4), padding = same);
        let d = conv2d(c, 2, kernel = 2, dilation = (3, 1), padding = same, groups = 2);
        let s = conv1d(mean(d, axis = 2), 3, kernel = 4, padding = same);
        let w = pad(x, (2, 1, 6, 0), mode = circular);
        let crop = pad(x, (-1, -2, 0, -3));
        let shifted = pad(x, (-2, 1), mode = reflect);
        let wrapped = pad(x, (-1, 2, 1, -2), mode = circular);
        output c, d, s, w, crop, shifted, wrapped;
    }
}

#[test]
fn even_same_and_circular_padding_match() {
    let mut rng = rng();
    let model = EvenSame::<f64>::new(&mut rng);
    let x = random(&mut rng, &[2, 3, 6, 5]);
    let (c, d, s, w, crop, shifted, wrapped) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "even_same",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(c),
            dyn_f(d),
            dyn_f(s),
            dyn_f(w),
            dyn_f(crop),
            dyn_f(shifted),
            dyn_f(wrapped),
        ],
    );
}

kiln::model! {
    /// Image sizes computed from symbolic ones (`4 * H` pooled, convolved, upsampled and
    /// padded): a small U-Net, crops and wrapping pads of symbolic axes (slices counted from
    /// the end), and global pooling to a fixed size.
    struct AnySize {
        input x: [B, 2, 4 * H, 4 * W];
        let c1 = relu(conv2d(x, 3, kernel = 3, padding = 1));
        let p1 = max_pool2d(c1, 2);
        let c2 = conv2d(p1, 4, kernel = 3, stride = 2, padding = 1);
        let c3 = conv2d(c2, 4, kernel = 3);
        let u3 = conv_transpose2d(c3, 4, kernel = 3);
        let u2 = upsample(u3, scale = 2, mode = bilinear);
        let m = concat(u2, p1, axis = 1);
        let u1 = conv_transpose2d(m, 2, kernel = 2, stride = 2);
        let crop = pad(u1, (-1, -2, 0, -3));
        let wrapped = pad(crop, (2, 1, 1, 0), mode = circular);
        let mirrored = pad(x, (1, 2, 2, 1), mode = reflect);
        let pooled = flatten(adaptive_avg_pool2d(mirrored, 1));
        output u1, wrapped, pooled;
    }
}

#[test]
fn sizes_computed_from_symbolic_ones_match() {
    let mut rng = rng();
    let model = AnySize::<f64>::new(&mut rng);
    for (h, w) in [(12, 16), (20, 12)] {
        let x = random(&mut rng, &[2, 2, h, w]);
        let (u1, wrapped, pooled) = model
            .forward(x.view().into_dimensionality().unwrap())
            .expect("forward");
        check(
            &format!("any_size_{h}x{w}"),
            &model,
            &[Feed::Float(x)],
            &[dyn_f(u1), dyn_f(wrapped), dyn_f(pooled)],
        );
    }
}

kiln::model! {
    /// `select` and `narrow` along a symbolic time axis (from either end, to the end, and to
    /// a number of positions before it) and a fixed one, and `concat` along the symbolic
    /// axis (`T` and `T - 1` joined into `2 * T - 1`).
    struct Windows {
        input x: [B, T, 4];
        let h = linear(x, 6);
        let last = select(h, axis = 1, index = -1);
        let first = select(h, 1, 0);
        let tail = narrow(h, axis = 1, start = -2, length = 2);
        let inner = narrow(h, axis = 1, start = -3, length = 2);
        let head = narrow(h, axis = 1, start = 1, length = 2);
        let feats = narrow(h, axis = 2, start = -4, length = 3);
        let rest = narrow(h, axis = 1, start = 2);
        let rest_feats = narrow(h, axis = 2, start = 1);
        let previous = narrow(h, axis = 1, start = 0, end = -1);
        let middle = narrow(h, axis = 1, start = 1, end = -2);
        let joined = concat(h, previous, axis = 1);
        output last, first, tail, inner, head, feats, rest, rest_feats, previous, middle, joined;
    }
}

#[test]
fn narrow_and_select_match() {
    let mut rng = rng();
    let model = Windows::<f64>::new(&mut rng);
    let x = random(&mut rng, &[2, 5, 4]);
    let (last, first, tail, inner, head, feats, rest, rest_feats, previous, middle, joined) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    assert_eq!(rest.shape(), &[2, 3, 6]);
    assert_eq!(rest_feats.shape(), &[2, 5, 5]);
    assert_eq!(previous.shape(), &[2, 4, 6]);
    assert_eq!(middle.shape(), &[2, 2, 6]);
    assert_eq!(joined.shape(), &[2, 9, 6]);
    check(
        "windows",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(last),
            dyn_f(first),
            dyn_f(tail),
            dyn_f(inner),
            dyn_f(head),
            dyn_f(feats),
            dyn_f(rest),
            dyn_f(rest_feats),
            dyn_f(previous),
            dyn_f(middle),
            dyn_f(joined),
        ],
    );
}

kiln::model! {
    /// `chunk` (uneven: 7 into 3, 3, 1) and `split` by sections, a part skipped.
    struct Parts {
        input x: [B, T, 7];
        let (a, b, c) = chunk(x, 3, axis = 2);
        let (_, wide) = split(x, (2, 5), axis = -1);
        let g = a * sigmoid(b);
        output g, c, wide;
    }
}

#[test]
fn chunk_and_split_match() {
    let mut rng = rng();
    let model = Parts::<f64>::new(&mut rng);
    let x = random(&mut rng, &[2, 3, 7]);
    let (g, c, wide) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "parts",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(g), dyn_f(c), dyn_f(wide)],
    );
}

/// Running statistics away from (0, 1), so that inference mode is what is checked.
fn random_running_statistics<M: Model<f64>>(model: &mut M, rng: &mut StdRng) {
    model.visit_buffers_mut(&mut |name, mut b| {
        let range = if name.ends_with("running_var") {
            0.5..2.0
        } else {
            -0.5..0.5
        };
        b.iter_mut()
            .for_each(|v| *v = rng.random_range(range.clone()));
    });
}

#[test]
fn sequence_ops_match() {
    let mut rng = rng();
    let mut model = Sequences::<f64>::new(&mut rng);
    random_running_statistics(&mut model, &mut rng);
    let x = random(&mut rng, &[2, 4, 10]);
    let (c1, bn, c2, dw, head, mp, ap) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "sequences",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(c1),
            dyn_f(bn),
            dyn_f(c2),
            dyn_f(dw),
            dyn_f(head),
            dyn_f(mp),
            dyn_f(ap),
        ],
    );

    let mut model = SymbolicSequences::<f64>::new(&mut rng);
    random_running_statistics(&mut model, &mut rng);
    let x = random(&mut rng, &[3, 4, 7]);
    let (n, plain, causal) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "symbolic_sequences",
        &model,
        &[Feed::Float(x)],
        &[dyn_f(n), dyn_f(plain), dyn_f(causal)],
    );
}

kiln::model! {
    /// Token models: embeddings, a causal mask, a tied head and a mean over real lengths.
    struct Tokens {
        input tokens: [B, T] tokens 11;
        input len: [B] lengths T;
        let wte = embedding(tokens, 8, padding_idx = 0);
        let wpe = position_embedding(tokens, 8, max_len = 16);
        let x = wte + wpe;
        let scores = matmul(x, transpose(x, 1, 2)) * 0.3;
        let attn = softmax(causal_mask(scores));
        let mixed = matmul(attn, x);
        let logits = linear(mixed, 11, tied = wte);
        let pooled = mean(mixed, axis = 1, lengths = len);
        output logits, pooled;
    }
}

#[test]
fn token_ops_match() {
    let mut rng = rng();
    let model = Tokens::<f64>::new(&mut rng);
    let (b, t) = (3, 7);
    let tokens = ArrayD::from_shape_fn(IxDyn(&[b, t]), |_| rng.random_range(0..11usize));
    let len = ArrayD::from_shape_vec(IxDyn(&[b]), vec![7usize, 3, 1]).unwrap();
    let (logits, pooled) = model
        .forward(
            tokens.view().into_dimensionality().unwrap(),
            len.view().into_dimensionality().unwrap(),
        )
        .expect("forward");
    check(
        "tokens",
        &model,
        &[Feed::Ints(tokens), Feed::Ints(len)],
        &[dyn_f(logits), dyn_f(pooled)],
    );
}

kiln::model! {
    /// LLaMA-style attention: rotary position embeddings on causal self-attention (LLaMA's
    /// base and LLaMA 3's), over a symbolic length.
    struct RotaryHeads {
        input x: [B, T, 16];
        let a = multi_head_attention(x, heads = 2, causal = true, rotary = true);
        let b = multi_head_attention(a, heads = 4, causal = true, rotary = true, rotary_base = 500000);
        output b;
    }
}

#[test]
fn rotary_attention_matches() {
    let mut rng = rng();
    let model = RotaryHeads::<f64>::new(&mut rng);
    // A longer sequence than the other models': the angles grow with the position.
    for len in [1, 5, 40] {
        let x = random(&mut rng, &[3, len, 16]);
        let out = model
            .forward(x.view().into_dimensionality().unwrap())
            .expect("forward");
        check("rotary", &model, &[Feed::Float(x)], &[dyn_f(out)]);
    }
}

kiln::model! {
    /// A small GPT: embeddings, two causal attention blocks (unrolled; attention dropout,
    /// which inference leaves out), a tied head.
    struct Gpt {
        input tokens: [B, T] tokens 13;
        let wte = embedding(tokens, 8);
        let wpe = position_embedding(tokens, 8, max_len = 12);
        let x = wte + wpe;
        let h = Layer(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 13, bias = false, tied = wte);
        output logits;

        block Layer(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 2, causal = true, dropout = 0.1);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let up = gelu(linear(ln_2, 16));
            let down = dropout(linear(up, 8), 0.1);
            let out = x1 + down;
            output out;
        }
    }
}

#[test]
fn attention_blocks_match() {
    let mut rng = rng();
    let model = Gpt::<f64>::new(&mut rng);
    let tokens = ArrayD::from_shape_fn(IxDyn(&[2, 6]), |_| rng.random_range(0..13usize));
    let logits = model
        .forward(tokens.view().into_dimensionality().unwrap())
        .expect("forward");
    check("gpt", &model, &[Feed::Ints(tokens)], &[dyn_f(logits)]);
}

kiln::model! {
    /// Batch norm inside repeated blocks: each block's running statistics are its own.
    struct NormedBlocks {
        input x: [B, 6];
        let h = Stage(x, repeat = 2);
        let pred = linear(h, 3);
        output pred;

        block Stage(x) {
            let z = linear(x, 6);
            let n = batch_norm(z);
            let out = x + tanh(n);
            output out;
        }
    }
}

#[test]
fn blocks_with_batch_norm_match() {
    let mut rng = rng();
    let mut model = NormedBlocks::<f64>::new(&mut rng);
    model.visit_buffers_mut(&mut |name, mut v| {
        for e in v.iter_mut() {
            *e = if name.ends_with("running_var") {
                rng.random_range(0.5..1.5)
            } else {
                rng.random_range(-0.5..0.5)
            };
        }
    });
    let x = random(&mut rng, &[4, 6]);
    let pred = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check("normed_blocks", &model, &[Feed::Float(x)], &[dyn_f(pred)]);
}

kiln::model! {
    /// Cross-attention over a padded memory, without biases, and self-attention with lengths.
    struct Cross {
        input x: [B, T, 8];
        input memory: [B, S, 8];
        input memory_len: [B] lengths S;
        input len: [B] lengths T;
        let a = multi_head_attention(x, memory, heads = 4, lengths = memory_len, bias = false);
        let s = multi_head_attention(a, heads = 2, lengths = len);
        output a, s;
    }
}

#[test]
fn cross_attention_with_lengths_matches() {
    let mut rng = rng();
    let model = Cross::<f64>::new(&mut rng);
    let x = random(&mut rng, &[3, 4, 8]);
    let memory = random(&mut rng, &[3, 5, 8]);
    let memory_len = ArrayD::from_shape_vec(IxDyn(&[3]), vec![5usize, 2, 1]).unwrap();
    let len = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1usize, 4, 3]).unwrap();
    let (a, s) = model
        .forward(
            x.view().into_dimensionality().unwrap(),
            memory.view().into_dimensionality().unwrap(),
            memory_len.view().into_dimensionality().unwrap(),
            len.view().into_dimensionality().unwrap(),
        )
        .expect("forward");
    check(
        "cross",
        &model,
        &[
            Feed::Float(x),
            Feed::Float(memory),
            Feed::Ints(memory_len),
            Feed::Ints(len),
        ],
        &[dyn_f(a), dyn_f(s)],
    );
}

kiln::model! {
    /// Recurrent layers: stacked bidirectional LSTM, GRU and RNN outputs, and last states.
    /// (tract ignores an ONNX RNN's `activations` and runs `tanh`: the relu RNN is in
    /// `RecurrentLengths`, whose values onnxruntime checks.)
    struct Recurrent {
        input x: [B, T, 5];
        let seq = lstm(x, 4, layers = 2, bidirectional = true);
        let g = gru(x, 3, bidirectional = true, final_state = true);
        let l = lstm(seq, 3, final_state = true);
        let gs = gru(x, 3, layers = 2);
        let r = rnn(x, 3, layers = 2, bidirectional = true);
        let rr = rnn(seq, 2, bidirectional = true, final_state = true);
        output seq, g, l, gs, r, rr;
    }
}

#[test]
fn recurrent_layers_match() {
    let mut rng = rng();
    let model = Recurrent::<f64>::new(&mut rng);
    let x = random(&mut rng, &[3, 6, 5]);
    let (seq, g, l, gs, r, rr) = model
        .forward(x.view().into_dimensionality().unwrap())
        .expect("forward");
    check(
        "recurrent",
        &model,
        &[Feed::Float(x)],
        &[
            dyn_f(seq),
            dyn_f(g),
            dyn_f(l),
            dyn_f(gs),
            dyn_f(r),
            dyn_f(rr),
        ],
    );
}

kiln::model! {
    /// Recurrent layers from given states (ONNX `initial_h`, `initial_c`): a decoder started
    /// by an encoder's state `[B, H]`, and a two-layer bidirectional LSTM from `[L·D, B, H]`;
    /// an LSTM's final hidden and cell states (`Y_h`, `Y_c`), of the last layer or of every
    /// layer.
    struct RecurrentStarts {
        input src: [B, S, 5];
        input tgt: [B, T, 3];
        input h: [4, B, 2];
        input c: [4, B, 2];
        let enc = gru(src, 4, final_state = true);
        let dec = gru(tgt, 4, h0 = enc);
        let cells = tanh(enc);
        let post = lstm(dec, 4, h0 = enc, c0 = cells);
        let deep = lstm(post, 2, layers = 2, bidirectional = true, h0 = h, c0 = c);
        let plain = rnn(tgt, 4, h0 = enc);
        let both = lstm(src, 2, bidirectional = true, final_state = true, final_cells = true);
        let every = gru(src, 2, layers = 2, bidirectional = true, final_state = true, all_layers = true);
        let stacked = lstm(src, 2, layers = 2, final_state = true, all_layers = true, final_cells = true);
        output dec, post, deep, plain, both, every, stacked;
    }
}

#[test]
fn recurrent_initial_states_match() {
    let mut rng = rng();
    let model = RecurrentStarts::<f64>::new(&mut rng);
    let src = random(&mut rng, &[3, 5, 5]);
    let tgt = random(&mut rng, &[3, 4, 3]);
    let h = random(&mut rng, &[4, 3, 2]);
    let c = random(&mut rng, &[4, 3, 2]);
    let (dec, post, deep, plain, both, every, stacked) = model
        .forward(
            src.view().into_dimensionality().unwrap(),
            tgt.view().into_dimensionality().unwrap(),
            h.view().into_dimensionality().unwrap(),
            c.view().into_dimensionality().unwrap(),
        )
        .expect("forward");
    check(
        "recurrent_starts",
        &model,
        &[
            Feed::Float(src),
            Feed::Float(tgt),
            Feed::Float(h),
            Feed::Float(c),
        ],
        &[
            dyn_f(dec),
            dyn_f(post),
            dyn_f(deep),
            dyn_f(plain),
            dyn_f(both),
            dyn_f(every),
            dyn_f(stacked),
        ],
    );
}

kiln::model! {
    /// Recurrent layers over padded sequences (ONNX `sequence_lens`).
    struct RecurrentLengths {
        input x: [B, T, 5];
        input len: [B] lengths T;
        let g = gru(x, 3, bidirectional = true, lengths = len, final_state = true);
        let l = lstm(x, 3, lengths = len);
        let r = rnn(x, 3, nonlinearity = relu, bidirectional = true, lengths = len);
        output g, l, r;
    }
}

/// tract runs ONNX LSTM/GRU/RNN only with a constant `sequence_lens` ("Non constant seq_len is
/// not supported"), so the padded variant is checked here for its structure: the lengths
/// reach each recurrent node as int32 `sequence_lens`. (Its values were checked with
/// onnxruntime: `KILN_ONNX_DUMP=DIR` writes every model of this file with its inputs and
/// kiln's outputs, for `python conformance/tests/onnx_check.py DIR`.)
#[test]
fn recurrent_lengths_feed_sequence_lens() {
    let mut rng = rng();
    let model = RecurrentLengths::<f64>::new(&mut rng);
    let x = random(&mut rng, &[3, 6, 5]);
    let len = ArrayD::from_shape_vec(IxDyn(&[3]), vec![6usize, 2, 4]).unwrap();
    let (g, l, r) = model
        .forward(
            x.view().into_dimensionality().unwrap(),
            len.view().into_dimensionality().unwrap(),
        )
        .expect("forward");
    dump(
        "recurrent_lengths",
        &model,
        &[Feed::Float(x), Feed::Ints(len)],
        &[dyn_f(g), dyn_f(l), dyn_f(r)],
    );
    let graph = model.onnx_graph().expect("exportable");
    let recurrent: Vec<_> = graph
        .nodes
        .iter()
        .filter(|n| ["GRU", "LSTM", "RNN"].contains(&n.op_type))
        .collect();
    assert_eq!(recurrent.len(), 3);
    // One activation per direction; tanh, ONNX's default, is not written.
    let activations = (
        "activations",
        kiln::onnx::OnnxAttr::Strings(&["Relu", "Relu"]),
    );
    assert!(recurrent[2].attrs.contains(&activations));
    for node in recurrent {
        let cast = graph
            .nodes
            .iter()
            .find(|n| n.outputs == [node.inputs[4]])
            .expect("sequence_lens is computed");
        assert_eq!(cast.op_type, "Cast", "{}", node.name);
        assert_eq!(cast.inputs, ["len"]);
        assert_eq!(cast.attrs, [("to", kiln::onnx::OnnxAttr::Int(6))]);
    }
    // The file itself is written and read back by tract's parser.
    let path = temp_path("recurrent_lengths");
    kiln::onnx::export(&model, &path).expect("export");
    tract_onnx::onnx()
        .model_for_path(&path)
        .expect("tract parses the file");
    let _ = std::fs::remove_file(&path);
}

kiln::model! {
    /// PReLU: a slope per channel (ONNX `PRelu` with a `[C, 1, 1]` slope), one shared slope,
    /// and a slope per feature of a sequence through the transposes PyTorch users write.
    struct Slopes {
        input x: [B, 3, 5, 4];
        input s: [B, T, 6];
        let c = prelu(x, num_parameters = 3, init = -0.2);
        let d = prelu(c, init = 0.4);
        let p = transpose(prelu(transpose(s, 1, 2), num_parameters = 6), 1, 2);
        output c, d, p;
    }
}

#[test]
fn prelu_slopes_match() {
    let mut rng = rng();
    let mut model = Slopes::<f64>::new(&mut rng);
    // Slopes of their own per channel.
    for (layer, step) in [(&mut model.c, 0.3), (&mut model.p, -0.1)] {
        layer
            .weight
            .iter_mut()
            .enumerate()
            .for_each(|(i, a)| *a += step * i as f64);
    }
    let x = random(&mut rng, &[2, 3, 5, 4]);
    let s = random(&mut rng, &[2, 3, 6]);
    let (c, d, p) = model
        .forward(
            x.view().into_dimensionality().unwrap(),
            s.view().into_dimensionality().unwrap(),
        )
        .expect("forward");
    check(
        "slopes",
        &model,
        &[Feed::Float(x), Feed::Float(s)],
        &[dyn_f(c), dyn_f(d), dyn_f(p)],
    );
}
