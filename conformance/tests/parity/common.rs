//! Helpers for the PyTorch parity tests: open a fixture case from `tests/fixtures/` (see its
//! README), load its `param.*` tensors into a model by name, compare tensors with a
//! relative-plus-absolute tolerance, and replay the optimizer trajectories it records.
//!
//! A [`Report`] collects every comparison of a test: the first and worst bad element of each
//! mismatched tensor, statistics per category, and the fixture tensors that were never
//! compared. [`Report::finish`] prints the statistics and panics with every failure at once.
//!
//! A report made by [`Fixture::report`] also knows every reference result the case holds
//! (forward values, loss, gradients, running statistics, optimizer trajectories), so a test that
//! forgets a whole part of the comparison fails at [`Report::finish`] instead of passing on
//! what it did compare.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use kiln::io::TensorFile;
use kiln::ndarray::{arr0, Array, Array1, ArrayD, ArrayViewD, Dimension};
use kiln::{Adam, AdamW, Float, Model, Optimizer, RmsProp, Sgd};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The repository's `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// The `expected.json` of a JSON fixture folder (`lr_schedules`, `optimizers`).
pub fn expected_json(folder: &str) -> Value {
    let path = fixtures_dir().join(folder).join("expected.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A JSON array of numbers.
pub fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// The number `key` of a case's config.
pub fn num(config: &Value, key: &str) -> f64 {
    config[key]
        .as_f64()
        .unwrap_or_else(|| panic!("config {key}"))
}

/// A directory for files the tests write (under Cargo's per-target temporary directory).
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parity");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// One tensor to write with [`write_safetensors`]: name, dtype, shape, little-endian data.
pub struct RawTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    /// A float tensor in `F`'s dtype, in logical (row-major) order.
    pub fn float<F: Float>(name: &str, value: ArrayViewD<'_, F>) -> Self {
        let mut data = Vec::with_capacity(value.len() * std::mem::size_of::<F>());
        for &v in value.iter() {
            v.write_le(&mut data);
        }
        RawTensor {
            name: name.to_string(),
            dtype: reference_dtype(F::DTYPE),
            shape: value.shape().to_vec(),
            data,
        }
    }
}

/// kiln's name for a dtype as the `safetensors` crate's (the fixtures are written with the
/// crate, independently of kiln's own writer).
pub fn reference_dtype(dtype: kiln::io::Dtype) -> safetensors::Dtype {
    serde_json::from_value(serde_json::Value::from(dtype.name()))
        .unwrap_or_else(|e| panic!("safetensors has no dtype {dtype}: {e}"))
}

/// Writes `tensors` to the safetensors file `path`, with the metadata torch writes.
pub fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .unwrap_or_else(|e| panic!("tensor `{}`: {e}", t.name));
            (t.name.clone(), view)
        })
        .collect();
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `|actual − expected| ≤ rtol · max(|actual|, |expected|) + atol`, element by element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    /// Bit-for-bit equality (for values that are copied, not computed).
    pub const EXACT: Tolerance = Tolerance {
        rtol: 0.0,
        atol: 0.0,
    };
    const F64: Tolerance = Tolerance {
        rtol: 1e-9,
        atol: 1e-12,
    };

    /// Forward values, the loss and gradients.
    pub fn core<F: Float>() -> Self {
        if is_f64::<F>() {
            Self::F64
        } else {
            Tolerance {
                rtol: 1e-4,
                atol: 1e-6,
            }
        }
    }

    /// Parameters after optimizer steps: in f32 the rounding differences of the gradients
    /// are amplified by normalising optimizers (Adam, RMSprop), hence the looser bound.
    pub fn trajectory<F: Float>() -> Self {
        if is_f64::<F>() {
            Self::F64
        } else {
            Tolerance {
                rtol: 1e-3,
                atol: 1e-5,
            }
        }
    }

    fn allowed(self, a: f64, b: f64) -> f64 {
        self.rtol * a.abs().max(b.abs()) + self.atol
    }
}

