//! Parity with PyTorch on the fixtures in `tests/data/` (copied from the project's shared
//! fixtures; PyTorch computed them, see each case's manifest): checkpoint loading of real
//! `state_dict` files, forward values, losses and gradients of small networks assembled by
//! hand from the kernels, and three steps of every optimizer.

use kiln_runtime::io::{self, TensorFile};
use kiln_runtime::kernels::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward,
    log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward,
};
use kiln_runtime::layers::Linear;
use kiln_runtime::loss::{
    bce_with_logits, bce_with_logits_backward, cross_entropy, cross_entropy_backward, mse,
    mse_backward,
};
use kiln_runtime::{Adam, AdamW, Float, Model, Optimizer, RmsProp, Sgd, Summary};
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, ArrayViewMutD, Ix1, Ix2};
use std::path::PathBuf;

fn data(case: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case)
        .join(file)
}

#[derive(Clone, Copy, Debug)]
enum Head {
    /// MSE against `target.y`.
    Mse,
    /// BCE with logits against `target.y`.
    Bce,
    /// Cross-entropy against `target.label`.
    CrossEntropy,
    /// `loss = Σ log_softmax(logits) ⊙ target.r`, output `lp`.
    LogSoftmaxDot,
    /// `loss = Σ softmax(logits) ⊙ target.r`, output `probs`.
    SoftmaxDot,
}

struct Case {
    name: &'static str,
    /// Per layer: (layer name, weight name, bias name).
    layers: &'static [(&'static str, &'static str, &'static str)],
    /// The output names of the layers: `z` (pre-activation) and, for hidden layers, `h`.
    outputs: &'static [(&'static str, Option<&'static str>)],
    head: Head,
    has_state_dict: bool,
    has_optim: bool,
}

const LINREG: Case = Case {
    name: "linreg",
    layers: &[("linear", "linear.weight", "linear.bias")],
    outputs: &[("pred", None)],
    head: Head::Mse,
    has_state_dict: true,
    has_optim: true,
};

const BCE: Case = Case {
    name: "bce",
    layers: &[
        ("fc1", "fc1.weight", "fc1.bias"),
        ("fc2", "fc2.weight", "fc2.bias"),
    ],
    outputs: &[("z1", Some("h1")), ("logits", None)],
    head: Head::Bce,
    has_state_dict: true,
    has_optim: true,
};

const MLP_RELU: Case = Case {
    name: "mlp_relu",
    layers: &[
        ("fc1", "fc1.weight", "fc1.bias"),
        ("fc2", "fc2.weight", "fc2.bias"),
        ("fc3", "fc3.weight", "fc3.bias"),
    ],
    outputs: &[("z1", Some("h1")), ("z2", Some("h2")), ("logits", None)],
    head: Head::CrossEntropy,
    has_state_dict: true,
    has_optim: false,
};

const LOGSOFTMAX: Case = Case {
    name: "logsoftmax",
    layers: &[("fc", "fc.weight", "fc.bias")],
    outputs: &[("logits", None)],
    head: Head::LogSoftmaxDot,
    has_state_dict: false,
    has_optim: false,
};

const SOFTMAX_OUT: Case = Case {
    name: "softmax_out",
    layers: &[("fc", "fc.weight", "fc.bias")],
    outputs: &[("logits", None)],
    head: Head::SoftmaxDot,
    has_state_dict: false,
    has_optim: false,
};

/// A stack of linear layers with ReLU between them, named as in the fixture.
struct Net<F> {
    case: &'static Case,
    layers: Vec<Linear<F>>,
}

struct NetGrads<F> {
    layers: Vec<(Array2<F>, Array1<F>)>,
}

impl<F: Float> Model<F> for Net<F> {
    type Grads = NetGrads<F>;

    fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {
        for (layer, &(_, w, b)) in self.layers.iter().zip(self.case.layers) {
            f(w, layer.weight.view().into_dyn());
            if let Some(bias) = &layer.bias {
                f(b, bias.view().into_dyn());
            }
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>)) {
        for (layer, &(_, w, b)) in self.layers.iter_mut().zip(self.case.layers) {
            f(w, layer.weight.view_mut().into_dyn());
            if let Some(bias) = &mut layer.bias {
                f(b, bias.view_mut().into_dyn());
            }
        }
    }

