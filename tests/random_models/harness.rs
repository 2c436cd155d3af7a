//! Runs one generated model through every check: its forward pass and loss against the
//! reference interpreter (inference mode, and training mode when it has no dropout), its
//! gradients against central differences in f64, and the same model in f32 (forward and a
//! training step finite and close to f64). A failure names the seed and prints the source.
//!
//! `runner!` implements [`Runner`] for a generated model (the generated file calls it after
//! each `kiln::model!`), `cases!` lists the models as [`CASES`](crate::generated).

use super::gen::{self, Graph};
use super::interp::{self, Input, Params, Target};
use kiln::ndarray::{ArrayD, ArrayView, Dim, Dimension, IxDyn};
use kiln::rand::rngs::StdRng;
use kiln::rand::{Rng, SeedableRng};
use kiln::{Float, Model};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The central-difference step.
const EPS: f64 = 1e-6;
/// Gradient tolerance: `|analytic − numeric| ≤ ATOL · max(1, largest |gradient|) + RTOL ·
/// |numeric|`.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-8;
/// Forward tolerance against the interpreter, in f64.
const FWD_RTOL: f64 = 1e-9;
const FWD_ATOL: f64 = 1e-11;
/// f32 against f64, relative to the tensor's largest magnitude (plus one).
const F32_TOL: f64 = 2e-3;

/// A generated model the harness can drive, in either float type.
pub trait Runner<F: Float>: Model<F> + Clone {
    /// A model with PyTorch's default initialization.
    fn build(rng: &mut StdRng) -> Self;
    /// The loss and the prediction in inference mode.
    fn eval(&self, x: &Input<F>, y: &Target<F>) -> kiln::Result<(F, ArrayD<F>)>;
    /// A training step's loss and prediction; writes the gradients. `seed` seeds dropout.
    fn train(
        &mut self,
        x: &Input<F>,
        y: &Target<F>,
        seed: u64,
        grads: &mut Self::Grads,
    ) -> kiln::Result<(F, ArrayD<F>)>;
}

/// The float input as a fixed-rank view.
pub fn float_view<F: Float, const N: usize>(x: &Input<F>) -> ArrayView<'_, F, Dim<[usize; N]>>
where
    Dim<[usize; N]>: Dimension,
{
    match x {
        Input::Float(a) => a.view().into_dimensionality().expect("input rank"),
        Input::Tokens(_) => panic!("a float input was expected"),
    }
}

/// The token input as a fixed-rank view.
pub fn token_view<F, const N: usize>(x: &Input<F>) -> ArrayView<'_, usize, Dim<[usize; N]>>
where
    Dim<[usize; N]>: Dimension,
{
    match x {
        Input::Tokens(a) => a.view().into_dimensionality().expect("input rank"),
        Input::Float(_) => panic!("a token input was expected"),
    }
}

/// The float target as a fixed-rank view.
pub fn value_view<F: Float, const N: usize>(y: &Target<F>) -> ArrayView<'_, F, Dim<[usize; N]>>
where
    Dim<[usize; N]>: Dimension,
{
    match y {
        Target::Values(a) => a.view().into_dimensionality().expect("target rank"),
        Target::Labels(_) => panic!("a float target was expected"),
    }
}

/// The label target as a fixed-rank view.
pub fn label_view<F, const N: usize>(y: &Target<F>) -> ArrayView<'_, usize, Dim<[usize; N]>>
where
    Dim<[usize; N]>: Dimension,
{
    match y {
        Target::Labels(a) => a.view().into_dimensionality().expect("target rank"),
        Target::Values(_) => panic!("labels were expected"),
    }
}

