//! Checkpoints: safetensors files of parameters and buffers by PyTorch `state_dict` name.
//!
//! A kiln model saves and loads the same files a PyTorch user writes with
//! `safetensors.torch.save_file(model.state_dict(), path)`: names such as `fc1.weight`, PyTorch
//! layouts, little-endian F32 or F64 data. [`save`] writes atomically; [`load`] accepts F32 or
//! F64 whatever the model's float type, checks that the file holds exactly the model's tensors
//! with the right shapes, and leaves the model untouched when it does not. [`TensorFile`] reads
//! any safetensors file (fixtures, data) by tensor name.

use crate::{Error, Float, Model, Result};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

mod dtype;
mod serialize;

pub use dtype::Dtype;
pub(crate) use serialize::EncodedTensor;

/// Writes named tensors as a safetensors file at `path`, atomically, with the
/// `{"format": "pt"}` metadata PyTorch's `safetensors.torch.save_model` writes (tools such as
/// transformers check it to know the layout is PyTorch's).
pub(crate) fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a EncodedTensor)>,
) -> Result<()> {
    let tensors: Vec<_> = tensors.into_iter().collect();
    let mut names = HashSet::new();
    if let Some((name, _)) = tensors.iter().find(|(name, _)| !names.insert(*name)) {
        return Err(Error::file(
            path,
            format!("cannot write two tensors named `{name}` in one file"),
        ));
    }
    let bytes = serialize::serialize(tensors, &[("format", "pt")]);
    write_atomically(path, &bytes)
}

/// Saves the model's parameters and buffers to `path` as safetensors, in `F`'s dtype (F32 or
/// F64), under their `state_dict` names.
///
/// A tied parameter is one tensor and is written once, under its own name (`wte.weight`, not
/// the head's `head.weight`), as `safetensors.torch.save_model` writes shared tensors. In
/// PyTorch, `safetensors.torch.load_model(model, path)` loads such a file and keeps the tie;
/// `model.load_state_dict(load_file(path))` needs `strict=False` for the head's name.
///
/// The file is written to `<path>.tmp` in the same directory, flushed to disk, then renamed
/// over `path`, so a crash leaves either the old checkpoint or the new one, never half of one.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written or renamed (the temporary file is removed);
/// [`Error::File`] if `path` has no file name or the model has two tensors with one name.
pub fn save<F: Float, M: Model<F>>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut tensors: BTreeMap<&'static str, EncodedTensor> = BTreeMap::new();
    let mut duplicate = None;
    let mut add = |name: &'static str, view: ArrayViewD<'_, F>| {
        // Logical (row-major) order, whatever the view's memory layout.
        let tensor = EncodedTensor::new(view.shape().to_vec(), view.iter().copied());
        if tensors.insert(name, tensor).is_some() {
            duplicate = Some(name);
        }
    };
    model.visit_params(&mut add);
    model.visit_buffers(&mut add);
    if let Some(name) = duplicate {
        return Err(Error::file(
            path,
            format!("the model has two tensors named `{name}`"),
        ));
    }
    write_safetensors(path, tensors.iter().map(|(n, t)| (*n, t)))
}

/// Writes `bytes` to `path` through `<path>.tmp` in the same directory: write, `sync_all`,
/// rename, then sync the directory. A crash leaves the old file or the new one, never half
/// of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(Error::file(path, "not a file path (it has no file name)"));
    };
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(source) = written {
        // Best effort: the write error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, source));
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, source));
    }
    sync_parent(path);
    Ok(())
}

/// Persists a rename or a new directory entry in `path`'s directory. Directories cannot be
/// opened for syncing everywhere (e.g. Windows), and the data itself is already synced, so
/// this is best effort.
pub(crate) fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Loads parameters and buffers from the safetensors checkpoint at `path` into `model`.
///
/// The file may be F32 or F64 whatever `F` is (values are converted, F64 → f32 rounding to
/// nearest). It must hold every parameter of the model; buffers (batch-norm running
/// statistics) are loaded when present and otherwise keep their values, so a parameters-only
/// file loads too. A tied parameter (`linear(.., tied = wte)`) loads from either of its
/// names, or from both when they hold the same values: PyTorch's `state_dict` has both,
/// `safetensors.torch.save_model` keeps one of them. PyTorch's integer
/// `num_batches_tracked` counters are skipped. Every
/// missing parameter, unexpected, mis-shaped or non-float tensor is reported in one
/// [`Error::Mismatch`], and nothing is written to the model unless the whole file matches.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::File`] if it is not a well-formed
/// safetensors file (the message says where), [`Error::Mismatch`] if its tensors do not match
/// the model's. In every case the model is left unchanged.
pub fn load<F: Float, M: Model<F>>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    load_with(model, path, &LoadOptions::default()).map(|_| ())
}

