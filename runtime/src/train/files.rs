//! File helpers for checkpoints and plots: atomic writes, a safetensors writer for named
//! slices, and JSON readers whose errors name the file and the field.

use crate::{Error, Float, Result};
use safetensors::{Dtype, View};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

pub(crate) fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through `<path>.tmp` in the same directory: write, `sync_all`,
/// rename. A crash leaves the old file or the new one, never half of one. (The same protocol
/// as `kiln::io::save`, which keeps its writer private.)
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(file_error(path, "not a file path (it has no file name)"));
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
        return Err(io_error(&tmp, source));
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path, source));
    }
    sync_parent(path);
    Ok(())
}

/// Persists a rename or a new directory entry in `path`'s directory. Directories cannot be
/// opened for syncing everywhere (e.g. Windows), and the data itself is already synced, so this
/// is best effort.
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

/// One tensor to write: name, shape, and its elements in row-major order.
pub(crate) struct TensorOut<'a, F> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [F],
}

struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` as a safetensors file at `path`, atomically, in `F`'s dtype, with the
/// `{"format": "pt"}` metadata PyTorch's `safetensors.torch` writes.
pub(crate) fn write_safetensors<F: Float>(path: &Path, tensors: &[TensorOut<'_, F>]) -> Result<()> {
    let mut encoded = Vec::with_capacity(tensors.len());
    for t in tensors {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(t.data));
        for &v in t.data {
            v.write_le(&mut bytes);
        }
        encoded.push((
            t.name.as_str(),
            Encoded {
                dtype: F::DTYPE,
                shape: t.shape.clone(),
                bytes,
            },
        ));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(encoded.iter().map(|(n, e)| (*n, e)), Some(metadata))
        .map_err(|e| file_error(path, format!("cannot serialize: {e}")))?;
    write_atomically(path, &bytes)
}

/// Reads and parses the JSON file at `path`.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        file_error(
            path,
            format!(
                "not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Writes `value` as pretty-printed JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| file_error(path, format!("cannot serialize: {e}")))?;
    text.push('\n');
    write_atomically(path, text.as_bytes())
}

/// A JSON object being read, with the file and the path of keys leading to it, so that every
/// error says which field of which file is wrong (`state.json: field `history[3].lr`: ...`).
pub(crate) struct Fields<'a> {
    pub file: &'a Path,
    pub at: String,
    pub map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn root(file: &'a Path, value: &'a Value) -> Result<Self> {
        Self::of(file, String::new(), value)
    }

    fn of(file: &'a Path, at: String, value: &'a Value) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Fields { file, at, map }),
            _ => Err(file_error(
                file,
                format!("{}: expected a JSON object", Self::describe(&at)),
            )),
        }
    }

    fn describe(at: &str) -> String {
        if at.is_empty() {
            "the top level".to_string()
        } else {
            format!("field `{at}`")
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        file_error(
            self.file,
            format!("field `{}`: {message}", self.path_of(key)),
        )
    }

    pub fn get(&self, key: &str) -> Result<&'a Value> {
        self.map.get(key).ok_or_else(|| self.error(key, "missing"))
    }

    pub fn object(&self, key: &str) -> Result<Fields<'a>> {
        Fields::of(self.file, self.path_of(key), self.get(key)?)
    }

    pub fn str(&self, key: &str) -> Result<&'a str> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.error(key, "expected a string"))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.error(key, "expected a non-negative integer"))
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| self.error(key, "expected true or false"))
    }

    /// A number; `null` reads as NaN (JSON has no NaN, and serde_json writes it as `null`).
    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::Null => Ok(f64::NAN),
            v => v
                .as_f64()
                .ok_or_else(|| self.error(key, "expected a number")),
        }
    }

    /// A number or `null` (for `None`); a missing key is `None` too.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(key, "expected a number or null")),
        }
    }

    /// The elements of an array, each with its field path (`history[2]`).
    pub fn array(&self, key: &str) -> Result<Vec<(String, &'a Value)>> {
        let items = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.error(key, "expected an array"))?;
        let base = self.path_of(key);
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{base}[{i}]"), v))
            .collect())
    }

    pub fn element(file: &'a Path, at: String, value: &'a Value) -> Result<Fields<'a>> {
        Fields::of(file, at, value)
    }
}