    fn visit_grads(grads: &NetGrads<F>, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {
        for (i, (w, b)) in grads.layers.iter().enumerate() {
            f(["w0", "w1", "w2"][i], w.view().into_dyn());
            f(["b0", "b1", "b2"][i], b.view().into_dyn());
        }
    }

    fn visit_grads_mut(
        grads: &mut NetGrads<F>,
        f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>),
    ) {
        for (i, (w, b)) in grads.layers.iter_mut().enumerate() {
            f(["w0", "w1", "w2"][i], w.view_mut().into_dyn());
            f(["b0", "b1", "b2"][i], b.view_mut().into_dyn());
        }
    }

    fn visit_params_with_grads(
        &mut self,
        grads: &NetGrads<F>,
        f: &mut dyn FnMut(usize, &mut [F], &[F]),
    ) {
        for (i, (layer, (dw, db))) in self.layers.iter_mut().zip(&grads.layers).enumerate() {
            f(
                2 * i,
                layer.weight.as_slice_mut().unwrap(),
                dw.as_slice().unwrap(),
            );
            f(
                2 * i + 1,
                layer.bias.as_mut().unwrap().as_slice_mut().unwrap(),
                db.as_slice().unwrap(),
            );
        }
    }

    fn zero_grads(&self) -> NetGrads<F> {
        NetGrads {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    (
                        Array2::zeros(l.weight.dim()),
                        Array1::zeros(l.out_features()),
                    )
                })
                .collect(),
        }
    }

    fn num_params(&self) -> usize {
        self.layers.iter().map(Linear::num_params).sum()
    }

    fn summary(&self) -> Summary {
        Summary {
            model: "Net",
            dtype: F::NAME,
            rows: vec![],
            ..Default::default()
        }
    }

    fn graph(&self) -> &'static str {
        ""
    }
}

/// Everything one forward + backward pass produces.
struct Pass<F> {
    loss: F,
    /// (name, value) of every named step, in order.
    outputs: Vec<(&'static str, Vec<F>)>,
    grads: NetGrads<F>,
    grad_input: Vec<F>,
}

struct Batch<F> {
    x: Vec<F>,
    rows: usize,
    y: Vec<F>,
    labels: Vec<usize>,
}

fn flat<F: Float>(a: &ArrayD<F>) -> Vec<F> {
    a.iter().copied().collect()
}

impl<F: Float> Net<F> {
    fn pass(&self, batch: &Batch<F>) -> Pass<F> {
        let rows = batch.rows;
        let n = self.layers.len();
        // Forward, keeping each layer's input and pre-activation for the backward pass.
        let mut inputs = vec![batch.x.clone()];
        let mut pre = Vec::new();
        let mut outputs = Vec::new();
        for (i, (layer, &(z_name, h_name))) in self.layers.iter().zip(self.case.outputs).enumerate()
        {
            let (fan_in, fan_out) = (layer.in_features(), layer.out_features());
            let mut z = vec![F::ZERO; rows * fan_out];
            let bias = layer.bias.as_ref().map(|b| b.as_slice().unwrap());
            linear_forward(
                &inputs[i],
                layer.weight.as_slice().unwrap(),
                bias,
                rows,
                fan_in,
                fan_out,
                &mut z,
            );
            outputs.push((z_name, z.clone()));
            if i + 1 < n {
                let h: Vec<F> = z.iter().map(|&v| v.max(F::ZERO)).collect();
                outputs.push((h_name.unwrap(), h.clone()));
                inputs.push(h);
            }
            pre.push(z);
        }
        let logits = &pre[n - 1];
        let classes = self.layers[n - 1].out_features();
        let mut d = vec![F::ZERO; logits.len()];
        let loss = match self.case.head {
            Head::Mse => {
                mse_backward(logits, &batch.y, F::ONE, &mut d, false);
                mse(logits, &batch.y)
            }
            Head::Bce => {
                bce_with_logits_backward(logits, &batch.y, F::ONE, &mut d, false);
                bce_with_logits(logits, &batch.y)
            }
            Head::CrossEntropy => {
                cross_entropy_backward(logits, rows, classes, &batch.labels, F::ONE, &mut d, false);
                cross_entropy(logits, rows, classes, &batch.labels)
            }
            Head::LogSoftmaxDot | Head::SoftmaxDot => {
                let mut p = vec![F::ZERO; logits.len()];
                let log = matches!(self.case.head, Head::LogSoftmaxDot);
                if log {
                    log_softmax_forward(logits, rows, classes, &mut p);
                    log_softmax_backward(&p, &batch.y, rows, classes, &mut d, false);
                } else {
                    softmax_forward(logits, rows, classes, &mut p);
                    softmax_backward(&p, &batch.y, rows, classes, &mut d, false);
                }
                let loss = p.iter().zip(&batch.y).map(|(&a, &b)| a * b).sum();
                outputs.push((if log { "lp" } else { "probs" }, p));
                loss
            }
        };
        // Backward through the layers.
        let mut grads = self.zero_grads();
        let mut grad_input = Vec::new();
        for i in (0..n).rev() {
            let layer = &self.layers[i];
            let (fan_in, fan_out) = (layer.in_features(), layer.out_features());
            let (dw, db) = &mut grads.layers[i];
            linear_backward_weight(
                &inputs[i],
                &d,
                rows,
                fan_in,
                fan_out,
                dw.as_slice_mut().unwrap(),
                false,
            );
            linear_backward_bias(&d, rows, fan_out, db.as_slice_mut().unwrap(), false);
            let mut dx = vec![F::ZERO; rows * fan_in];
            linear_backward_input(
                &d,
                layer.weight.as_slice().unwrap(),
                rows,
                fan_in,
                fan_out,
                &mut dx,
                false,
            );
            if i > 0 {
                // ReLU: the derivative is taken as 0 where the pre-activation is ≤ 0.
                for (g, &z) in dx.iter_mut().zip(&pre[i - 1]) {
                    if z <= F::ZERO {
                        *g = F::ZERO;
                    }
                }
                d = dx;
            } else {
                grad_input = dx;
            }
        }
        Pass {
            loss,
            outputs,
            grads,
            grad_input,
        }
    }
}

struct Tolerance {
    rtol: f64,
    atol: f64,
}

fn tolerance<F: Float>() -> Tolerance {
    // The manifests' tolerance hints.
    if F::NAME == "f64" {
        Tolerance {
            rtol: 1e-9,
            atol: 1e-12,
        }
    } else {
        Tolerance {
            rtol: 1e-4,
            atol: 1e-5,
        }
    }
}

#[track_caller]
fn assert_matches<F: Float>(got: &[F], want: &ArrayD<F>, what: &str) {
    let tol = tolerance::<F>();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        assert!(
            (g - w).abs() <= tol.atol + tol.rtol * w.abs(),
            "{what}[{i}]: got {g:e}, torch {w:e}"
        );
    }
}