/// How [`load_with`] matches a file's tensors to the model's: PyTorch's
/// `load_state_dict(strict=False)` and a renaming, for checkpoints whose module names differ
/// from the model's bindings (an `nn.Sequential`'s `features.0.weight` for `conv1.weight`).
///
/// ```no_run
/// use kiln_runtime::io::{load_with, LoadOptions};
/// # fn run<M: kiln_runtime::Model<f32>>(model: &mut M) -> kiln_runtime::Result<()> {
/// let rename = |name: &str| name.replace("conv1.", "features.0.").replace("fc.", "classifier.1.");
/// let options = LoadOptions { rename: Some(&rename), allow_unexpected: true, ..LoadOptions::default() };
/// let report = load_with(model, "mobilenet.safetensors", &options)?;
/// println!("not in the model: {:?}", report.unexpected);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// The file's name for each of the model's tensor names (`None`: the same name).
    pub rename: Option<&'a dyn Fn(&str) -> String>,
    /// Accept tensors in the file that no model tensor is read from (reported in
    /// [`LoadReport::unexpected`]) instead of refusing the file.
    pub allow_unexpected: bool,
    /// Leave the model's parameters that the file lacks as they are (reported in
    /// [`LoadReport::missing`]) instead of refusing the file.
    pub allow_missing: bool,
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("rename", &self.rename.map(|_| "fn"))
            .field("allow_unexpected", &self.allow_unexpected)
            .field("allow_missing", &self.allow_missing)
            .finish()
    }
}

/// What [`load_with`] left aside, as PyTorch's `load_state_dict` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The model's parameters the file did not have (kept as they were), by model name.
    pub missing: Vec<String>,
    /// The file's tensors the model did not read, by file name.
    pub unexpected: Vec<String>,
}

