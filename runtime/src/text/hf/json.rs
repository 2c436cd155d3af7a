//! Reading the parts of a `tokenizer.json`: typed access to its JSON values whose errors name
//! the file and the place in it (`model.vocab`, `normalizer.normalizers[1].type`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One JSON value of the file and where it is, for error messages.
#[derive(Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub at: String,
    pub path: &'a Path,
}

impl<'a> Node<'a> {
    /// An error at this node.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::file(self.path, format!("at `{}`: {message}", self.at))
    }

    /// The node's members, if it is an object.
    pub fn object(&self) -> Result<&'a Map<String, Value>> {
        self.value
            .as_object()
            .ok_or_else(|| self.error(format!("expected an object, found {}", kind(self.value))))
    }

    /// Member `key` (`None` if absent or null).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// The whole file's value.
    pub fn root(value: &'a Value, path: &'a Path) -> Self {
        Node {
            value,
            at: String::new(),
            path,
        }
    }

    /// Member `key`, which must be present; its location is `<at>.<key>`.
    pub fn member(&self, key: &str) -> Result<Node<'a>> {
        let value = self
            .get(key)
            .ok_or_else(|| self.error(format!("missing `{key}`")))?;
        Ok(self.child(value, key))
    }

    /// Member `key`, if present and not null.
    pub fn opt_member(&self, key: &str) -> Option<Node<'a>> {
        self.get(key).map(|value| self.child(value, key))
    }

    /// Member `key` read by `parse`, if present and not null.
    pub fn opt_parse<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&Node<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.opt_member(key).map(|node| parse(&node)).transpose()
    }

    fn child(&self, value: &'a Value, key: &str) -> Node<'a> {
        let at = if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        };
        Node {
            value,
            at,
            path: self.path,
        }
    }

    /// The elements of an array, each with its location `<at>[i]`.
    pub fn elements(&self) -> Result<Vec<Node<'a>>> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.error(format!("expected an array, found {}", kind(self.value))))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| Node {
                value,
                at: format!("{}[{i}]", self.at),
                path: self.path,
            })
            .collect())
    }

    /// Member `key` as a string.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => {
                Err(self.error(format!("`{key}` should be a string, found {}", kind(other))))
            }
            None => Err(self.error(format!("missing `{key}`"))),
        }
    }

    /// Member `key` as a string, if present and not null.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    /// Member `key` as a boolean, `default` if absent or null.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(format!(
                "`{key}` should be true or false, found {}",
                kind(other)
            ))),
        }
    }

    /// Member `key` as a boolean, `None` if absent or null.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.bool_or(key, false).map(Some),
        }
    }

    /// Member `key` as a token id.
    pub fn id(&self, key: &str) -> Result<u32> {
        match self.get(key) {
            Some(v) => as_id(v)
                .ok_or_else(|| self.error(format!("`{key}` should be a token id, found {v}"))),
            None => Err(self.error(format!("missing `{key}`"))),
        }
    }

    /// Member `key` as a string of exactly one character.
    pub fn single_char(&self, key: &str) -> Result<char> {
        let text = self.str(key)?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(self.error(format!("`{key}` should be one character, found {text:?}"))),
        }
    }

    /// Member `key` as a count, `default` if absent or null.
    pub fn count_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| self.error(format!("`{key}` should be a count, found {v}"))),
        }
    }

    /// The node as a token id.
    pub fn as_token_id(&self) -> Result<u32> {
        as_id(self.value)
            .ok_or_else(|| self.error(format!("should be a token id, found {}", self.value)))
    }

    /// The literal of a `Replace`'s `pattern` member (`{"String": " "}`); a regular
    /// expression is an error.
    pub fn literal_pattern(&self) -> Result<String> {
        let pattern = self.member("pattern")?;
        match pattern.opt_str("String")? {
            Some(literal) => Ok(literal.to_string()),
            None => Err(pattern
                .error("only a literal `String` pattern is supported, not a regular expression")),
        }
    }

    /// The `type` of a component (`"BPE"`, `"ByteLevel"`, ...).
    pub fn kind(&self) -> Result<&'a str> {
        self.str("type")
    }
}

/// `value` as a token id (a non-negative integer below 2³²).
pub fn as_id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|v| u32::try_from(v).ok())
}

/// What kind of JSON value `value` is, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