fn dtype_prefix<F: Float>() -> &'static str {
    F::NAME
}

/// Builds the network at the fixture's initial parameters: loaded with `io::load` from the
/// PyTorch-written `state_dict` file where the case has one (and compared with `param.*`
/// bit for bit), else taken from `param.*`.
fn initial_net<F: Float>(case: &'static Case, core: &TensorFile) -> Net<F> {
    let mut net = Net {
        case,
        layers: case
            .layers
            .iter()
            .map(|&(layer, _, _)| {
                let shape = core.shape(&format!("param.{layer}.weight")).unwrap();
                Linear::zeros(shape[1], shape[0], true)
            })
            .collect(),
    };
    if case.has_state_dict {
        let path = data(
            case.name,
            &format!("{}.state_dict.safetensors", dtype_prefix::<F>()),
        );
        io::load(&mut net, &path).unwrap();
        for (layer, &(name, _, _)) in net.layers.iter().zip(case.layers) {
            let w = core.get::<F>(&format!("param.{name}.weight")).unwrap();
            let b = core.get::<F>(&format!("param.{name}.bias")).unwrap();
            assert_eq!(
                layer.weight,
                w.into_dimensionality::<Ix2>().unwrap(),
                "{name}.weight"
            );
            assert_eq!(
                layer.bias.as_ref().unwrap(),
                &b.into_dimensionality::<Ix1>().unwrap(),
                "{name}.bias"
            );
        }
    } else {
        for (layer, &(name, _, _)) in net.layers.iter_mut().zip(case.layers) {
            layer.weight = core
                .get::<F>(&format!("param.{name}.weight"))
                .unwrap()
                .into_dimensionality()
                .unwrap();
            layer.bias = Some(
                core.get::<F>(&format!("param.{name}.bias"))
                    .unwrap()
                    .into_dimensionality()
                    .unwrap(),
            );
        }
    }
    net
}

