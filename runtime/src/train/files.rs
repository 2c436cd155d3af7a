//! File helpers for checkpoints and plots: a safetensors writer for named slices, and JSON
//! readers and writers whose errors name the file and the field. Atomic writes are
//! [`crate::io`]'s.

use crate::io::{self, EncodedTensor};
pub(crate) use crate::io::{sync_parent, write_atomically};
use crate::json::{self, Object, Value};
use crate::{Error, Float, Result};
use std::fs;
use std::path::Path;

/// One tensor to write: name, shape, and its elements in row-major order.
pub(crate) struct TensorOut<'a, F> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [F],
}

/// Writes `tensors` as a safetensors file at `path`, atomically, in `F`'s dtype (see
/// [`io::write_safetensors`]).
pub(crate) fn write_safetensors<F: Float>(path: &Path, tensors: &[TensorOut<'_, F>]) -> Result<()> {
    let encoded: Vec<(&str, EncodedTensor)> = tensors
        .iter()
        .map(|t| {
            let values = t.data.iter().copied();
            (t.name.as_str(), EncodedTensor::new(t.shape.clone(), values))
        })
        .collect();
    io::write_safetensors(path, encoded.iter().map(|(n, e)| (*n, e)))
}

/// Reads and parses the JSON file at `path`.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    // Bytes, not a `String`: the parser then reports invalid UTF-8 with its line and column,
    // where `read_to_string` would give a bare I/O error.
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    json::parse_bytes(&bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not valid JSON at line {}, column {}: {}",
                e.line, e.column, e.message
            ),
        )
    })
}

/// Writes `value` as pretty-printed JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = value.to_string_pretty();
    text.push('\n');
    write_atomically(path, text.as_bytes())
}

/// A JSON object being read, with the file and the path of keys leading to it, so that every
/// error says which field of which file is wrong (``state.json: field `history[3].lr`: ...``).
pub(crate) struct Fields<'a> {
    pub file: &'a Path,
    pub at: String,
    pub map: &'a Object,
}

impl<'a> Fields<'a> {
    pub fn root(file: &'a Path, value: &'a Value) -> Result<Self> {
        Self::of(file, String::new(), value)
    }

    fn of(file: &'a Path, at: String, value: &'a Value) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Fields { file, at, map }),
            _ => Err(Error::file(
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
        Error::file(
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

    /// A number; `null` reads as NaN (JSON has no NaN, and kiln writes it as `null`).
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
