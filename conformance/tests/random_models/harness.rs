//! Runs one generated model through every check: its forward pass and loss against the
//! reference interpreter (inference mode, and training mode with dropout's masks drawn as
//! kiln draws them), batch norm's running statistics after a training step, its
//! gradients against central differences in f64, and the same model in f32 (forward and a
//! training step finite and close to f64). A failure names the seed and prints the source.
//!
//! `runner!` implements [`Runner`] for a generated model (the generated file calls it after
//! each `kiln::model!`), `cases!` lists the models as [`CASES`](crate::generated).

use super::gen::{self, Graph};
use super::interp::{self, Input, Params, Target};
use kiln::ndarray::{ArrayD, ArrayView, Dim, Dimension, IxDyn};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Float, Model};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The central-difference step (a tenth of it where that fails: see `check_graph`).
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
/// f32 gradients against f64, relative to the largest f64 gradient (see `check_graph`).
const F32_GRAD_TOL: f64 = 1e-2;

/// A generated model the harness can drive, in either float type.
pub trait Runner<F: Float>: Model<F> + Clone {
    /// A model with PyTorch's default initialization.
    fn build(rng: &mut StdRng) -> Self;
    /// The loss, the prediction and the further outputs in inference mode.
    fn eval(&self, x: &Input<F>, lens: &Lengths, y: &Target<F>) -> kiln::Result<Outputs<F>>;
    /// A training step's loss, prediction and further outputs; writes the gradients. `seed`
    /// seeds dropout; `frozen` names the parameters the workspace freezes.
    fn train(
        &mut self,
        x: &Input<F>,
        lens: &Lengths,
        y: &Target<F>,
        seed: u64,
        grads: &mut Self::Grads,
        frozen: &dyn Fn(&str) -> bool,
    ) -> kiln::Result<Outputs<F>>;
}

/// The `len` input (empty when the model has none).
pub type Lengths = kiln::ndarray::Array1<usize>;

/// A pass's loss, prediction and further outputs.
pub type Outputs<F> = (F, ArrayD<F>, Vec<ArrayD<F>>);

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