/// Implements [`Runner`] for a generated model: `runner! { Name, float 2, labels 1, seeded }`.
macro_rules! runner {
    (@x float $n:literal $x:ident) => { crate::harness::float_view::<F, $n>($x) };
    (@x tokens $n:literal $x:ident) => { crate::harness::token_view::<F, $n>($x) };
    (@y values $n:literal $y:ident) => { crate::harness::value_view::<F, $n>($y) };
    (@y labels $n:literal $y:ident) => { crate::harness::label_view::<F, $n>($y) };
    (@seed seeded $ws:ident $seed:ident) => { $ws.seed($seed) };
    (@seed unseeded $ws:ident $seed:ident) => { let _ = $seed; };
    ($name:ident, $xk:ident $xn:literal, $yk:ident $yn:literal, $seeded:ident) => {
        impl<F: kiln::Float> crate::harness::Runner<F> for $name<F> {
            fn build(rng: &mut kiln::rand::rngs::StdRng) -> Self {
                $name::new(rng)
            }

            fn eval(
                &self,
                x: &crate::interp::Input<F>,
                y: &crate::interp::Target<F>,
            ) -> kiln::Result<(F, kiln::ndarray::ArrayD<F>)> {
                let mut ws = self.workspace();
                let loss = self.loss(runner!(@x $xk $xn x), runner!(@y $yk $yn y), &mut ws)?;
                Ok((loss, ws.pred()?.to_owned().into_dyn()))
            }

            fn train(
                &mut self,
                x: &crate::interp::Input<F>,
                y: &crate::interp::Target<F>,
                seed: u64,
                grads: &mut Self::Grads,
            ) -> kiln::Result<(F, kiln::ndarray::ArrayD<F>)> {
                let mut ws = self.workspace();
                runner!(@seed $seeded ws seed);
                let loss = self.loss_and_grad(
                    runner!(@x $xk $xn x),
                    runner!(@y $yk $yn y),
                    &mut ws,
                    grads,
                )?;
                Ok((loss, ws.pred()?.to_owned().into_dyn()))
            }
        }
    };
}

/// The case table: `cases! { 7 => R7, ... }` defines `CASES`.
macro_rules! cases {
    ($($seed:literal => $name:ident,)*) => {
        /// Every generated model: its seed and its check.
        pub const CASES: &[(u64, crate::harness::CheckFn)] = &[
            $(($seed, crate::harness::check::<$name<f64>, $name<f32>>),)*
        ];
    };
}

/// A case's check.
pub type CheckFn = fn(u64) -> Result<Outcome, String>;

/// What a passing case checked.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Parameter elements whose gradient was checked.
    pub grad_elements: usize,
    /// The largest gradient error relative to the largest gradient (or 1).
    pub max_grad_err: f64,
    /// Whether the training-mode forward was compared with the interpreter.
    pub train_forward_checked: bool,
}

fn random_input(g: &Graph, rng: &mut StdRng) -> Input {
    let shape = gen::sizes(&g.body.values[0].shape);
    match g.tokens {
        Some(v) => Input::Tokens(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
            rng.random_range(0..v)
        })),
        None => Input::Float(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
            rng.random_range(-1.0..1.0)
        })),
    }
}

fn random_target(g: &Graph, rng: &mut StdRng) -> Target {
    let shape = gen::sizes(&g.target);
    match g.classes {
        Some(c) => {
            let mut labels = ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(0..c));
            if let gen::LossKind::CrossEntropy {
                ignore_index: Some(p),
                ..
            } = g.loss
            {
                // Some labels ignored, never all of them.
                for (i, l) in labels.iter_mut().enumerate() {
                    if i == 0 {
                        *l = (p + 1) % c;
                    } else if rng.random_bool(0.3) {
                        *l = p;
                    }
                }
            }
            Target::Labels(labels)
        }
        None => Target::Values(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
            rng.random_range(0.0..1.0)
        })),
    }
}

fn to_f32(x: &Input) -> Input<f32> {
    match x {
        Input::Float(a) => Input::Float(a.mapv(|v| v as f32)),
        Input::Tokens(t) => Input::Tokens(t.clone()),
    }
}

fn target_f32(y: &Target) -> Target<f32> {
    match y {
        Target::Values(a) => Target::Values(a.mapv(|v| v as f32)),
        Target::Labels(t) => Target::Labels(t.clone()),
    }
}

fn params_of<M: Model<f64>>(m: &M) -> Params {
    let mut out = Params::new();
    m.visit_params(&mut |name, v| {
        out.insert(name.to_string(), v.to_owned());
    });
    m.visit_buffers(&mut |name, v| {
        out.insert(name.to_string(), v.to_owned());
    });
    out
}

fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    (a - b).abs() <= atol + rtol * a.abs().max(b.abs())
}

fn compare(what: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what}: shape {:?}, the interpreter's {:?}",
            got.shape(),
            want.shape()
        ));
    }
    for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
        if !close(a, b, FWD_RTOL, FWD_ATOL) {
            return Err(format!(
                "{what}: element {i} is {a:e}, the interpreter's {b:e} (difference {:e})",
                (a - b).abs()
            ));
        }
    }
    Ok(())
}

fn compare_f32(what: &str, got: &ArrayD<f32>, want: &ArrayD<f64>) -> Result<(), String> {
    let scale = 1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
        let a = a as f64;
        if !a.is_finite() || (a - b).abs() > F32_TOL * scale {
            return Err(format!("{what}: f32 element {i} is {a:e}, f64 {b:e}"));
        }
    }
    Ok(())
}

/// Runs every check on the model of `seed`; `Err` holds the whole report (seed, source,
/// what failed).
pub fn check<M64: Runner<f64>, M32: Runner<f32>>(seed: u64) -> Result<Outcome, String> {
    let g = gen::generate(seed);
    let result =
        catch_unwind(AssertUnwindSafe(|| check_graph::<M64, M32>(&g))).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        });
    result.map_err(|e| {
        format!(
            "random model seed {seed}: {e}\n--- source (regenerate with gen::generate({seed})) ---\n{}",
            gen::source(&g)
        )
    })
}

fn check_graph<M64: Runner<f64>, M32: Runner<f32>>(g: &Graph) -> Result<Outcome, String> {
    let mut rng = StdRng::seed_from_u64(g.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1);
    let mut model = M64::build(&mut rng);
    // Running statistics away from their initial 0 and 1, so that inference-mode batch
    // norm computes something.
    model.visit_buffers_mut(&mut |name, mut v| {
        for e in v.iter_mut() {
            *e = if name.ends_with("running_var") {
                rng.random_range(0.5..1.5)
            } else {
                rng.random_range(-0.5..0.5)
            };
        }
    });
    let x = random_input(g, &mut rng);
    let y = random_target(g, &mut rng);
    let params = params_of(&model);

    // Inference: prediction and loss against the interpreter.
    let (loss, pred) = model.eval(&x, &y).map_err(|e| format!("eval: {e}"))?;
    let (want_pred, want_loss) = interp::run(g, &params, &x, &y, false);
    compare("inference prediction", &pred, &want_pred)?;
    if !close(loss, want_loss, FWD_RTOL, FWD_ATOL) {
        return Err(format!(
            "inference loss {loss:e}, the interpreter's {want_loss:e}"
        ));
    }

    // Training: loss and gradients; the forward against the interpreter when it can
    // reproduce it (no dropout mask).
    let seed = g.seed ^ 0x5eed;
    let before = model.clone();
    let mut grads = model.zero_grads();
    let (train_loss, train_pred) = model
        .train(&x, &y, seed, &mut grads)
        .map_err(|e| format!("training step: {e}"))?;
    let mut outcome = Outcome::default();
    if !g.dropout {
        let (want_pred, want_loss) = interp::run(g, &params, &x, &y, true);
        compare("training prediction", &train_pred, &want_pred)?;
        if !close(train_loss, want_loss, FWD_RTOL, FWD_ATOL) {
            return Err(format!(
                "training loss {train_loss:e}, the interpreter's {want_loss:e}"
            ));
        }
        outcome.train_forward_checked = true;
    }
    let mut probe = before.clone();
    let report = kiln::check::gradient_check(
        &mut probe,
        &grads,
        |m| {
            let mut copy = m.clone();
            let mut scratch = copy.zero_grads();
            copy.train(&x, &y, seed, &mut scratch)
                .expect("training step")
                .0
        },
        EPS,
    );
    // Central differences err by about 1e-16·|L|/ε, and a model whose gradients reach
    // 1e3 has losses of that order: the absolute tolerance scales with the largest gradient.
    let scale = report
        .params
        .iter()
        .flat_map(|p| p.numeric.iter())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    if !report.is_within(RTOL, ATOL * scale) {
        return Err(format!("gradient check failed:\n{report}"));
    }
    outcome.grad_elements = report.params.iter().map(|p| p.analytic.len()).sum();
    outcome.max_grad_err = report.max_abs_error() / scale;

    // f32: the same parameters, inference and a training step finite and close to f64.
    let mut m32 = M32::build(&mut rng);
    let mut values: BTreeMap<String, ArrayD<f64>> = params.into_iter().collect();
    m32.visit_params_mut(&mut |name, mut v| {
        let src = values.remove(name).expect("same parameters");
        v.zip_mut_with(&src, |a, &b| *a = b as f32);
    });
    m32.visit_buffers_mut(&mut |name, mut v| {
        let src = values.remove(name).expect("same buffers");
        v.zip_mut_with(&src, |a, &b| *a = b as f32);
    });
    let (x32, y32) = (to_f32(&x), target_f32(&y));
    let (l32, p32) = m32.eval(&x32, &y32).map_err(|e| format!("f32 eval: {e}"))?;
    compare_f32("f32 inference prediction", &p32, &pred)?;
    compare_f32(
        "f32 inference loss",
        &ArrayD::from_elem(IxDyn(&[]), l32),
        &ArrayD::from_elem(IxDyn(&[]), loss),
    )?;
    let mut g32 = m32.zero_grads();
    let (tl32, tp32) = m32
        .train(&x32, &y32, seed, &mut g32)
        .map_err(|e| format!("f32 training step: {e}"))?;
    compare_f32("f32 training prediction", &tp32, &train_pred)?;
    compare_f32(
        "f32 training loss",
        &ArrayD::from_elem(IxDyn(&[]), tl32),
        &ArrayD::from_elem(IxDyn(&[]), train_loss),
    )?;
    let mut bad = None;
    M32::visit_grads(&g32, &mut |name, v| {
        if bad.is_none() && v.iter().any(|e| !e.is_finite()) {
            bad = Some(name);
        }
    });
    if let Some(name) = bad {
        return Err(format!("f32 gradient of `{name}` is not finite"));
    }
    Ok(outcome)
}