fn batch<F: Float>(case: &Case, core: &TensorFile) -> Batch<F> {
    let x = core.get::<F>("input.x").unwrap();
    let rows = x.shape()[0];
    let (y, labels) = match case.head {
        Head::CrossEntropy => (Vec::new(), core.labels("target.label").unwrap()),
        Head::Mse | Head::Bce => (flat(&core.get::<F>("target.y").unwrap()), Vec::new()),
        Head::LogSoftmaxDot | Head::SoftmaxDot => {
            (flat(&core.get::<F>("target.r").unwrap()), Vec::new())
        }
    };
    Batch {
        x: flat(&x),
        rows,
        y,
        labels,
    }
}

fn check_forward_backward<F: Float>(case: &'static Case) {
    let core = TensorFile::open(data(case.name, &format!("{}.safetensors", F::NAME))).unwrap();
    let net = initial_net::<F>(case, &core);
    let batch = batch::<F>(case, &core);
    let pass = net.pass(&batch);
    let what = |s: &str| format!("{} {} {s}", case.name, F::NAME);
    assert_matches(&[pass.loss], &core.get::<F>("loss").unwrap(), &what("loss"));
    for (name, value) in &pass.outputs {
        assert_matches(
            value,
            &core.get::<F>(&format!("output.{name}")).unwrap(),
            &what(name),
        );
    }
    for ((dw, db), &(layer, _, _)) in pass.grads.layers.iter().zip(case.layers) {
        let want_w = core.get::<F>(&format!("grad.{layer}.weight")).unwrap();
        assert_matches(
            dw.as_slice().unwrap(),
            &want_w,
            &what(&format!("grad {layer}.weight")),
        );
        let want_b = core.get::<F>(&format!("grad.{layer}.bias")).unwrap();
        assert_matches(
            db.as_slice().unwrap(),
            &want_b,
            &what(&format!("grad {layer}.bias")),
        );
    }
    assert_matches(
        &pass.grad_input,
        &core.get::<F>("grad.input.x").unwrap(),
        &what("grad input.x"),
    );
}

fn check_optimizer<F: Float, O: Optimizer<F>>(case: &'static Case, key: &str, mut opt: O) {
    let core = TensorFile::open(data(case.name, &format!("{}.safetensors", F::NAME))).unwrap();
    let after = TensorFile::open(data(
        case.name,
        &format!("{}.optim.{key}.safetensors", F::NAME),
    ))
    .unwrap();
    let mut net = initial_net::<F>(case, &core);
    let batch = batch::<F>(case, &core);
    for step in 1..=3 {
        let pass = net.pass(&batch);
        opt.step(&mut net, &pass.grads);
        for (layer, &(name, _, _)) in net.layers.iter().zip(case.layers) {
            let what = format!("{} {} {key} step {step} {name}", case.name, F::NAME);
            let w = after
                .get::<F>(&format!("after.{key}.step{step}.{name}.weight"))
                .unwrap();
            assert_matches(
                layer.weight.as_slice().unwrap(),
                &w,
                &format!("{what}.weight"),
            );
            let b = after
                .get::<F>(&format!("after.{key}.step{step}.{name}.bias"))
                .unwrap();
            assert_matches(
                layer.bias.as_ref().unwrap().as_slice().unwrap(),
                &b,
                &format!("{what}.bias"),
            );
        }
    }
}

fn check_all_optimizers<F: Float>(case: &'static Case) {
    assert!(case.has_optim);
    check_optimizer::<F, _>(case, "sgd", Sgd::new(0.1));
    check_optimizer::<F, _>(case, "sgd_momentum", Sgd::new(0.1).momentum(0.9));
    check_optimizer::<F, _>(
        case,
        "sgd_nesterov",
        Sgd::new(0.1).momentum(0.9).nesterov(true),
    );
    check_optimizer::<F, _>(case, "adam", Adam::new(1e-2));
    check_optimizer::<F, _>(case, "adamw", AdamW::new(1e-2).weight_decay(0.01));
    check_optimizer::<F, _>(case, "rmsprop", RmsProp::new(1e-2));
}

#[test]
fn linreg_forward_backward() {
    check_forward_backward::<f64>(&LINREG);
    check_forward_backward::<f32>(&LINREG);
}

#[test]
fn bce_forward_backward() {
    check_forward_backward::<f64>(&BCE);
    check_forward_backward::<f32>(&BCE);
}

#[test]
fn mlp_relu_cross_entropy_forward_backward() {
    check_forward_backward::<f64>(&MLP_RELU);
    check_forward_backward::<f32>(&MLP_RELU);
}

#[test]
fn log_softmax_forward_backward() {
    check_forward_backward::<f64>(&LOGSOFTMAX);
    check_forward_backward::<f32>(&LOGSOFTMAX);
}