/// Implements [`Runner`] for a generated model: `runner! { Name, float 2, labels 1, seeded,
/// [v3] }` (the bracket lists its further outputs).
macro_rules! runner {
    (@x float $n:literal $x:ident) => { crate::harness::float_view::<F, $n>($x) };
    (@x tokens $n:literal $x:ident) => { crate::harness::token_view::<F, $n>($x) };
    (@y values $n:literal $y:ident) => { crate::harness::value_view::<F, $n>($y) };
    (@y labels $n:literal $y:ident) => { crate::harness::label_view::<F, $n>($y) };
    (@seed seeded $ws:ident $seed:ident) => { $ws.seed($seed) };
    (@split $o:ident []) => { ($o.into_dyn(), vec![]) };
    (@split $o:ident [$($out:ident),+]) => {{
        let (pred, $($out),+) = $o;
        (pred.into_dyn(), vec![$($out.into_dyn()),+])
    }};
    ($name:ident, $xk:ident $xn:literal, $lk:ident, none 0, $seeded:ident, [$($out:ident),*]) => {
        impl<F: kiln::Float> crate::harness::Runner<F> for $name<F> {
            fn build(rng: &mut kiln::rand::rngs::StdRng) -> Self {
                $name::new(rng)
            }

            fn eval(
                &self,
                x: &crate::interp::Input<F>,
                lens: &crate::harness::Lengths,
                _: &crate::interp::Target<F>,
            ) -> kiln::Result<crate::harness::Outputs<F>> {
                let out = runner!(@call self forward $lk (runner!(@x $xk $xn x), lens,))?;
                let (pred, outs) = runner!(@split out [$($out),*]);
                Ok((F::ZERO, pred, outs))
            }

            fn train(
                &mut self,
                _: &crate::interp::Input<F>,
                _: &crate::harness::Lengths,
                _: &crate::interp::Target<F>,
                _: u64,
                _: &mut Self::Grads,
                _: &dyn Fn(&str) -> bool,
            ) -> kiln::Result<crate::harness::Outputs<F>> {
                unreachable!("a model without a loss has no training step")
            }
        }
    };
    (@call $m:ident $f:ident lengths ($x:expr, $l:ident, $($rest:expr),*)) => {
        $m.$f($x, $l.view(), $($rest),*)
    };
    (@call $m:ident $f:ident no_lengths ($x:expr, $l:ident, $($rest:expr),*)) => {
        { let _ = $l; $m.$f($x, $($rest),*) }
    };
    (@seed unseeded $ws:ident $seed:ident) => { let _ = $seed; };
    ($name:ident, $xk:ident $xn:literal, $lk:ident, $yk:ident $yn:literal, $seeded:ident, [$($out:ident),*]) => {
        impl<F: kiln::Float> crate::harness::Runner<F> for $name<F> {
            fn build(rng: &mut kiln::rand::rngs::StdRng) -> Self {
                $name::new(rng)
            }

            fn eval(
                &self,
                x: &crate::interp::Input<F>,
                lens: &crate::harness::Lengths,
                y: &crate::interp::Target<F>,
            ) -> kiln::Result<crate::harness::Outputs<F>> {
                let mut ws = self.workspace();
                let loss = runner!(@call self loss $lk (
                    runner!(@x $xk $xn x), lens, runner!(@y $yk $yn y), &mut ws
                ))?;
                let outs = vec![$(ws.$out()?.to_owned().into_dyn()),*];
                Ok((loss, ws.pred()?.to_owned().into_dyn(), outs))
            }

            fn train(
                &mut self,
                x: &crate::interp::Input<F>,
                lens: &crate::harness::Lengths,
                y: &crate::interp::Target<F>,
                seed: u64,
                grads: &mut Self::Grads,
                frozen: &dyn Fn(&str) -> bool,
            ) -> kiln::Result<crate::harness::Outputs<F>> {
                let mut ws = self.workspace();
                ws.freeze(frozen);
                runner!(@seed $seeded ws seed);
                let loss = runner!(@call self loss_and_grad $lk (
                    runner!(@x $xk $xn x), lens, runner!(@y $yk $yn y), &mut ws, grads
                ))?;
                let outs = vec![$(ws.$out()?.to_owned().into_dyn()),*];
                Ok((loss, ws.pred()?.to_owned().into_dyn(), outs))
            }
        }
    };
}

/// A forward pass's prediction and further outputs.
pub type Forward<F> = (ArrayD<F>, Vec<ArrayD<F>>);

/// A generated model with incremental decoding ([`gen::Graph::decodable`]).
pub trait Decoder<F: Float> {
    /// `forward`'s prediction and further outputs on the whole input.
    fn whole(&self, x: &Input<F>) -> kiln::Result<Forward<F>>;
    /// The same through one decoding cache, the input's time axis (axis 1) cut at `cuts`
    /// (ascending, the last one its length): each piece's outputs, in order.
    fn pieces(&self, x: &Input<F>, cuts: &[usize]) -> kiln::Result<Vec<Forward<F>>>;
}

/// `decoder! { R7, tokens 2, [v3] }` implements [`Decoder`] for a generated model.
macro_rules! decoder {
    ($name:ident, $xk:ident $xn:literal, [$($out:ident),*]) => {
        impl<F: kiln::Float> crate::harness::Decoder<F> for $name<F> {
            fn whole(
                &self,
                x: &crate::interp::Input<F>,
            ) -> kiln::Result<crate::harness::Forward<F>> {
                let out = self.forward(runner!(@x $xk $xn x))?;
                Ok(runner!(@split out [$($out),*]))
            }

            fn pieces(
                &self,
                x: &crate::interp::Input<F>,
                cuts: &[usize],
            ) -> kiln::Result<Vec<crate::harness::Forward<F>>> {
                let x = runner!(@x $xk $xn x);
                let (batch, len) = (x.shape()[0], x.shape()[1]);
                let mut cache = self.decoder_cache(batch, len)?;
                let mut start = 0;
                let mut pieces = Vec::new();
                for &end in cuts {
                    let piece = x.slice_axis(kiln::ndarray::Axis(1), (start..end).into());
                    let out = self.forward_cached(piece, &mut cache)?;
                    pieces.push(runner!(@split out [$($out),*]));
                    start = end;
                }
                Ok(pieces)
            }
        }
    };
}