/// The figures of a run over many cases.
#[derive(Debug, Default)]
pub struct Summary {
    /// Models checked.
    pub models: usize,
    /// Failure reports.
    pub failures: Vec<String>,
    /// How many generated ops of each kind (blocks' bodies included) the models held.
    pub ops: BTreeMap<String, usize>,
    /// Gradient elements checked.
    pub grad_elements: usize,
    /// Models whose training-mode forward was compared with the interpreter.
    pub train_forward_checked: usize,
    /// The largest gradient error relative to the largest gradient (or 1).of a passing model.
    pub max_grad_err: f64,
}

impl Summary {
    /// Runs every case, printing each failure as it happens.
    pub fn run(cases: &[(u64, CheckFn)]) -> Summary {
        let mut s = Summary::default();
        for &(seed, check) in cases {
            s.models += 1;
            for op in gen::generate(seed).op_kinds() {
                *s.ops.entry(op).or_default() += 1;
            }
            match check(seed) {
                Ok(o) => {
                    s.grad_elements += o.grad_elements;
                    s.train_forward_checked += usize::from(o.train_forward_checked);
                    s.max_grad_err = s.max_grad_err.max(o.max_grad_err);
                }
                Err(e) => {
                    eprintln!("{e}");
                    s.failures.push(e);
                }
            }
        }
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} random models, {} failed; {} gradient elements checked (largest error \
             relative to the largest gradient {:.1e}); training-mode forward compared on {}",
            self.models,
            self.failures.len(),
            self.grad_elements,
            self.max_grad_err,
            self.train_forward_checked
        )?;
        writeln!(f, "ops (count of uses over all models):")?;
        for (op, n) in &self.ops {
            writeln!(f, "  {op:<36} {n}")?;
        }
        Ok(())
    }
}
