//! Training checkpoints: the model, the optimizer state, the epoch counters, the history, the
//! early-stopping state and the best weights, written so that a crash at any moment leaves a
//! complete checkpoint behind and a resumed run continues bit for bit.
//!
//! A checkpoint directory holds one subdirectory per saved epoch and a pointer to the latest:
//!
//! ```text
//! checkpoints/
//!   checkpoint.json            {"format": "kiln-checkpoint", "version": 1, "latest": "epoch-0004"}
//!   epoch-0004/
//!     model.safetensors        the weights (kiln::io::save; PyTorch state_dict names)
//!     optimizer.safetensors    the optimizer's buffers, as `<param>.<buffer>` (`h1.weight.exp_avg`)
//!     best.safetensors         the best epoch's weights (with early stopping)
//!     ema.safetensors          the moving average of the weights (with `Trainer::ema`)
//!     state.json               counters, learning rate, optimizer scalars, early stopping, history
//! ```
//!
//! A save writes a complete new `epoch-NNNN/` first (each file atomically), then replaces
//! `checkpoint.json` atomically, then removes the older epoch directories. Until the pointer
//! moves, the previous checkpoint is the valid one; so an interrupted save, or one that fails,
//! loses at most the epoch being saved.
//!
//! Power loss, too: every file is written to `<name>.tmp`, synced (`fsync`) and renamed, and
//! the directory holding it is synced after the rename; the epoch directory's own entry is
//! synced before the pointer is written, and a new checkpoint directory's entry when it is
//! created. `tests/train_crash.rs` kills a training process with SIGKILL at random moments
//! and checks that the newest checkpoint always loads and matches an uninterrupted run.

use super::early_stopping::EarlyStopping;
use super::files::{read_json, sync_parent, write_json, write_safetensors, Fields, TensorOut};
use super::history::History;
use super::state::OptimizerState;
use crate::io::TensorFile;
use crate::json::Value;
use crate::{Error, Float, Model, Result};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

const POINTER: &str = "checkpoint.json";
const FORMAT: &str = "kiln-checkpoint";
const VERSION: u64 = 1;
const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const BEST_FILE: &str = "best.safetensors";
const EMA_FILE: &str = "ema.safetensors";
const STATE_FILE: &str = "state.json";