/// `decode_cases! { 7 => R7, ... }` defines `DECODE_CASES`, the models with [`Decoder`].
macro_rules! decode_cases {
    ($($seed:literal => $name:ident,)*) => {
        /// Every generated model with incremental decoding: its seed and its check.
        pub const DECODE_CASES: &[(u64, crate::harness::DecodeCheckFn)] = &[
            $(($seed, crate::harness::check_decode::<$name<f64>>),)*
        ];
    };
}

/// A decoding case's check.
pub type DecodeCheckFn = fn(u64) -> Result<(), String>;

/// Feeds a random input to the model in pieces through its decoding cache (the first piece
/// several positions when there are, then one, then the rest) and compares each piece's
/// outputs with the same positions of `forward` on the whole input, to 1e-12.
pub fn check_decode<M: Runner<f64> + Decoder<f64>>(seed: u64) -> Result<(), String> {
    let g = gen::generate(seed);
    let run = || -> Result<(), String> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x00de_c0de);
        let model = M::build(&mut rng);
        let x = random_input(&g, &mut rng);
        let len = x_len(&x);
        let mut cuts: Vec<usize> = [len / 2, len / 2 + 1, len]
            .into_iter()
            .filter(|&c| c > 0 && c <= len)
            .collect();
        cuts.dedup();
        let (pred, outs) = model.whole(&x).map_err(|e| format!("forward: {e}"))?;
        let pieces = model
            .pieces(&x, &cuts)
            .map_err(|e| format!("forward_cached: {e}"))?;
        let mut start = 0;
        for (&end, (piece_pred, piece_outs)) in cuts.iter().zip(&pieces) {
            let whole = std::iter::once(&pred).chain(&outs);
            for (k, (got, all)) in std::iter::once(piece_pred)
                .chain(piece_outs)
                .zip(whole)
                .enumerate()
            {
                let want = all.slice_axis(kiln::ndarray::Axis(1), (start..end).into());
                if got.shape() != want.shape() {
                    return Err(format!(
                        "output {k}, positions {start}..{end}: shape {:?}, forward's {:?}",
                        got.shape(),
                        want.shape()
                    ));
                }
                for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
                    if !close(a, b, 1e-12, 1e-12) {
                        return Err(format!(
                            "output {k}, positions {start}..{end}: element {i} is {a:e}, \
                             forward's {b:e}"
                        ));
                    }
                }
            }
            start = end;
        }
        Ok(())
    };
    run().map_err(|e| {
        format!(
            "random model seed {seed}, decoding: {e}\n--- source ---\n{}",
            gen::source(&g)
        )
    })
}