/// [`load`] with the file's names mapped and, if asked, missing or unexpected tensors
/// accepted (see [`LoadOptions`]). Shapes and dtypes must still match; a mismatch, or a
/// missing or unexpected tensor that is not allowed, is an [`Error::Mismatch`] naming every
/// problem, and the model is left unchanged.
///
/// # Errors
/// As [`load`].
pub fn load_with<F: Float, M: Model<F>>(
    model: &mut M,
    path: impl AsRef<Path>,
    options: &LoadOptions<'_>,
) -> Result<LoadReport> {
    let file = TensorFile::open(path)?;
    let file_name = |name: &str| match options.rename {
        Some(rename) => rename(name),
        None => name.to_string(),
    };
    // (name, shape, required): parameters must be in the file; buffers may be absent (a
    // parameters-only file) and then keep their current values.
    let mut expected: Vec<(&'static str, Vec<usize>, bool)> = Vec::new();
    model.visit_params(&mut |name, view| expected.push((name, view.shape().to_vec(), true)));
    model.visit_buffers(&mut |name, view| expected.push((name, view.shape().to_vec(), false)));

    // A tied parameter's owner may be in the file under its alias only (the name
    // `save_model` kept): then the alias is where its values come from.
    let tied = model.tied_names();
    let source = |name: &str| -> Option<&Entry> {
        file.entry(&file_name(name)).or_else(|| {
            tied.iter()
                .find(|(_, owner)| *owner == name)
                .and_then(|(alias, _)| file.entry(&file_name(alias)))
        })
    };
    let mut problems = Vec::new();
    let mut report = LoadReport::default();
    for (name, shape, required) in &expected {
        match source(name) {
            None if !required => {}
            None if options.allow_missing => report.missing.push(name.to_string()),
            None => {
                let shown = file_name(name);
                let as_named = if shown == *name {
                    String::new()
                } else {
                    format!(", looked for as `{shown}`")
                };
                problems.push(format!(
                    "missing `{name}` (model shape {shape:?}{as_named})"
                ))
            }
            Some(entry) if !matches!(entry.dtype, Dtype::F32 | Dtype::F64) => {
                problems.push(format!(
                    "`{}` has dtype {:?} in the file, expected F32 or F64",
                    entry.name, entry.dtype
                ))
            }
            Some(entry) if entry.shape != *shape => {
                let model_name = if entry.name == *name {
                    String::new()
                } else {
                    format!(" (`{name}`)")
                };
                problems.push(format!(
                    "`{}` has shape {:?} in the file but {shape:?} in the model{model_name}",
                    entry.name, entry.shape
                ))
            }
            Some(_) => {}
        }
    }
    let mut known: HashSet<String> = expected
        .iter()
        .filter_map(|(name, ..)| source(name).map(|e| e.name.clone()))
        .collect();
    // A tied parameter saved twice by PyTorch (`head.weight` beside `wte.weight`) loads when
    // both copies hold the same values: they are one tensor in the model.
    for &(alias, owner) in tied {
        let Some(copy) = file.entry(&file_name(alias)) else {
            continue;
        };
        known.insert(copy.name.clone());
        let Some(original) = file.entry(&file_name(owner)) else {
            continue;
        };
        let same = copy.shape == original.shape
            && matches!(copy.dtype, Dtype::F32 | Dtype::F64)
            && decoded(&file, copy) == decoded(&file, original);
        if !same {
            problems.push(format!(
                "`{alias}` is tied to `{owner}` in the model (one tensor), but the file holds different values for the two"
            ));
        }
    }
    for entry in file
        .entries
        .iter()
        .filter(|e| !known.contains(e.name.as_str()) && !is_untracked_counter(e))
    {
        if options.allow_unexpected {
            report.unexpected.push(entry.name.clone());
        } else {
            problems.push(format!(
                "unexpected `{}` (file shape {:?})",
                entry.name, entry.shape
            ));
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        return Err(Error::Mismatch {
            path: file.path.clone(),
            message: format!("{count} {noun}: {}", problems.join("; ")),
        });
    }

    // Everything is validated: from here on nothing can fail, so the model is either fully
    // loaded or (above) untouched.
    let mut assign = |name: &'static str, mut view: ndarray::ArrayViewMutD<'_, F>| {
        if let Some(entry) = source(name) {
            decode_into(entry.dtype, file.data(entry), view.iter_mut());
        }
    };
    model.visit_params_mut(&mut assign);
    model.visit_buffers_mut(&mut assign);
    Ok(report)
}

/// A float tensor's values as f64, for comparing two entries.
fn decoded(file: &TensorFile, entry: &Entry) -> Vec<f64> {
    let mut values = vec![0.0f64; entry.shape.iter().product()];
    decode_into(entry.dtype, file.data(entry), values.iter_mut());
    values
}

/// PyTorch's batch norm saves `<layer>.num_batches_tracked`, an integer step counter that
/// only matters for `momentum=None`; kiln's batch norm has a fixed momentum and no counter, so
/// a PyTorch `state_dict` loads with it skipped.
fn is_untracked_counter(entry: &Entry) -> bool {
    entry.name.ends_with(".num_batches_tracked")
        && entry.shape.iter().product::<usize>() == 1
        && !matches!(entry.dtype, Dtype::F32 | Dtype::F64)
}

/// Decodes little-endian F32 or F64 bytes into `slots`, in order. Other dtypes are rejected
/// before this is called.
fn decode_into<'a, F: Float>(dtype: Dtype, bytes: &[u8], slots: impl Iterator<Item = &'a mut F>) {
    match dtype {
        Dtype::F32 => {
            for (slot, b) in slots.zip(bytes.chunks_exact(4)) {
                *slot = F::from_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64);
            }
        }
        Dtype::F64 => {
            for (slot, b) in slots.zip(bytes.chunks_exact(8)) {
                let raw = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                *slot = F::from_f64(f64::from_le_bytes(raw));
            }
        }
        _ => {}
    }
}

/// One tensor's header entry, with its data's absolute byte range in the file.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A safetensors file read into memory, with its header validated: tensors by name, as
/// `ndarray` arrays of any [`Float`] or as class labels.
///
/// ```no_run
/// use kiln_runtime::io::TensorFile;
/// let file = TensorFile::open("fixtures/linreg/f64.safetensors")?;
/// let w = file.get::<f32>("param.linear.weight")?; // F64 data, converted
/// let labels = file.labels("target.label")?;        // int64 class indices
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Sorted by name.
    entries: Vec<Entry>,
}