/// A copy of a model's parameters and buffers (its `state_dict`), to put back later: the best
/// weights that early stopping restores.
///
/// ```
/// # fn demo<M: kiln_runtime::Model<f32>>(model: &mut M) -> kiln_runtime::Result<()> {
/// use kiln_runtime::train::Weights;
/// let best = Weights::capture(model);
/// // ... more training ...
/// best.restore(model)?;
/// best.save("best.safetensors")?; // loadable with kiln::io::load
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights<F> {
    /// Name, shape and range in `values` of each tensor, in visiting order (parameters, then
    /// buffers).
    layout: Vec<(&'static str, Vec<usize>, Range<usize>)>,
    values: Vec<F>,
}

/// The model's tensors in visiting order (parameters, then buffers): name and shape.
fn model_layout<F: Float, M: Model<F>>(model: &M) -> Vec<(&'static str, Vec<usize>)> {
    let mut layout = Vec::new();
    let mut add = |name: &'static str, view: ndarray::ArrayViewD<'_, F>| {
        layout.push((name, view.shape().to_vec()));
    };
    model.visit_params(&mut add);
    model.visit_buffers(&mut add);
    layout
}

impl<F: Float> Weights<F> {
    /// The first tensor holding a NaN or an infinity, with that value.
    pub fn first_non_finite(&self) -> Option<(&'static str, F)> {
        self.layout.iter().find_map(|(name, _, range)| {
            self.values[range.clone()]
                .iter()
                .find(|v| !v.is_finite())
                .map(|&v| (*name, v))
        })
    }

    /// Copies `model`'s parameters and buffers.
    pub fn capture<M: Model<F>>(model: &M) -> Self {
        let mut weights = Self::default();
        weights.capture_from(model);
        weights
    }

    /// Whether `model` has exactly the captured tensors (names and shapes, in order), found
    /// without allocating.
    fn same_layout<M: Model<F>>(&self, model: &M) -> bool {
        let mut i = 0;
        let mut same = true;
        let mut check = |name: &'static str, view: ndarray::ArrayViewD<'_, F>| {
            same &= self
                .layout
                .get(i)
                .is_some_and(|(n, s, _)| *n == name && s.as_slice() == view.shape());
            i += 1;
        };
        model.visit_params(&mut check);
        model.visit_buffers(&mut check);
        same && i == self.layout.len()
    }

    /// Copies `model`'s parameters and buffers into `self`, reusing its memory when it already
    /// holds the same model's weights (no allocation then).
    pub fn capture_from<M: Model<F>>(&mut self, model: &M) {
        if !self.same_layout(model) {
            self.layout.clear();
            let mut start = 0;
            for (name, shape) in model_layout(model) {
                let len: usize = shape.iter().product();
                self.layout.push((name, shape, start..start + len));
                start += len;
            }
            self.values.clear();
            self.values.resize(start, F::ZERO);
        }
        let values = &mut self.values;
        let mut offset = 0;
        let mut copy = |_: &'static str, view: ndarray::ArrayViewD<'_, F>| {
            // Logical (row-major) order, whatever the view's layout.
            for (slot, &v) in values[offset..offset + view.len()]
                .iter_mut()
                .zip(view.iter())
            {
                *slot = v;
            }
            offset += view.len();
        };
        model.visit_params(&mut copy);
        model.visit_buffers(&mut copy);
    }

    /// One update of an exponential moving average of `model`'s weights held in `self`: each
    /// captured parameter moves towards the model's, `a ← a + weight · (p − a)` (PyTorch's
    /// `lerp_`, with its rounding; `weight` is `1 − decay`), and the buffers are copied, as
    /// PyTorch's `AveragedModel` with `get_ema_multi_avg_fn` and `use_buffers=False` does.
    /// Allocates nothing.
    ///
    /// # Errors
    /// [`Error::Parameter`] naming the first tensor whose name or shape differs from the
    /// captured one; `self` is then unchanged.
    pub(crate) fn average_towards<M: Model<F>>(&mut self, model: &M, weight: F) -> Result<()> {
        if !self.same_layout(model) {
            self.check(model)?;
        }
        let values = &mut self.values;
        let mut offset = 0;
        model.visit_params(&mut |_, view| {
            let slots = &mut values[offset..offset + view.len()];
            for (a, &p) in slots.iter_mut().zip(view.iter()) {
                *a = crate::optim::lerp(*a, p, weight);
            }
            offset += view.len();
        });
        model.visit_buffers(&mut |_, view| {
            for (a, &b) in values[offset..offset + view.len()]
                .iter_mut()
                .zip(view.iter())
            {
                *a = b;
            }
            offset += view.len();
        });
        Ok(())
    }

    /// Whether nothing has been captured.
    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Checks that `model` has exactly the captured tensors (names and shapes, in order).
    fn check<M: Model<F>>(&self, model: &M) -> Result<()> {
        let actual = model_layout(model);
        for (i, (name, shape)) in actual.iter().enumerate() {
            match self.layout.get(i) {
                Some((n, s, _)) if n == name && s == shape => {}
                Some((n, s, _)) => {
                    return Err(Error::Parameter {
                        name,
                        problem: format!(
                            "the saved weights have `{n}` of shape {s:?} where the model has \
                             `{name}` of shape {shape:?} (weights of another model?)"
                        ),
                    })
                }
                None => {
                    return Err(Error::Parameter {
                        name,
                        problem: "the saved weights have no such tensor (weights of another \
                                  model?)"
                            .to_string(),
                    })
                }
            }
        }
        if let Some((name, _, _)) = self.layout.get(actual.len()) {
            return Err(Error::Parameter {
                name,
                problem: "saved, but the model has no such tensor (weights of another model?)"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// Writes the captured values back into `model`.
    ///
    /// # Errors
    /// [`Error::Parameter`] naming the first tensor whose name or shape differs from the
    /// captured one; the model is then unchanged.
    pub fn restore<M: Model<F>>(&self, model: &mut M) -> Result<()> {
        self.check(model)?;
        let values = &self.values;
        let mut offset = 0;
        let mut copy = |_: &'static str, mut view: ndarray::ArrayViewMutD<'_, F>| {
            let len = view.len();
            for (slot, &v) in view.iter_mut().zip(&values[offset..offset + len]) {
                *slot = v;
            }
            offset += len;
        };
        model.visit_params_mut(&mut copy);
        model.visit_buffers_mut(&mut copy);
        Ok(())
    }

    /// Writes the weights as a safetensors file (atomically) that [`crate::io::load`] reads
    /// into a model.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: Vec<TensorOut<'_, F>> = self
            .layout
            .iter()
            .map(|(name, shape, range)| TensorOut {
                name: name.to_string(),
                shape: shape.clone(),
                data: &self.values[range.clone()],
            })
            .collect();
        write_safetensors(path.as_ref(), &tensors)
    }

    /// Reads weights for `model` (which is not changed) from a safetensors file such as
    /// [`Weights::save`] or [`crate::io::save`] writes, F32 or F64 whatever `F` is.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::File`] if the file cannot be read or is malformed;
    /// [`Error::Mismatch`] listing every tensor that is missing, mis-shaped or unexpected.
    pub fn load<M: Model<F>>(path: impl AsRef<Path>, model: &M) -> Result<Self> {
        let file = TensorFile::open(path)?;
        let mut weights = Self::default();
        let mut problems = Vec::new();
        for (name, shape) in model_layout(model) {
            let start = weights.values.len();
            match file.get::<F>(name) {
                Ok(array) if array.shape() == shape.as_slice() => {
                    weights.values.extend(array.iter().copied());
                }
                Ok(array) => problems.push(format!(
                    "`{name}` has shape {:?} in the file but {shape:?} in the model",
                    array.shape()
                )),
                Err(_) => problems.push(format!("missing `{name}` (model shape {shape:?})")),
            }
            let end = weights.values.len();
            weights.layout.push((name, shape, start..end));
        }
        for name in file.names() {
            if !weights.layout.iter().any(|(n, _, _)| *n == name) {
                let shape = file.shape(name).map(<[usize]>::to_vec).unwrap_or_default();
                problems.push(format!("unexpected `{name}` (file shape {shape:?})"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::Mismatch {
                path: file.path().to_path_buf(),
                message: problems.join("; "),
            });
        }
        Ok(weights)
    }
}

/// The state of a training run between two epochs: everything besides the model's weights that
/// a resumed run needs to continue exactly as if it had not stopped.
///
/// The trainer saves one after each epoch with [`Checkpoint::save`] and reads it back with
/// [`Checkpoint::load`] (`Trainer::resume_from`); a plain training loop can do the same:
///
/// ```no_run
/// # fn demo<M: kiln_runtime::Model<f32>>(model: &mut M, opt: &mut kiln_runtime::Adam<f32>) -> kiln_runtime::Result<()> {
/// use kiln_runtime::train::{Checkpoint, History};
/// use kiln_runtime::Optimizer;
/// let (mut first_epoch, mut history) = (0, History::default());
/// if Checkpoint::<f32>::exists("ckpt") {
///     let ckpt = Checkpoint::load("ckpt", model)?; // weights go into the model
///     opt.import_state(&ckpt.optimizer)?;
///     (first_epoch, history) = (ckpt.epochs_done, ckpt.history);
/// }
/// for epoch in first_epoch..10 {
///     // ... train one epoch, push its record to `history` ...
///     let mut ckpt = Checkpoint::new(opt.export_state(), opt.learning_rate());
///     ckpt.epochs_done = epoch + 1;
///     ckpt.history = history.clone();
///     ckpt.save("ckpt", model)?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<F> {
    /// Epochs completed; the next epoch to run.
    pub epochs_done: usize,
    /// Optimizer steps taken (the schedules' step clock).
    pub steps_done: usize,
    /// The learning rate schedules scale (the optimizer's rate when training started).
    pub base_lr: f64,
    /// The optimizer's state.
    pub optimizer: OptimizerState<F>,
    /// The history so far.
    pub history: History,
    /// The early-stopping state, when early stopping is on.
    pub early_stopping: Option<EarlyStopping>,
    /// The best epoch's weights, when early stopping restores them.
    pub best_weights: Option<Weights<F>>,
    /// The exponential moving average of the weights, when training keeps one
    /// ([`Trainer::ema`](super::Trainer::ema)); empty before the first optimizer step.
    pub ema: Option<Weights<F>>,
}

/// `epoch-NNNN`, sorting in epoch order up to 9999 epochs (and still unique beyond).
fn epoch_dir_name(epochs_done: usize) -> String {
    format!("epoch-{epochs_done:04}")
}

impl<F: Float> Checkpoint<F> {
    /// A checkpoint at the start of training: no epoch done, no step taken.
    pub fn new(optimizer: OptimizerState<F>, base_lr: f64) -> Self {
        Self {
            epochs_done: 0,
            steps_done: 0,
            base_lr,
            optimizer,
            history: History::default(),
            early_stopping: None,
            best_weights: None,
            ema: None,
        }
    }

    /// Whether `dir` holds a checkpoint (its `checkpoint.json` exists).
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join(POINTER).is_file()
    }

    /// The directory of the latest complete checkpoint in `dir` (`dir/epoch-NNNN`), where
    /// `model.safetensors` and `best.safetensors` can be found.
    ///
    /// # Errors
    /// [`Error::Io`] if `dir/checkpoint.json` cannot be read (for example because `dir` holds
    /// no checkpoint); [`Error::File`] naming it if it is malformed.
    pub fn latest(dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        let pointer = dir.join(POINTER);
        let value = read_json(&pointer)?;
        let fields = Fields::root(&pointer, &value)?;
        let format = fields.str("format")?;
        if format != FORMAT {
            return Err(fields.error("format", format!("is `{format}`, expected `{FORMAT}`")));
        }
        let version = fields.usize("version")?;
        if version as u64 != VERSION {
            return Err(fields.error(
                "version",
                format!("is {version}; this kiln reads version {VERSION}"),
            ));
        }
        let latest = fields.str("latest")?;
        // Only a plain name inside `dir`: the pointer must not lead elsewhere.
        if latest.is_empty() || latest.contains(['/', '\\']) || latest.starts_with('.') {
            return Err(fields.error("latest", format!("`{latest}` is not a directory name")));
        }
        Ok(dir.join(latest))
    }

    /// Writes the checkpoint and `model`'s weights into `dir` (created if needed) and returns
    /// the new epoch directory. See the module documentation (`kiln::train::checkpoint`) for the layout and why a
    /// crash cannot leave a half-written checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file or directory that could not be written; the previous
    /// checkpoint in `dir` then stays the valid one.
    pub fn save<M: Model<F>>(&self, dir: impl AsRef<Path>, model: &M) -> Result<PathBuf> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            // A new checkpoint directory must survive a power loss as well as its files.
            sync_parent(dir);
        }
        let mut name = epoch_dir_name(self.epochs_done);
        // Never write into the directory the pointer names (a rerun saving the same epoch
        // again): until the pointer moves, that one must stay intact.
        let current = Self::latest(dir).ok();
        if current.as_deref().and_then(Path::file_name) == Some(std::ffi::OsStr::new(&name)) {
            name.push_str("-b");
        }
        let epoch_dir = dir.join(&name);
        // Any other directory of this name is left over from an interrupted save.
        if epoch_dir.exists() {
            fs::remove_dir_all(&epoch_dir).map_err(|e| Error::io(&epoch_dir, e))?;
        }
        fs::create_dir(&epoch_dir).map_err(|e| Error::io(&epoch_dir, e))?;

        crate::io::save(model, epoch_dir.join(MODEL_FILE))?;
        let param_names = self.write_optimizer(&epoch_dir.join(OPTIMIZER_FILE), model)?;
        if let Some(best) = self.best_weights.as_ref().filter(|b| !b.is_empty()) {
            best.save(epoch_dir.join(BEST_FILE))?;
        }
        if let Some(ema) = self.ema.as_ref().filter(|e| !e.is_empty()) {
            ema.save(epoch_dir.join(EMA_FILE))?;
        }
        write_json(&epoch_dir.join(STATE_FILE), &self.state_json(param_names))?;
        sync_parent(&epoch_dir);

        let pointer = Value::object([
            ("format", FORMAT.into()),
            ("version", VERSION.into()),
            ("latest", name.as_str().into()),
        ]);
        write_json(&dir.join(POINTER), &pointer)?;

        // The new checkpoint is in force: older epoch directories can go. Best effort, as a
        // failure here loses nothing.
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(other) = file_name.to_str() else {
                    continue;
                };
                if other != name && other.starts_with("epoch-") && entry.path().is_dir() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(epoch_dir)
    }

    /// Writes the optimizer's buffers named `<param>.<buffer>`, shaped like their parameter,
    /// and returns the number of parameters (for the state file).
    fn write_optimizer<M: Model<F>>(&self, path: &Path, model: &M) -> Result<usize> {
        let params: Vec<(&'static str, Vec<usize>)> = {
            let mut params = Vec::new();
            model.visit_params(&mut |name, view| params.push((name, view.shape().to_vec())));
            params
        };
        let mut tensors = Vec::new();
        for (buffer, list) in &self.optimizer.buffers {
            if list.len() > params.len() {
                return Err(Error::file(
                    path,
                    format!(
                        "the optimizer has `{buffer}` buffers for {} parameters but the model \
                         has {} (an optimizer used with another model?)",
                        list.len(),
                        params.len()
                    ),
                ));
            }
            for ((name, shape), data) in params.iter().zip(list) {
                // A parameter whose buffer is not allocated yet (empty) is simply not written.
                if data.is_empty() {
                    continue;
                }
                let numel: usize = shape.iter().product();
                if data.len() != numel {
                    return Err(Error::file(
                        path,
                        format!(
                            "the optimizer's `{buffer}` buffer for `{name}` has {} elements but \
                             the parameter has {numel}",
                            data.len()
                        ),
                    ));
                }
                tensors.push(TensorOut {
                    name: format!("{name}.{buffer}"),
                    shape: shape.clone(),
                    data,
                });
            }
        }
        write_safetensors(path, &tensors)?;
        Ok(params.len())
    }

    fn state_json(&self, params: usize) -> Value {
        let optimizer = &self.optimizer;
        let buffers = Value::object(optimizer.buffers.iter().map(|(name, list)| {
            // How many leading parameters have the buffer allocated.
            let allocated = list.iter().take_while(|b| !b.is_empty()).count();
            (name.as_str(), allocated.into())
        }));
        let scalars = Value::object(
            (optimizer.scalars.iter()).map(|(name, &value)| (name.as_str(), value.into())),
        );
        Value::object([
            ("format", "kiln-train-state".into()),
            ("version", VERSION.into()),
            ("dtype", F::NAME.into()),
            ("epochs_done", self.epochs_done.into()),
            ("steps_done", self.steps_done.into()),
            ("base_lr", self.base_lr.into()),
            ("parameters", params.into()),
            (
                "optimizer",
                Value::object([
                    ("kind", optimizer.kind.as_str().into()),
                    ("scalars", scalars),
                    ("buffers", buffers),
                ]),
            ),
            (
                "early_stopping",
                self.early_stopping
                    .as_ref()
                    .map(EarlyStopping::to_json)
                    .into(),
            ),
            (
                "has_best_weights",
                (self.best_weights.as_ref())
                    .is_some_and(|b| !b.is_empty())
                    .into(),
            ),
            (
                "has_ema",
                self.ema.as_ref().is_some_and(|e| !e.is_empty()).into(),
            ),
            ("history", self.history.to_json()),
        ])
    }

    /// Reads the latest checkpoint in `dir`, loads its weights into `model` and returns the
    /// rest. Everything is read and checked against `model` before the model is touched, so
    /// on error the model is unchanged.
    ///
    /// The optimizer state is returned, not applied: pass it to the optimizer's
    /// `import_state`. (To check that it fits the optimizer before changing the model, use
    /// [`Checkpoint::read`].)
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be read; [`Error::File`] naming the file and the field or
    /// tensor that is malformed; [`Error::Mismatch`] if the checkpoint is another model's.
    pub fn load<M: Model<F>>(dir: impl AsRef<Path>, model: &mut M) -> Result<Self> {
        let (checkpoint, weights) = Self::read(dir, model)?;
        weights.restore(model)?;
        Ok(checkpoint)
    }

    /// Reads the latest checkpoint in `dir` for `model` without changing the model: the
    /// checkpoint and the model's saved weights (to put in with [`Weights::restore`]), both
    /// checked against `model`.
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn read<M: Model<F>>(dir: impl AsRef<Path>, model: &M) -> Result<(Self, Weights<F>)> {
        let epoch_dir = Self::latest(dir)?;
        let state_path = epoch_dir.join(STATE_FILE);
        let value = read_json(&state_path)?;
        let fields = Fields::root(&state_path, &value)?;
        let format = fields.str("format")?;
        if format != "kiln-train-state" {
            return Err(fields.error(
                "format",
                format!("is `{format}`, expected `kiln-train-state`"),
            ));
        }

        let opt = fields.object("optimizer")?;
        let mut optimizer = OptimizerState::new(opt.str("kind")?);
        optimizer.source = Some(state_path.clone());
        let scalars = opt.object("scalars")?;
        for key in scalars.map.keys() {
            optimizer.scalars.insert(key.clone(), scalars.f64(key)?);
        }
        let buffers = opt.object("buffers")?;
        let optimizer_path = epoch_dir.join(OPTIMIZER_FILE);
        let params: Vec<(&'static str, Vec<usize>)> = {
            let mut params = Vec::new();
            model.visit_params(&mut |name, view| params.push((name, view.shape().to_vec())));
            params
        };
        let saved_params = fields.usize("parameters")?;
        if saved_params != params.len() {
            return Err(Error::Mismatch {
                path: state_path.clone(),
                message: format!(
                    "field `parameters`: the checkpoint was saved from a model with \
                     {saved_params} parameter tensors; this model has {} (another model?)",
                    params.len()
                ),
            });
        }
        if !buffers.map.is_empty() {
            let file = TensorFile::open(&optimizer_path)?;
            for key in buffers.map.keys() {
                let allocated = buffers.usize(key)?;
                if allocated > params.len() {
                    return Err(buffers.error(
                        key,
                        format!(
                            "{allocated} buffers for a model of {} parameters",
                            params.len()
                        ),
                    ));
                }
                let mut list = Vec::with_capacity(allocated);
                for (name, shape) in &params[..allocated] {
                    let tensor = format!("{name}.{key}");
                    if !file.contains(&tensor) {
                        // Either file may be the damaged one: name both.
                        return Err(buffers.error(
                            key,
                            format!(
                                "lists a buffer that {} does not hold: no tensor `{tensor}`",
                                optimizer_path.display()
                            ),
                        ));
                    }
                    let array = file.get::<F>(&tensor)?;
                    if array.shape() != shape.as_slice() {
                        return Err(Error::Mismatch {
                            path: optimizer_path.clone(),
                            message: format!(
                                "`{tensor}` has shape {:?} but the parameter `{name}` has \
                                 shape {shape:?}",
                                array.shape()
                            ),
                        });
                    }
                    list.push(array.iter().copied().collect());
                }
                optimizer.buffers.insert(key.clone(), list);
            }
        }

        let early_stopping = match fields.get("early_stopping")? {
            Value::Null => None,
            _ => Some(EarlyStopping::from_json(&fields.object("early_stopping")?)?),
        };
        let best_weights = if fields.bool("has_best_weights")? {
            Some(Weights::load(epoch_dir.join(BEST_FILE), model)?)
        } else {
            None
        };
        // Checkpoints written before moving averages existed have no such key: none.
        let ema = if fields.map.get("has_ema").is_some() && fields.bool("has_ema")? {
            Some(Weights::load(epoch_dir.join(EMA_FILE), model)?)
        } else {
            None
        };
        let history = History::from_json(&fields.object("history")?)?;
        let epochs_done = fields.usize("epochs_done")?;
        if history.len() != epochs_done {
            return Err(fields.error(
                "history",
                format!(
                    "has {} epochs but `epochs_done` is {epochs_done}",
                    history.len()
                ),
            ));
        }
        let checkpoint = Self {
            epochs_done,
            steps_done: fields.usize("steps_done")?,
            base_lr: fields.f64("base_lr")?,
            optimizer,
            history,
            early_stopping,
            best_weights,
            ema,
        };
        let weights = Weights::load(epoch_dir.join(MODEL_FILE), model)?;
        Ok((checkpoint, weights))
    }
}