/// The length of an input's time axis (axis 1).
fn x_len<F>(x: &Input<F>) -> usize {
    match x {
        Input::Float(a) => a.shape()[1],
        Input::Tokens(a) => a.shape()[1],
    }
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
    /// Batch norm running-statistics buffers compared after a training step.
    pub buffers_checked: usize,
    /// The largest f32 gradient error relative to the largest f64 gradient.
    pub max_f32_grad_err: f64,
    /// A model without a loss, checked forward only.
    pub forward_only: bool,
    /// Whether the gradients passed only with the smaller step.
    pub small_step: bool,
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

/// Lengths in `1..=T`, one of them `T` when there are several (a padded batch is as long as
/// its longest sequence, though kiln does not require it).
fn random_lengths(g: &Graph, rng: &mut StdRng) -> Lengths {
    let Some(t) = &g.lengths else {
        return Lengths::zeros(0);
    };
    let b = g.body.values[0].shape[0].size;
    let mut lens = Lengths::from_shape_simple_fn(b, || rng.random_range(1..=t.size));
    lens[rng.random_range(0..b)] = t.size;
    lens
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

fn lens_of(l: &Lengths) -> &[usize] {
    l.as_slice().expect("contiguous")
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

/// The f32 instance of a model with the f64 one's parameters and buffers.
fn f32_copy<M32: Runner<f32>>(params: &Params, rng: &mut StdRng) -> M32 {
    let mut m32 = M32::build(rng);
    m32.visit_params_mut(&mut |name, mut v| {
        v.zip_mut_with(&params[name], |a, &b| *a = b as f32);
    });
    m32.visit_buffers_mut(&mut |name, mut v| {
        v.zip_mut_with(&params[name], |a, &b| *a = b as f32);
    });
    m32
}

fn compare_outputs(mode: &str, got: &[ArrayD<f64>], want: &[ArrayD<f64>]) -> Result<(), String> {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        compare(&format!("{mode} output {}", i + 2), a, b)?;
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
    // Parameters initialised to a constant (a norm's weight 1 and bias 0) moved off it: with
    // a bias of exactly 0, a layer norm of an all-zero row (an embedding's padding row) gives
    // exactly 0, where a following `leaky_relu` has its kink and central differences average
    // the two slopes (seed 8,000,995).
    model.visit_params_mut(&mut |_, mut v| {
        let first = v.iter().next().copied();
        if v.len() > 1 && v.iter().all(|&e| Some(e) == first) {
            v.mapv_inplace(|e| e + rng.random_range(-0.1..0.1));
        }
    });
    let x = random_input(g, &mut rng);
    let y = random_target(g, &mut rng);
    let lens = random_lengths(g, &mut rng);
    let params = params_of(&model);

    // Inference: prediction and loss against the interpreter.
    let (loss, pred, outs) = model
        .eval(&x, &lens, &y)
        .map_err(|e| format!("eval: {e}"))?;
    let want = interp::run(g, &params, &x, lens_of(&lens), &y, false, 0);
    let (want_pred, want_loss) = (want.pred, want.loss);
    compare("inference prediction", &pred, &want_pred)?;
    compare_outputs("inference", &outs, &want.outputs)?;
    if !close(loss, want_loss, FWD_RTOL, FWD_ATOL) {
        return Err(format!(
            "inference loss {loss:e}, the interpreter's {want_loss:e}"
        ));
    }
    if !g.has_loss {
        // Forward only: no training step, no gradients; the f32 forward too.
        let m32: M32 = f32_copy(&params, &mut rng);
        let (_, p32, o32) = m32
            .eval(&to_f32(&x), &lens, &target_f32(&y))
            .map_err(|e| format!("f32 eval: {e}"))?;
        compare_f32("f32 inference prediction", &p32, &pred)?;
        for (i, (a, b)) in o32.iter().zip(&outs).enumerate() {
            compare_f32(&format!("f32 inference output {}", i + 2), a, b)?;
        }
        return Ok(Outcome {
            forward_only: true,
            ..Outcome::default()
        });
    }

    // Training: loss and gradients; the forward against the interpreter, which draws dropout's
    // masks as the workspace does when the order of the draws is fixed.
    let seed = g.seed ^ 0x5eed;
    let before = model.clone();
    let mut grads = model.zero_grads();
    let (train_loss, train_pred, train_outs) = model
        .train(&x, &lens, &y, seed, &mut grads, &|_| false)
        .map_err(|e| format!("training step: {e}"))?;
    check_frozen(g, &before, (&x, &lens, &y), seed, &grads, train_loss)?;
    let mut outcome = Outcome::default();
    if dropout_order_fixed(g) {
        let want = interp::run(g, &params, &x, lens_of(&lens), &y, true, seed);
        compare("training prediction", &train_pred, &want.pred)?;
        compare_outputs("training", &train_outs, &want.outputs)?;
        if !close(train_loss, want.loss, FWD_RTOL, FWD_ATOL) {
            return Err(format!(
                "training loss {train_loss:e}, the interpreter's {:e}",
                want.loss
            ));
        }
        // Batch norm's running statistics after the step (`momentum`, the unbiased variance).
        let mut result = Ok(());
        model.visit_buffers(&mut |name, v| {
            if let (Ok(()), Some(w)) = (&result, want.buffers.get(name)) {
                result = compare(
                    &format!("buffer `{name}` after a training step"),
                    &v.to_owned(),
                    w,
                );
                outcome.buffers_checked += 1;
            }
        });
        result?;
        outcome.train_forward_checked = true;
    }
    let numeric = |eps: f64| -> Result<(kiln::check::GradCheckReport, f64, bool), String> {
        let mut probe = before.clone();
        let mut report = kiln::check::gradient_check(
            &mut probe,
            &grads,
            |m| {
                let mut copy = m.clone();
                let mut scratch = copy.zero_grads();
                copy.train(&x, &lens, &y, seed, &mut scratch, &|_| false)
                    .expect("training step")
                    .0
            },
            eps,
        );
        padding_rows(g, &mut report)?;
        // Central differences err by about 1e-16·|L|/ε, and a model whose gradients reach
        // 1e3 has losses of that order: the absolute tolerance scales with the largest
        // gradient.
        let scale = report
            .params
            .iter()
            .flat_map(|p| p.numeric.iter())
            .fold(1.0f64, |m, v| m.max(v.abs()));
        let ok = report.is_within(RTOL, ATOL * scale);
        Ok((report, scale, ok))
    };
    let (mut report, mut scale, ok) = numeric(EPS)?;
    if !ok {
        // Central differences also err by ε²·f'''/6, large where a normalisation divides by
        // a standard deviation near its `eps` (a row whose values nearly agree), and larger
        // still where two such normalisations follow each other (seed 7,000,976: two layer
        // norms with eps 1e-4 over a row of zeros, gradients of 1e4, whose error went
        // 3.6e3, 50, 0.50 at ε = 1e-6, 1e-7, 1e-8). Each tenth of the step cuts that error a
        // hundredfold, and Richardson's extrapolation of two steps removes it, while a wrong
        // gradient stays as wrong. At 1e-8 the rounding error (1e-16·|L|/ε) is still far below
        // the tolerance.
        let mut tried = vec![format!("at ε = {EPS:e}:\n{report}")];
        let first = (report.clone(), scale);
        let mut errors = vec![param_errors(&report)];
        let mut coarse = report;
        let mut passed = None;
        for eps in [EPS / 10.0, EPS / 100.0] {
            let (fine, fine_scale, ok) = numeric(eps)?;
            if ok {
                passed = Some((fine, fine_scale));
                break;
            }
            errors.push(param_errors(&fine));
            let extrapolated = richardson(&coarse, &fine);
            if extrapolated.is_within(RTOL, ATOL * fine_scale) {
                passed = Some((extrapolated, fine_scale));
                break;
            }
            tried.push(format!("at ε = {eps:e}:\n{fine}"));
            tried.push(format!(
                "extrapolated from ε = {:e} and {eps:e}:\n{extrapolated}",
                coarse.eps
            ));
            coarse = fine;
        }
        // Rounding, amplified where a normalisation divides by a nearly zero spread (a batch
        // norm over two samples), errs by about C/ε: tenfold at each tenth of the step, where
        // a wrong gradient's error stays put. When the error of every parameter off the
        // tolerance grows so (more than threefold at each tenth, thirtyfold over both), the
        // difference is noise, as small as it gets at the largest step (seed 2,000,280: an
        // LSTM's gradients through a batch norm, 1.7e-8 off at ε = 1e-6, 1.1e-6 at 1e-8).
        let passed = passed.or_else(|| {
            let off = |i: usize| errors[0][i] > ATOL * first.1;
            let noise = (0..errors[0].len()).filter(|&i| off(i)).all(|i| {
                let e = |k: usize| errors.get(k).map_or(0.0, |e: &Vec<f64>| e[i]);
                e(1) > 3.0 * e(0) && e(2) > 3.0 * e(1) && e(2) > 30.0 * e(0)
            });
            noise.then_some(first)
        });
        let Some(passed) = passed else {
            return Err(format!("gradient check failed {}", tried.join("\nand ")));
        };
        (report, scale) = passed;
        outcome.small_step = true;
    }
    outcome.grad_elements = report.params.iter().map(|p| p.analytic.len()).sum();
    outcome.max_grad_err = report.max_abs_error() / scale;

    // f32: the same parameters, inference and a training step finite and close to f64.
    let mut m32: M32 = f32_copy(&params, &mut rng);
    let (x32, y32) = (to_f32(&x), target_f32(&y));
    let (l32, p32, _) = m32
        .eval(&x32, &lens, &y32)
        .map_err(|e| format!("f32 eval: {e}"))?;
    compare_f32("f32 inference prediction", &p32, &pred)?;
    compare_f32(
        "f32 inference loss",
        &ArrayD::from_elem(IxDyn(&[]), l32),
        &ArrayD::from_elem(IxDyn(&[]), loss),
    )?;
    let mut g32 = m32.zero_grads();
    let (tl32, tp32, _) = m32
        .train(&x32, &lens, &y32, seed, &mut g32, &|_| false)
        .map_err(|e| format!("f32 training step: {e}"))?;
    compare_f32("f32 training prediction", &tp32, &train_pred)?;
    compare_f32(
        "f32 training loss",
        &ArrayD::from_elem(IxDyn(&[]), tl32),
        &ArrayD::from_elem(IxDyn(&[]), train_loss),
    )?;
    // Not comparable with an `rms_norm` of the type's own epsilon (see the method).
    if g.has_type_eps_rms_norm() {
        return Ok(outcome);
    }
    // f32 gradients against f64's, relative to the largest f64 gradient: f32 rounds each
    // op's result to 6e-8 relative, and the error grows with the model's conditioning: most
    // models of the CI set stay within 2e-6, a layer norm of rows whose values nearly agree
    // (`concat(x, x)` of two close features) reached 4.4e-4. A wrong gradient errs by a
    // sizeable fraction of itself.
    let mut g64 = BTreeMap::new();
    M64::visit_grads(&grads, &mut |name, v| {
        g64.insert(name.to_string(), v.to_owned());
    });
    let scale = g64
        .values()
        .flat_map(|v| v.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-6);
    let mut worst: (f64, String) = (0.0, String::new());
    M32::visit_grads(&g32, &mut |name, v| {
        let want = &g64[name];
        for (i, (&a, &b)) in v.iter().zip(want.iter()).enumerate() {
            let err = if a.is_finite() {
                (a as f64 - b).abs() / scale
            } else {
                f64::INFINITY
            };
            if err.is_nan() || err > worst.0 {
                worst = (err, format!("`{name}` element {i}: f32 {a:e}, f64 {b:e}"));
            }
        }
    });
    // A loss near 0 bounds f32's accuracy on its own: a softmax saturated to within 1e-6 of
    // its target has `p − 1` (every gradient's source) only to f32's spacing below 1, 6e-8,
    // so its gradients are right to about 6e-8 / loss whatever the rest of the model does
    // (seed 10,000,032: loss 9.7e-7, f32 gradients 2.4% off, as PyTorch's would be).
    let tolerance = F32_GRAD_TOL.max(10.0 * f64::from(f32::EPSILON) / train_loss.abs());
    if worst.0.is_nan() || worst.0 > tolerance {
        return Err(format!(
            "f32 gradient {} (error {:.1e} of the largest gradient {scale:e})",
            worst.1, worst.0
        ));
    }
    outcome.max_f32_grad_err = worst.0;
    Ok(outcome)
}

/// The workspace's `freeze`: with a random choice of the model's layers frozen (each with
/// even odds; inside a repeated block, each repetition's layers on their own), the training
/// step's loss and the other layers' gradients are the same bits as without (the backward
/// steps it skips feed no trainable layer), and the frozen layers' gradients are zero,
/// whether their steps were skipped or ran for a trainable layer before them.
fn check_frozen<M: Runner<f64>>(
    g: &Graph,
    before: &M,
    (x, lens, y): (&Input, &Lengths, &Target),
    seed: u64,
    grads: &M::Grads,
    loss: f64,
) -> Result<(), String> {
    // What freezes as one: a top-level layer (`v3`), or a layer inside one repetition of a
    // block (`v2.1.u1`), which freezes inside the block's own backward pass.
    let layer = |name: &str| {
        let parts: Vec<&str> = name.split('.').collect();
        let depth = if parts.len() > 3 && parts[1].parse::<usize>().is_ok() {
            3
        } else {
            1
        };
        parts[..depth].join(".")
    };
    let mut layers: Vec<String> = Vec::new();
    before.visit_params(&mut |name, _| {
        if !layers.contains(&layer(name)) {
            layers.push(layer(name));
        }
    });
    let mut rng = StdRng::seed_from_u64(g.seed ^ 0xf402);
    let frozen: Vec<String> = layers
        .into_iter()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    let is_frozen = |name: &str| frozen.contains(&layer(name));
    let mut model = before.clone();
    let mut got = model.zero_grads();
    M::visit_grads_mut(&mut got, &mut |_, mut v| v.fill(7.0));
    let (frozen_loss, ..) = model
        .train(x, lens, y, seed, &mut got, &is_frozen)
        .map_err(|e| format!("training step with {frozen:?} frozen: {e}"))?;
    if frozen_loss.to_bits() != loss.to_bits() {
        return Err(format!(
            "loss {frozen_loss:e} with {frozen:?} frozen, {loss:e} without"
        ));
    }
    let mut want = BTreeMap::new();
    M::visit_grads(grads, &mut |name, v| {
        want.insert(name, v.to_owned());
    });
    let mut result = Ok(());
    M::visit_grads(&got, &mut |name, v| {
        let bad = if is_frozen(name) {
            v.iter().position(|&e| e != 0.0)
        } else {
            v.iter()
                .zip(want[name].iter())
                .position(|(a, b)| a.to_bits() != b.to_bits())
        };
        if let (Ok(()), Some(i)) = (&result, bad) {
            let (a, b) = (v.iter().nth(i), want[name].iter().nth(i));
            result = Err(format!(
                "`{name}` element {i} with {frozen:?} frozen: {a:?} (unfrozen {b:?})"
            ));
        }
    });
    result
}

/// Whether the order in which kiln draws dropout masks is the source order: the ops that draw
/// (dropouts, blocks with dropout) each depend on the one before. kiln may compute two
/// independent ones in either order (a value only the loss reads comes after the outputs),
/// and the interpreter, which draws in source order, would then use other masks.
fn dropout_order_fixed(g: &Graph) -> bool {
    let draws = |op: &gen::Op| match op {
        gen::Op::Block { block, .. } => g.blocks[*block]
            .body
            .values
            .iter()
            .any(|v| v.op.as_ref().is_some_and(gen::Op::draws)),
        op => op.draws(),
    };
    let values = &g.body.values;
    let drawing: Vec<usize> = (0..values.len())
        .filter(|&i| values[i].op.as_ref().is_some_and(draws))
        .collect();
    let depends = |b: usize, a: usize| {
        let mut stack = vec![b];
        let mut seen = vec![false; values.len()];
        while let Some(v) = stack.pop() {
            if v == a {
                return true;
            }
            if !std::mem::replace(&mut seen[v], true) {
                stack.extend(values[v].op.iter().flat_map(|op| op.operands()));
            }
        }
        false
    };
    drawing.windows(2).all(|w| depends(w[1], w[0]))
}

/// An embedding's padding row is never trained (PyTorch's `padding_idx`): its analytic
/// gradient must be exactly 0, and its numeric one, which sees the row's effect on the loss,
/// is left out of the comparison.
fn padding_rows(g: &Graph, report: &mut kiln::check::GradCheckReport) -> Result<(), String> {
    for v in &g.body.values {
        let Some(gen::Op::Embedding {
            dim,
            padding_idx: Some(p),
            ..
        }) = &v.op
        else {
            continue;
        };
        let name = format!("{}.weight", v.name);
        let param = report
            .params
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no gradient for `{name}`"))?;
        let row = p * dim..(p + 1) * dim;
        if let Some(a) = param.analytic[row.clone()].iter().find(|a| **a != 0.0) {
            return Err(format!(
                "`{name}`: the padding row {p} has the gradient {a:e}, not 0"
            ));
        }
        param.numeric[row].fill(0.0);
        param.max_abs_error = param
            .analytic
            .iter()
            .zip(&param.numeric)
            .fold(0.0, |m, (a, n)| m.max((a - n).abs()));
    }
    Ok(())
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
    /// The largest gradient error relative to the largest gradient (or 1) of a passing model.
    pub max_grad_err: f64,
    /// Buffers compared after a training step.
    pub buffers_checked: usize,
    /// Models without a loss, checked forward only.
    pub forward_only: usize,
    /// Models whose gradients passed only with the smaller step.
    pub small_step: usize,
    /// The largest f32 gradient error relative to the largest f64 gradient.
    pub max_f32_grad_err: f64,
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
                    s.buffers_checked += o.buffers_checked;
                    s.forward_only += usize::from(o.forward_only);
                    s.small_step += usize::from(o.small_step);
                    s.max_f32_grad_err = s.max_f32_grad_err.max(o.max_f32_grad_err);
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
             relative to the largest gradient {:.1e}); training-mode forward compared on {}, \
             {} running-statistics buffers after a step; f32 gradients within {:.1e} of the \
             largest f64 gradient; {} models without a loss checked forward only; {} models' \
             gradients checked with the smaller step",
            self.models,
            self.failures.len(),
            self.grad_elements,
            self.max_grad_err,
            self.train_forward_checked,
            self.buffers_checked,
            self.max_f32_grad_err,
            self.forward_only,
            self.small_step
        )?;
        writeln!(f, "ops (count of uses over all models):")?;
        for (op, n) in &self.ops {
            writeln!(f, "  {op:<36} {n}")?;
        }
        Ok(())
    }
}