/// Whether `F` is `f64` (the fixtures come in `f64` and `f32`).
pub fn is_f64<F: Float>() -> bool {
    match F::NAME {
        "f64" => true,
        "f32" => false,
        other => panic!("the fixtures exist for f32 and f64, not {other}"),
    }
}

/// The multi-index of row-major position `flat` in `shape`, as `[i, j, ...]`.
fn index_of(flat: usize, shape: &[usize]) -> String {
    let mut rest = flat;
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = rest % dim.max(1);
        rest /= dim.max(1);
    }
    format!("{index:?}")
}

/// Extremes of one category of comparisons, for the printed summary.
#[derive(Clone, Debug, Default)]
struct Stats {
    tensors: usize,
    elements: usize,
    /// Largest `|a − b| / max(|a|, |b|)` over elements where the relative term of the
    /// tolerance dominates (`max(|a|, |b|) ≥ atol / rtol`); tinier values are bounded by
    /// `atol` and their relative error says nothing.
    max_rel: f64,
    max_rel_at: String,
    /// Largest `|a − b|` over all elements.
    max_abs: f64,
    /// Largest `|a − b| / allowed`: how much of the tolerance was used (≤ 1 passes).
    max_used: f64,
}

/// The outcome of one test's comparisons. See the module documentation.
pub struct Report {
    title: String,
    stats: BTreeMap<String, Stats>,
    failures: Vec<String>,
    checked: BTreeSet<String>,
    /// Fixture tensors that [`Report::finish`] requires to have been compared.
    expected: BTreeSet<String>,
    /// Observations that are not failures, printed by [`Report::finish`].
    notes: Vec<String>,
}