#[test]
fn softmax_forward_backward() {
    check_forward_backward::<f64>(&SOFTMAX_OUT);
    check_forward_backward::<f32>(&SOFTMAX_OUT);
}

#[test]
fn linreg_optimizers_match_torch() {
    check_all_optimizers::<f64>(&LINREG);
    check_all_optimizers::<f32>(&LINREG);
}

#[test]
fn bce_optimizers_match_torch() {
    check_all_optimizers::<f64>(&BCE);
    check_all_optimizers::<f32>(&BCE);
}

#[test]
fn f64_state_dict_loads_into_f32_model_as_the_f32_fixture() {
    // The f32 fixtures are the f64 values rounded to f32, which is what loading converts to.
    let core32 = TensorFile::open(data("bce", "f32.safetensors")).unwrap();
    let mut net = Net::<f32> {
        case: &BCE,
        layers: vec![Linear::zeros(5, 7, true), Linear::zeros(7, 1, true)],
    };
    io::load(&mut net, data("bce", "f64.state_dict.safetensors")).unwrap();
    let w = core32.get::<f32>("param.fc1.weight").unwrap();
    assert_eq!(
        net.layers[0].weight,
        w.into_dimensionality::<Ix2>().unwrap()
    );
}

#[test]
fn fixture_files_read_with_names_shapes_and_labels() {
    let core = TensorFile::open(data("mlp_relu", "f64.safetensors")).unwrap();
    assert_eq!(core.names().len(), 21);
    assert!(core.names().contains(&"grad.input.x"));
    assert_eq!(core.shape("param.fc2.weight").unwrap(), &[16, 16]);
    assert_eq!(core.shape("loss").unwrap(), &[] as &[usize]);
    assert_eq!(
        core.dtype("target.label").unwrap(),
        kiln_runtime::io::Dtype::I64
    );
    let labels = core.labels("target.label").unwrap();
    assert_eq!(labels.len(), 5);
    assert!(labels.iter().all(|&l| l < 4), "{labels:?}");
    // The 0-d loss reads as a 0-d array, in either float type.
    let loss = core.get::<f64>("loss").unwrap();
    assert_eq!(loss.ndim(), 0);
    assert_eq!(core.get::<f32>("loss").unwrap().sum(), loss.sum() as f32);
    // A float tensor is not labels, and labels are not floats.
    let err = core.labels("input.x").unwrap_err().to_string();
    assert!(
        err.contains("input.x") && err.contains("F64") && err.contains("f64.safetensors"),
        "{err}"
    );
    let err = core.get::<f64>("target.label").unwrap_err().to_string();
    assert!(err.contains("target.label") && err.contains("I64"), "{err}");

    let state = TensorFile::open(data("linreg", "f32.state_dict.safetensors")).unwrap();
    assert_eq!(state.names(), ["linear.bias", "linear.weight"]);
    assert_eq!(
        state.dtype("linear.weight").unwrap(),
        kiln_runtime::io::Dtype::F32
    );
}

/// One step from torch's own gradients (`grad.*`), so that any difference is the optimizer's
/// arithmetic alone. Returns every element that differs from torch's `after.<opt>.step1` in
/// any bit, with the difference in units of `F::EPSILON · max(|p before|, |p after|, |update|)`
/// (ulps of the operands, which unlike ulps of the result stay meaningful when the update
/// cancels most of the parameter).
fn first_step_differences<F: Float, O: Optimizer<F>>(
    case: &'static Case,
    key: &str,
    mut opt: O,
) -> Vec<(f64, String)> {
    let core = TensorFile::open(data(case.name, &format!("{}.safetensors", F::NAME))).unwrap();
    let after_file = format!("{}.optim.{key}.safetensors", F::NAME);
    let after = TensorFile::open(data(case.name, &after_file)).unwrap();
    let mut net = initial_net::<F>(case, &core);
    let before: Vec<f64> = flat_params(&net);
    let grads = NetGrads {
        layers: case
            .layers
            .iter()
            .map(|&(name, _, _)| {
                let w = core.get::<F>(&format!("grad.{name}.weight")).unwrap();
                let b = core.get::<F>(&format!("grad.{name}.bias")).unwrap();
                let w = w.into_dimensionality::<Ix2>().unwrap();
                (w, b.into_dimensionality::<Ix1>().unwrap())
            })
            .collect(),
    };
    opt.step(&mut net, &grads);
    let mut want = Vec::new();
    let mut labels = Vec::new();
    for &(name, _, _) in case.layers {
        for part in ["weight", "bias"] {
            let tensor = after
                .get::<F>(&format!("after.{key}.step1.{name}.{part}"))
                .unwrap();
            for i in 0..tensor.len() {
                labels.push(format!("{name}.{part}[{i}]"));
            }
            want.extend(tensor.iter().map(|v| v.to_f64()));
        }
    }
    let epsilon = if F::NAME == "f32" {
        f64::from(f32::EPSILON)
    } else {
        f64::EPSILON
    };
    let got = flat_params(&net);
    assert_eq!(got.len(), want.len());
    let mut differences = Vec::new();
    for (((g, w), p), label) in got.iter().zip(&want).zip(&before).zip(&labels) {
        if g.to_bits() != w.to_bits() {
            let scale = p.abs().max(w.abs()).max((w - p).abs());
            let units = (g - w).abs() / (epsilon * scale);
            let text = format!(
                "{} {} {key} {label}: got {g:e}, torch {w:e} ({units:.2} units)",
                case.name,
                F::NAME
            );
            differences.push((units, text));
        }
    }
    differences
}