/// Each parameter's largest difference between its analytic and numeric gradients.
fn param_errors(report: &kiln::check::GradCheckReport) -> Vec<f64> {
    report
        .params
        .iter()
        .map(|p| {
            p.analytic
                .iter()
                .zip(&p.numeric)
                .map(|(a, n)| (a - n).abs())
                .fold(0.0, f64::max)
        })
        .collect()
}

/// Richardson's extrapolation of central differences at `ε` (`coarse`) and `ε/10` (`fine`):
/// their error is `c·ε² + O(ε⁴)`, so `(100·fine − coarse) / 99` is the derivative to
/// `O(ε⁴)`. The analytic gradients are `fine`'s.
fn richardson(
    coarse: &kiln::check::GradCheckReport,
    fine: &kiln::check::GradCheckReport,
) -> kiln::check::GradCheckReport {
    let params = coarse
        .params
        .iter()
        .zip(&fine.params)
        .map(|(c, f)| {
            let numeric: Vec<f64> = c
                .numeric
                .iter()
                .zip(&f.numeric)
                .map(|(&c, &f)| (100.0 * f - c) / 99.0)
                .collect();
            let errors = f.analytic.iter().zip(&numeric).map(|(&a, &n)| {
                let abs = (a - n).abs();
                (abs, abs / n.abs().max(f64::MIN_POSITIVE))
            });
            let (max_abs_error, max_rel_error) =
                errors.fold((0.0f64, 0.0f64), |(ma, mr), (a, r)| (ma.max(a), mr.max(r)));
            kiln::check::ParamCheck {
                name: f.name,
                shape: f.shape.clone(),
                analytic: f.analytic.clone(),
                numeric,
                max_abs_error,
                max_rel_error,
            }
        })
        .collect();
    kiln::check::GradCheckReport {
        eps: fine.eps,
        params,
    }
}