impl Report {
    /// An empty report for the test called `title` (e.g. `mlp_relu f32`).
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            stats: BTreeMap::new(),
            failures: Vec::new(),
            checked: BTreeSet::new(),
            expected: BTreeSet::new(),
            notes: Vec::new(),
        }
    }

    /// This report, requiring at [`Report::finish`] that every one of `names` was compared.
    pub fn expecting<'n>(mut self, names: impl IntoIterator<Item = &'n str>) -> Self {
        self.expected.extend(names.into_iter().map(str::to_string));
        self
    }

    /// Excuses the expected tensor `name` from the check at [`Report::finish`] and notes why.
    pub fn waive(&mut self, name: &str, why: &str) {
        assert!(
            self.expected.remove(name),
            "`{name}` is waived but is not an expected result of the case"
        );
        self.note(format!("`{name}` is not compared: {why}"));
    }

    /// Records an observation that is not a failure (printed by [`Report::finish`]).
    pub fn note(&mut self, message: impl Into<String>) {
        self.notes.push(message.into());
    }

    /// Records a failure that is not a tensor mismatch.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.failures.push(message.into());
    }

    /// Compares kiln's `actual` with the reference tensor `expected`, called `name` (the
    /// fixture's tensor name) in messages, and records the result under `category`.
    pub fn check<F: Float>(
        &mut self,
        category: &str,
        name: &str,
        actual: ArrayViewD<'_, F>,
        expected: ArrayViewD<'_, F>,
        tol: Tolerance,
    ) {
        self.checked.insert(name.to_string());
        let what = format!(
            "{category} `{name}` ({}, rtol {:e}, atol {:e})",
            F::NAME,
            tol.rtol,
            tol.atol
        );
        if actual.shape() != expected.shape() {
            self.fail(format!(
                "{what}: kiln's shape is {:?} but torch's is {:?}",
                actual.shape(),
                expected.shape()
            ));
            return;
        }
        let shape = expected.shape().to_vec();
        let stats = self.stats.entry(category.to_string()).or_default();
        stats.tensors += 1;
        stats.elements += expected.len();
        let mut bad = 0usize;
        let mut first_bad = None;
        // (share of the tolerance used, flat index)
        let mut worst: Option<(f64, usize)> = None;
        for (i, (&a, &b)) in actual.iter().zip(expected.iter()).enumerate() {
            let (a, b) = (a.to_f64(), b.to_f64());
            let err = (a - b).abs();
            let allowed = tol.allowed(a, b);
            // NaN compares false, so it fails and counts as infinitely far off.
            let ok = err <= allowed;
            let used = if ok {
                if allowed > 0.0 {
                    err / allowed
                } else {
                    0.0
                }
            } else if err.is_nan() || allowed == 0.0 {
                f64::INFINITY
            } else {
                err / allowed
            };
            if !ok {
                bad += 1;
                first_bad.get_or_insert(i);
            }
            if worst.is_none_or(|(w, _)| used > w) {
                worst = Some((used, i));
            }
            let scale = a.abs().max(b.abs());
            if tol.rtol > 0.0 && scale >= tol.atol / tol.rtol && scale > 0.0 {
                let rel = err / scale;
                if rel > stats.max_rel || rel.is_nan() {
                    stats.max_rel = rel;
                    stats.max_rel_at = format!("{name}{}", index_of(i, &shape));
                }
            }
            if err > stats.max_abs || err.is_nan() {
                stats.max_abs = err;
            }
            if used > stats.max_used {
                stats.max_used = used;
            }
        }
        if let Some(first) = first_bad {
            let element = |i: usize| {
                let a = actual.iter().nth(i).map_or(f64::NAN, |v| v.to_f64());
                let b = expected.iter().nth(i).map_or(f64::NAN, |v| v.to_f64());
                format!(
                    "at {}: kiln {a:.17e} vs torch {b:.17e} (|diff| {:.3e}, allowed {:.3e})",
                    index_of(i, &shape),
                    (a - b).abs(),
                    tol.allowed(a, b)
                )
            };
            let (_, worst) = worst.expect("a bad element exists");
            self.fail(format!(
                "{what}: {bad} of {} elements out of tolerance; first {}; worst {}",
                expected.len(),
                element(first),
                element(worst)
            ));
        }
    }

    /// Compares a scalar (`loss`), stored as a 0-d tensor.
    pub fn check_scalar<F: Float>(
        &mut self,
        category: &str,
        name: &str,
        actual: F,
        expected: ArrayViewD<'_, F>,
        tol: Tolerance,
    ) {
        let actual = arr0(actual).into_dyn();
        self.check(category, name, actual.view(), expected, tol);
    }

    /// Records a failure for every name in `names` that no `check` compared.
    pub fn require_checked<'n>(&mut self, what: &str, names: impl IntoIterator<Item = &'n str>) {
        let missing: Vec<&str> = names
            .into_iter()
            .filter(|n| !self.checked.contains(*n))
            .collect();
        if !missing.is_empty() {
            self.fail(format!(
                "{what}: the fixture has tensors the test never compared: {}",
                missing.join(", ")
            ));
        }
    }

    /// Prints the statistics of every category, then panics listing every failure, if any;
    /// an expected tensor (see [`Report::expecting`]) that no `check` compared is a failure.
    pub fn finish(mut self) {
        let never: Vec<&str> = self
            .expected
            .difference(&self.checked)
            .map(String::as_str)
            .collect();
        if !never.is_empty() {
            let message = format!(
                "the test never compared these reference results: {}",
                never.join(", ")
            );
            self.fail(message);
        }
        let mut out = format!("== parity {}\n", self.title);
        for (category, s) in &self.stats {
            let _ = writeln!(
                out,
                "   {category:<22} {:>3} tensors {:>5} elements   max rel err {:>9.3e}{}   max |diff| {:>9.3e}   tolerance used {:>6.2}%",
                s.tensors,
                s.elements,
                s.max_rel,
                if s.max_rel_at.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.max_rel_at)
                },
                s.max_abs,
                100.0 * s.max_used
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "   note: {note}");
        }
        println!("{out}");
        if !self.failures.is_empty() {
            panic!(
                "parity {}: {} failure(s):\n  - {}",
                self.title,
                self.failures.len(),
                self.failures.join("\n  - ")
            );
        }
    }
}

/// One fixture case in one dtype: its manifest and tensor files.
pub struct Fixture {
    /// The case's name (`mlp_relu`).
    pub case: String,
    /// `f32` or `f64`.
    pub dtype: &'static str,
    /// The parsed `<dtype>.json`.
    pub manifest: Value,
    dir: PathBuf,
    core: TensorFile,
    /// Optimizer name → its trajectory file, as listed in the manifest's `files.optim`.
    optim: BTreeMap<String, TensorFile>,
}