impl TensorFile {
    /// Reads and validates the safetensors file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; [`Error::File`] if it is malformed, saying what and
    /// where: a byte offset in the header, or the tensor whose entry or data is wrong
    /// (including a file truncated inside a tensor, or trailing bytes after the last one).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), bytes)
    }

    pub(crate) fn parse(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let fail = |message: String| Err(Error::file(&path, message));
        let len = bytes.len();
        let Some(prefix) = bytes.get(..8) else {
            return fail(format!(
                "not a safetensors file: it is {len} bytes long, shorter than the 8-byte \
                 header length it must start with"
            ));
        };
        let mut raw = [0u8; 8];
        raw.copy_from_slice(prefix);
        let header_len = u64::from_le_bytes(raw);
        let available = (len - 8) as u64;
        if header_len > available {
            return fail(format!(
                "not a safetensors file, or truncated: the header length at byte 0 says \
                 {header_len} bytes but only {available} bytes follow it"
            ));
        }
        // header_len ≤ len − 8, so it fits a usize.
        let data_start = 8 + header_len as usize;
        let header = match std::str::from_utf8(&bytes[8..data_start]) {
            Ok(text) => text,
            Err(e) => {
                return fail(format!(
                    "the header (bytes 8..{data_start}) is not UTF-8: invalid byte at offset {}",
                    8 + e.valid_up_to()
                ))
            }
        };
        let json = match crate::json::parse(header) {
            Ok(json) => json,
            Err(e) => {
                let offset = 8 + e.offset;
                return fail(format!(
                    "the header is not valid JSON at byte {offset}: {e}"
                ));
            }
        };
        let crate::json::Value::Object(map) = json else {
            return fail("the header is not a JSON object".to_string());
        };

        let mut entries = Vec::with_capacity(map.len());
        for (name, info) in map {
            if name == "__metadata__" {
                continue;
            }
            match parse_entry(&info) {
                // Offsets stay relative to the data section until they are checked against the
                // file's length below, so that adding data_start cannot overflow.
                Ok((dtype, shape, (start, end))) => entries.push(Entry {
                    name,
                    dtype,
                    shape,
                    start,
                    end,
                }),
                Err(message) => return fail(format!("tensor `{name}`: {message}")),
            }
        }

        // The data section must be covered exactly, in offset order, as the format requires.
        entries.sort_by_key(|e| (e.start, e.end));
        let data_len = len - data_start;
        let mut expected_start = 0;
        for entry in &mut entries {
            if entry.start != expected_start {
                let what = if entry.start > expected_start {
                    "a gap"
                } else {
                    "an overlap"
                };
                return fail(format!(
                    "tensor `{}`: its data starts at data offset {} but the previous tensor \
                     ends at {expected_start} ({what} in the data section)",
                    entry.name, entry.start
                ));
            }
            if entry.end > data_len {
                return fail(format!(
                    "truncated: tensor `{}` occupies bytes {}..{} but the file ends at byte {len}",
                    entry.name,
                    data_start + entry.start,
                    data_start as u128 + entry.end as u128
                ));
            }
            expected_start = entry.end;
            entry.start += data_start;
            entry.end += data_start;
        }
        if expected_start != data_len {
            return fail(format!(
                "{} unexpected bytes after the last tensor, from byte {}",
                data_len - expected_start,
                data_start + expected_start
            ));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            path,
            bytes,
            entries,
        })
    }

    /// The file's path, as given to [`TensorFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    fn require(&self, name: &str) -> Result<&Entry> {
        self.entry(name).ok_or_else(|| {
            let mut known = self.names().join(", ");
            if known.is_empty() {
                known = "none".to_string();
            }
            Error::file(
                &self.path,
                format!("no tensor named `{name}` (the file has: {known})"),
            )
        })
    }

    fn data(&self, entry: &Entry) -> &[u8] {
        &self.bytes[entry.start..entry.end]
    }

    /// The shape of tensor `name` (`[]` for a scalar).
    ///
    /// # Errors
    /// [`Error::File`] naming the file and the tensor if there is no such tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.require(name)?.shape)
    }

    /// The element type of tensor `name`.
    ///
    /// # Errors
    /// [`Error::File`] naming the file and the tensor if there is no such tensor.
    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        Ok(self.require(name)?.dtype)
    }

    /// Tensor `name` as an array of `F`, converting from F32 or F64 (F64 → f32 rounds to
    /// nearest).
    ///
    /// # Errors
    /// [`Error::File`] naming the file and the tensor if there is no such tensor or it is not
    /// F32 or F64.
    pub fn get<F: Float>(&self, name: &str) -> Result<ArrayD<F>> {
        let entry = self.require(name)?;
        if !matches!(entry.dtype, Dtype::F32 | Dtype::F64) {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor `{name}` has dtype {:?}, expected F32 or F64",
                    entry.dtype
                ),
            ));
        }
        let count: usize = entry.shape.iter().product();
        let mut values = vec![F::ZERO; count];
        decode_into(entry.dtype, self.data(entry), values.iter_mut());
        ArrayD::from_shape_vec(IxDyn(&entry.shape), values).map_err(|e| {
            Error::file(
                &self.path,
                format!("tensor `{name}` has an unusable shape: {e}"),
            )
        })
    }

    /// Tensor `name` as class labels, from any integer dtype (I8 … I64, U8 … U64).
    ///
    /// # Errors
    /// [`Error::File`] naming the file and the tensor if there is no such tensor, it is not
    /// integer, or an element is negative (or does not fit a `usize`).
    pub fn labels(&self, name: &str) -> Result<Vec<usize>> {
        let entry = self.require(name)?;
        let bytes = self.data(entry);
        let wide: Vec<i128> = match entry.dtype {
            Dtype::I8 => bytes
                .iter()
                .map(|&b| i8::from_le_bytes([b]) as i128)
                .collect(),
            Dtype::U8 => bytes.iter().map(|&b| b as i128).collect(),
            Dtype::I16 => bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i128)
                .collect(),
            Dtype::U16 => bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as i128)
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
                .collect(),
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i128
                })
                .collect(),
            Dtype::U64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i128
                })
                .collect(),
            other => {
                return Err(Error::file(
                    &self.path,
                    format!("tensor `{name}` has dtype {other:?}; class labels must be integers"),
                ))
            }
        };
        wide.iter()
            .enumerate()
            .map(|(index, &value)| {
                usize::try_from(value).map_err(|_| {
                    Error::file(
                        &self.path,
                        format!("tensor `{name}`: label {value} at position {index} is not a valid class index"),
                    )
                })
            })
            .collect()
    }
}