/// Weights then bias of every layer, as f64.
fn flat_params<F: Float>(net: &Net<F>) -> Vec<f64> {
    net.layers
        .iter()
        .flat_map(|l| l.weight.iter().chain(l.bias.as_ref().unwrap().iter()))
        .map(|v| v.to_f64())
        .collect()
}

fn first_steps<F: Float>(case: &'static Case, key: &str) -> Vec<(f64, String)> {
    match key {
        "sgd" => first_step_differences::<F, _>(case, key, Sgd::new(0.1)),
        "sgd_momentum" => first_step_differences::<F, _>(case, key, Sgd::new(0.1).momentum(0.9)),
        "sgd_nesterov" => {
            let nesterov = Sgd::new(0.1).momentum(0.9).nesterov(true);
            first_step_differences::<F, _>(case, key, nesterov)
        }
        "adam" => first_step_differences::<F, _>(case, key, Adam::new(1e-2)),
        "adamw" => first_step_differences::<F, _>(case, key, AdamW::new(1e-2).weight_decay(0.01)),
        "rmsprop" => first_step_differences::<F, _>(case, key, RmsProp::new(1e-2)),
        _ => unreachable!("unknown optimizer {key}"),
    }
}

const OPTIMIZERS: [&str; 6] = [
    "sgd",
    "sgd_momentum",
    "sgd_nesterov",
    "adam",
    "adamw",
    "rmsprop",
];

#[test]
fn first_optimizer_step_is_bitwise_torch_in_f64() {
    // From identical gradients, every f64 update rounds exactly as torch's: the scalar
    // expressions are formed in f64 as in Python, and `add(alpha)` / `lerp` are fused
    // multiply-adds as in torch's CPU kernels.
    let mut all = Vec::new();
    for key in OPTIMIZERS {
        all.extend(first_steps::<f64>(&LINREG, key));
        all.extend(first_steps::<f64>(&BCE, key));
    }
    let text: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        all.is_empty(),
        "{} elements differ:\n{}",
        all.len(),
        text.join("\n")
    );
}

#[test]
fn first_optimizer_step_is_within_rounding_of_torch_in_f32() {
    // SGD is bitwise in f32 too. Adam, AdamW and RMSprop differ from torch by a rounding or
    // two of an intermediate for a handful of elements (9 of 312 here), which no ordering of
    // the documented operations reproduces for all elements at once: torch's vectorized and
    // scalar loops round differently.
    let mut all = Vec::new();
    for key in OPTIMIZERS {
        all.extend(first_steps::<f32>(&LINREG, key));
        all.extend(first_steps::<f32>(&BCE, key));
    }
    let text = |keep: &dyn Fn(f64, &str) -> bool| -> Vec<String> {
        all.iter()
            .filter(|(u, t)| keep(*u, t))
            .map(|(_, t)| t.clone())
            .collect()
    };
    let sgd = text(&|_, t| t.contains(" sgd"));
    assert!(sgd.is_empty(), "SGD differs:\n{}", sgd.join("\n"));
    let far = text(&|u, _| u > 2.0);
    assert!(far.is_empty(), "beyond two roundings:\n{}", far.join("\n"));
    let every = text(&|_, _| true);
    assert!(
        all.len() <= 9,
        "{} elements differ (9 expected):\n{}",
        all.len(),
        every.join("\n")
    );
}