impl Fixture {
    /// Opens `tests/fixtures/<case>/` in `F`'s dtype: the manifest, the core file and every
    /// optimizer file the manifest lists.
    pub fn open<F: Float>(case: &str) -> Self {
        let dtype = F::NAME;
        let dir = fixtures_dir().join(case);
        let manifest_path = dir.join(format!("{dtype}.json"));
        let text = std::fs::read_to_string(&manifest_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest_path.display()));
        let manifest: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", manifest_path.display()));
        assert_eq!(
            manifest["case"].as_str(),
            Some(case),
            "{}: wrong case",
            manifest_path.display()
        );
        let expected_dtype = if is_f64::<F>() { "float64" } else { "float32" };
        assert_eq!(
            manifest["dtype"].as_str(),
            Some(expected_dtype),
            "{}: wrong dtype",
            manifest_path.display()
        );
        let open = |file: &Value| {
            let file = file
                .as_str()
                .unwrap_or_else(|| panic!("{}: a file name is not a string", case));
            TensorFile::open(dir.join(file)).unwrap_or_else(|e| panic!("{e}"))
        };
        let core = open(&manifest["files"]["core"]);
        let optim = manifest["files"]["optim"]
            .as_object()
            .map(|files| {
                files
                    .iter()
                    .map(|(name, file)| (name.clone(), open(file)))
                    .collect()
            })
            .unwrap_or_default();
        Fixture {
            case: case.to_string(),
            dtype,
            manifest,
            dir,
            core,
            optim,
        }
    }

    /// A [`Report`] titled after the case that requires every reference result of the case to
    /// be compared: `output.*`, `eval.output.*`, `loss`, `buffer.*`, the parameter gradients
    /// `grad.*` and every optimizer file's `after.*`. The inputs, targets and initial parameters
    /// are givens, and `grad.input.*` has no counterpart (kiln computes no gradient with respect
    /// to the input data).
    pub fn report(&self) -> Report {
        let results = self.core.names().into_iter().filter(|name| {
            ["output.", "eval.output.", "buffer.", "grad."]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                && !name.starts_with("grad.input.")
                || *name == "loss"
        });
        let trajectories = self.optim.values().flat_map(|file| file.names());
        Report::new(self.title())
            .expecting(results)
            .expecting(trajectories)
    }

    /// `<case> <dtype>`, for report titles.
    pub fn title(&self) -> String {
        format!("{} {}", self.case, self.dtype)
    }

    /// The directory of the case.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn get_from<F: Float>(&self, file: &TensorFile, name: &str) -> ArrayD<F> {
        let dtype = file.dtype(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dtype,
            F::DTYPE,
            "{}: `{name}` is {dtype:?}, expected {:?} in the {} case",
            file.path().display(),
            F::DTYPE,
            self.dtype
        );
        file.get(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Core tensor `name` (it must be stored in `F`'s dtype: nothing is converted).
    pub fn tensor<F: Float>(&self, name: &str) -> ArrayD<F> {
        self.get_from(&self.core, name)
    }

    /// Core tensor `name` with a static rank.
    pub fn array<F: Float, D: Dimension>(&self, name: &str) -> Array<F, D> {
        let t = self.tensor::<F>(name);
        let shape = t.shape().to_vec();
        t.into_dimensionality().unwrap_or_else(|e| {
            panic!(
                "{}: `{name}` has shape {shape:?}, not the expected rank: {e}",
                self.title()
            )
        })
    }

    /// Core tensor `name` as class labels (int64 in the fixtures).
    pub fn labels(&self, name: &str) -> Array1<usize> {
        Array1::from(self.core.labels(name).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The core tensor names starting with `prefix`.
    pub fn names_with(&self, prefix: &str) -> Vec<&str> {
        self.core
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// Sets every parameter of `model` to the case's `param.<name>`. Panics unless every
    /// model parameter has a tensor of the same shape and every `param.*` tensor was used.
    pub fn load_params<F: Float, M: Model<F>>(&self, model: &mut M) {
        let mut used = BTreeSet::new();
        let mut problems = Vec::new();
        model.visit_params_mut(&mut |name, mut view| {
            let key = format!("param.{name}");
            if !self.core.contains(&key) {
                problems.push(format!("model parameter `{name}` has no `{key}`"));
                return;
            }
            let value = self.tensor::<F>(&key);
            if value.shape() != view.shape() {
                problems.push(format!(
                    "`{name}` is {:?} in the model but `{key}` is {:?}",
                    view.shape(),
                    value.shape()
                ));
                return;
            }
            view.assign(&value);
            used.insert(key);
        });
        for name in self.names_with("param.") {
            if !used.contains(name) {
                problems.push(format!("`{name}` matches no model parameter"));
            }
        }
        assert!(
            problems.is_empty(),
            "{}: the model does not match the fixture's parameters: {}",
            self.title(),
            problems.join("; ")
        );
    }

    /// Compares forward value `actual` with `output.<name>`.
    pub fn check_output<F: Float>(
        &self,
        report: &mut Report,
        category: &str,
        name: &str,
        actual: ArrayViewD<'_, F>,
    ) {
        let key = format!("output.{name}");
        let expected = self.tensor::<F>(&key);
        report.check(
            category,
            &key,
            actual,
            expected.view(),
            Tolerance::core::<F>(),
        );
    }

    /// Compares the inference-mode (`forward`) value of step `name` with the fixture: with
    /// `eval.output.<name>` when the case has it (the batch-norm cases record the EVAL-mode
    /// forward for the batch-norm step and every step after it), otherwise with
    /// `output.<name>` (steps that do not depend on the mode).
    pub fn check_inference_output<F: Float>(
        &self,
        report: &mut Report,
        name: &str,
        actual: ArrayViewD<'_, F>,
    ) {
        let eval = format!("eval.output.{name}");
        if self.core.contains(&eval) {
            let expected = self.tensor::<F>(&eval);
            report.check(
                "output (forward, eval)",
                &eval,
                actual,
                expected.view(),
                Tolerance::core::<F>(),
            );
        } else {
            self.check_output(report, "output (forward)", name, actual);
        }
    }

    /// Compares every buffer of `model` (batch-norm running statistics) with
    /// `buffer.<name>`, and fails for a model buffer without a fixture tensor or a `buffer.*`
    /// tensor that no model buffer matches. A no-op for models and cases without buffers.
    pub fn check_buffers<F: Float, M: Model<F>>(&self, report: &mut Report, model: &M) {
        model.visit_buffers(&mut |name, view| {
            let key = format!("buffer.{name}");
            if !self.core.contains(&key) {
                report.fail(format!(
                    "kiln has a buffer `{name}` but there is no `{key}`"
                ));
                return;
            }
            let expected = self.tensor::<F>(&key);
            report.check(
                "buffer",
                &key,
                view,
                expected.view(),
                Tolerance::core::<F>(),
            );
        });
        report.require_checked("buffers", self.names_with("buffer."));
    }

    /// Compares the loss with `loss`.
    pub fn check_loss<F: Float>(&self, report: &mut Report, loss: F) {
        let expected = self.tensor::<F>("loss");
        report.check_scalar(
            "loss",
            "loss",
            loss,
            expected.view(),
            Tolerance::core::<F>(),
        );
    }

    /// Compares every gradient in `grads` with `grad.<name>`, and fails for any `grad.*` of a
    /// parameter that `grads` lacks. `grad.input.*` (d loss / d input) is not compared: kiln
    /// computes no gradient with respect to the input data.
    pub fn check_grads<F: Float, M: Model<F>>(&self, report: &mut Report, grads: &M::Grads) {
        M::visit_grads(grads, &mut |name, view| {
            let key = format!("grad.{name}");
            if !self.core.contains(&key) {
                report.fail(format!(
                    "kiln has a gradient `{name}` but there is no `{key}`"
                ));
                return;
            }
            let expected = self.tensor::<F>(&key);
            report.check("grad", &key, view, expected.view(), Tolerance::core::<F>());
        });
        let params = self
            .names_with("grad.")
            .into_iter()
            .filter(|n| !n.starts_with("grad.input."));
        report.require_checked("gradients", params);
    }

    /// Loads `<dtype>.state_dict.safetensors` (a PyTorch `state_dict`) into `model` with
    /// `kiln::io::load` and checks that every parameter then equals `param.<name>` exactly.
    pub fn check_state_dict<F: Float, M: Model<F>>(&self, report: &mut Report, mut model: M) {
        let path = self
            .dir
            .join(format!("{}.state_dict.safetensors", self.dtype));
        if let Err(e) = kiln::io::load(&mut model, &path) {
            report.fail(format!("kiln::io::load of the state_dict failed: {e}"));
            return;
        }
        model.visit_params(&mut |name, view| {
            let key = format!("param.{name}");
            let expected = self.tensor::<F>(&key);
            report.check("state_dict", &key, view, expected.view(), Tolerance::EXACT);
        });
    }

    /// The `state_dict` check for models with buffers (batch norm's running statistics).
    ///
    /// PyTorch's `state_dict()` of a batch norm holds `running_mean`, `running_var` and the
    /// int64 `num_batches_tracked` besides `weight` and `bias`, but the fixtures' state_dict
    /// files hold the parameters only (README: names `<layer>.weight`, `<layer>.bias`), while
    /// `kiln::io::load` requires exactly the model's parameters and buffers (as torch's
    /// `load_state_dict(strict=True)` does). So, with `fresh` building the model at its
    /// initial state:
    ///
    /// 1. `kiln::io::load` of the fixture file. If kiln accepts it, every parameter must equal
    ///    `param.*` and every buffer keep its initial value. If kiln rejects it, the error
    ///    must be a mismatch naming each buffer the file lacks, and the model must be left
    ///    unchanged; the report notes the rejection (it is not counted as a failure).
    /// 2. `kiln::io::load` of the fixture file plus the missing buffers at their initial
    ///    values (what torch's state_dict of the freshly built model holds, save for
    ///    `num_batches_tracked`): it must succeed, with every parameter bit-equal to
    ///    `param.*` and every buffer at its initial value.
    ///
    /// A file holding every buffer gets [`Fixture::check_state_dict`] and its buffers compared.
    pub fn check_state_dict_with_buffers<F: Float, M: Model<F>>(
        &self,
        report: &mut Report,
        fresh: impl Fn() -> M,
    ) {
        let path = self
            .dir
            .join(format!("{}.state_dict.safetensors", self.dtype));
        let file = TensorFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut initial: Vec<(&'static str, ArrayD<F>)> = Vec::new();
        fresh().visit_buffers(&mut |name, view| initial.push((name, view.to_owned())));
        let missing: Vec<&(&'static str, ArrayD<F>)> = initial
            .iter()
            .filter(|(name, _)| !file.contains(name))
            .collect();
        if missing.is_empty() {
            let mut model = fresh();
            self.check_state_dict(report, fresh());
            if kiln::io::load(&mut model, &path).is_ok() {
                model.visit_buffers(&mut |name, view| {
                    let expected = self.get_from::<F>(&file, name);
                    report.check("state_dict", name, view, expected.view(), Tolerance::EXACT);
                });
            }
            return;
        }

        // 1. The fixture file as it is: parameters only. The parameters load, the buffers
        // keep their values (kiln::io::load treats buffers as optional).
        let mut model = fresh();
        match kiln::io::load(&mut model, &path) {
            Ok(()) => self.check_loaded_state(report, &model, &initial, "state_dict"),
            Err(error) => report.fail(format!(
                "kiln::io::load of the parameters-only {} failed: {error}",
                path.display()
            )),
        }

        // 2. The fixture file completed with the buffers at their initial values.
        let mut tensors: Vec<RawTensor> = Vec::new();
        for name in file.names() {
            tensors.push(RawTensor::float(
                name,
                self.get_from::<F>(&file, name).view(),
            ));
        }
        for (name, value) in &missing {
            tensors.push(RawTensor::float(name, value.view()));
        }
        let completed = scratch_dir().join(format!(
            "{}.{}.state_dict_with_buffers.safetensors",
            self.case, self.dtype
        ));
        write_safetensors(&completed, &tensors);
        let mut model = fresh();
        match kiln::io::load(&mut model, &completed) {
            Ok(()) => self.check_loaded_state(report, &model, &initial, "state_dict (+ buffers)"),
            Err(e) => report.fail(format!(
                "kiln::io::load of the state_dict completed with the initial buffers failed: {e}"
            )),
        }
    }

    /// After a `state_dict` load: every parameter bit-equal to `param.*`, every buffer to its
    /// `initial` value.
    fn check_loaded_state<F: Float, M: Model<F>>(
        &self,
        report: &mut Report,
        model: &M,
        initial: &[(&'static str, ArrayD<F>)],
        category: &str,
    ) {
        model.visit_params(&mut |name, view| {
            let key = format!("param.{name}");
            let expected = self.tensor::<F>(&key);
            report.check(category, &key, view, expected.view(), Tolerance::EXACT);
        });
        model.visit_buffers(&mut |name, view| {
            let expected = initial
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no initial value of buffer `{name}`"));
            let key = format!("{name} (initial)");
            report.check(category, &key, view, expected.view(), Tolerance::EXACT);
        });
    }

    /// For every optimizer in the manifest: builds a fresh model with `fresh` and a fresh
    /// optimizer with the manifest's hyperparameters, runs three steps of `gradient` (which
    /// must overwrite the gradients, e.g. with `loss_and_grad` on the case's batch) then
    /// `step`, and compares the parameters with `after.<opt>.step<k>.*` after each step.
    pub fn check_trajectories<F: Float, M: Model<F>>(
        &self,
        report: &mut Report,
        fresh: impl Fn() -> M,
        mut gradient: impl FnMut(&mut M, &mut M::Grads),
    ) {
        let optimizers = self.manifest["optimizers"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no `optimizers` in the manifest", self.title()));
        assert_eq!(
            optimizers.keys().collect::<BTreeSet<_>>(),
            self.optim.keys().collect::<BTreeSet<_>>(),
            "{}: the manifest's optimizers and optimizer files differ",
            self.title()
        );
        for (name, spec) in optimizers {
            let file = &self.optim[name];
            let category = format!("optim {name}");
            let mut optimizer = AnyOptimizer::<F>::from_manifest(name, spec);
            let mut model = fresh();
            let mut grads = model.zero_grads();
            for k in 1..=3 {
                gradient(&mut model, &mut grads);
                optimizer.step(&mut model, &grads);
                model.visit_params(&mut |param, view| {
                    let key = format!("after.{name}.step{k}.{param}");
                    if !file.contains(&key) {
                        report.fail(format!("{}: no `{key}`", file.path().display()));
                        return;
                    }
                    let expected = self.get_from::<F>(file, &key);
                    report.check(
                        &category,
                        &key,
                        view,
                        expected.view(),
                        Tolerance::trajectory::<F>(),
                    );
                });
            }
            report.require_checked(&category, file.names());
        }
    }
}

/// One of kiln's optimizers, chosen and configured from a fixture manifest.
pub enum AnyOptimizer<F> {
    Sgd(Sgd<F>),
    Adam(Adam<F>),
    AdamW(AdamW<F>),
    RmsProp(RmsProp<F>),
}

impl<F: Float> AnyOptimizer<F> {
    /// The optimizer the manifest entry `spec` describes: its `torch` constructor names the
    /// class, and every entry of its `hyperparameters` is applied (an unknown one panics, so
    /// that nothing the fixture relies on is silently ignored).
    pub fn from_manifest(name: &str, spec: &Value) -> Self {
        let torch = spec["torch"].as_str().unwrap_or("");
        let class = torch
            .strip_prefix("torch.optim.")
            .and_then(|rest| rest.split('(').next())
            .unwrap_or_else(|| panic!("optimizer `{name}`: cannot read its class from {torch:?}"));
        let hyper = spec["hyperparameters"]
            .as_object()
            .unwrap_or_else(|| panic!("optimizer `{name}` has no hyperparameters"));
        let mut known: Vec<&str> = Vec::new();
        let mut num = |key: &'static str| -> f64 {
            known.push(key);
            hyper
                .get(key)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("optimizer `{name}`: `{key}` is missing or not a number"))
        };
        let optimizer = match class {
            "SGD" => AnyOptimizer::Sgd(
                Sgd::new(num("lr"))
                    .momentum(num("momentum"))
                    .dampening(num("dampening"))
                    .weight_decay(num("weight_decay")),
            ),
            "Adam" => AnyOptimizer::Adam(
                Adam::new(num("lr"))
                    .betas(num("beta1"), num("beta2"))
                    .eps(num("eps"))
                    .weight_decay(num("weight_decay")),
            ),
            "AdamW" => AnyOptimizer::AdamW(
                AdamW::new(num("lr"))
                    .betas(num("beta1"), num("beta2"))
                    .eps(num("eps"))
                    .weight_decay(num("weight_decay")),
            ),
            "RMSprop" => AnyOptimizer::RmsProp(
                RmsProp::new(num("lr"))
                    .alpha(num("alpha"))
                    .eps(num("eps"))
                    .weight_decay(num("weight_decay"))
                    .momentum(num("momentum")),
            ),
            other => panic!("optimizer `{name}`: kiln has no equivalent of torch.optim.{other}"),
        };
        let flag = |key: &str| {
            hyper.get(key).map(|v| {
                v.as_bool()
                    .unwrap_or_else(|| panic!("`{key}` is not a bool"))
            })
        };
        let optimizer = match optimizer {
            AnyOptimizer::Sgd(sgd) => {
                known.push("nesterov");
                AnyOptimizer::Sgd(sgd.nesterov(flag("nesterov").unwrap_or(false)))
            }
            AnyOptimizer::RmsProp(rms) => {
                known.push("centered");
                AnyOptimizer::RmsProp(rms.centered(flag("centered").unwrap_or(false)))
            }
            adam @ (AnyOptimizer::Adam(_) | AnyOptimizer::AdamW(_)) => {
                known.push("amsgrad");
                assert_eq!(
                    flag("amsgrad"),
                    Some(false),
                    "optimizer `{name}`: kiln's Adam has no amsgrad"
                );
                if let AnyOptimizer::AdamW(_) = adam {
                    known.push("weight_decay_style");
                    assert_eq!(
                        hyper.get("weight_decay_style").and_then(Value::as_str),
                        Some("decoupled"),
                        "optimizer `{name}`: AdamW's weight decay is decoupled"
                    );
                }
                adam
            }
        };
        let unknown: Vec<&String> = hyper
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "optimizer `{name}`: hyperparameters the test does not apply: {unknown:?}"
        );
        optimizer
    }
}

impl<F: Float> Optimizer<F> for AnyOptimizer<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        match self {
            AnyOptimizer::Sgd(o) => o.step(model, grads),
            AnyOptimizer::Adam(o) => o.step(model, grads),
            AnyOptimizer::AdamW(o) => o.step(model, grads),
            AnyOptimizer::RmsProp(o) => o.step(model, grads),
        }
    }

    fn learning_rate(&self) -> f64 {
        match self {
            AnyOptimizer::Sgd(o) => o.learning_rate(),
            AnyOptimizer::Adam(o) => o.learning_rate(),
            AnyOptimizer::AdamW(o) => o.learning_rate(),
            AnyOptimizer::RmsProp(o) => o.learning_rate(),
        }
    }

    fn set_learning_rate(&mut self, lr: f64) {
        match self {
            AnyOptimizer::Sgd(o) => o.set_learning_rate(lr),
            AnyOptimizer::Adam(o) => o.set_learning_rate(lr),
            AnyOptimizer::AdamW(o) => o.set_learning_rate(lr),
            AnyOptimizer::RmsProp(o) => o.set_learning_rate(lr),
        }
    }
}