/// A header entry's dtype, shape and data offsets (relative to the data section).
type EntryInfo = (Dtype, Vec<usize>, (usize, usize));

/// Validates one header entry: `{"dtype": "F32", "shape": [..], "data_offsets": [s, e]}`,
/// with `e − s` the size the dtype and shape need. Returns the dtype, shape and offsets
/// (relative to the data section).
fn parse_entry(info: &crate::json::Value) -> std::result::Result<EntryInfo, String> {
    let field = |key: &str| {
        info.get(key)
            .ok_or_else(|| format!("the header entry has no `{key}`"))
    };
    let dtype_value = field("dtype")?;
    let dtype = dtype_value
        .as_str()
        .and_then(Dtype::from_name)
        .ok_or_else(|| format!("unknown dtype {dtype_value}"))?;
    let shape = field("shape")?
        .as_array()
        .ok_or("`shape` is not an array")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or("`shape` holds something other than non-negative integers")?;
    let offsets = field("data_offsets")?
        .as_array()
        .filter(|o| o.len() == 2)
        .and_then(|o| {
            let start = usize::try_from(o[0].as_u64()?).ok()?;
            let end = usize::try_from(o[1].as_u64()?).ok()?;
            Some((start, end))
        })
        .ok_or("`data_offsets` is not a pair of non-negative integers")?;
    if offsets.1 < offsets.0 {
        return Err(format!(
            "`data_offsets` [{}, {}] end before they start",
            offsets.0, offsets.1
        ));
    }
    let bits = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of dtype {dtype:?} does not fill whole bytes"
        ));
    }
    let needed = bits / 8;
    if offsets.1 - offsets.0 != needed {
        return Err(format!(
            "`data_offsets` [{}, {}] hold {} bytes but dtype {dtype:?} and shape {shape:?} need {needed}",
            offsets.0,
            offsets.1,
            offsets.1 - offsets.0
        ));
    }
    Ok((dtype, shape, offsets))
}
