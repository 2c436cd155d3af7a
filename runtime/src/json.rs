//! JSON (RFC 8259) for kiln's own files: the safetensors header and the training checkpoint's
//! state. Takes text, returns a [`Value`] tree (or an error with the byte offset, line and
//! column of the fault); writes a tree as compact or pretty text.
//!
//! Written here rather than taken from serde_json because kiln reads and writes a handful of
//! small, fixed layouts and needs none of serde's machinery, which was about a seventh of the
//! CPU time of a user's clean build. The tests check this parser and writer against
//! serde_json.
//!
//! What the files need, and what this module guarantees:
//! - Numbers: integers without fraction or exponent are kept exactly (`u64`, or `i64` when
//!   negative); every other number is the nearest `f64` (the standard library's correctly
//!   rounded parser), and a finite `f64` is written in the shortest form that reads back to
//!   the same bits. NaN and infinities are written as `null`, as JSON has neither.
//! - Objects keep their keys in file (or insertion) order; a key given twice is an error, as
//!   there is no way to tell which one the writer meant.
//! - Nesting deeper than [`MAX_DEPTH`] is an error, not a stack overflow.

use std::fmt::{self, Write};

/// The deepest nesting of arrays and objects the parser accepts (serde_json's default too).
pub(crate) const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number: an exact integer when it was written as one, else an `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number.
    F64(f64),
}

/// An object's members, in order, with distinct keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Object(Vec<(String, Value)>);

impl Object {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Object {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Value {
    /// An object with these members, in this order. The keys must be distinct (the writers
    /// here list fixed field names).
    pub fn object<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
        let members: Vec<(String, Value)> =
            members.into_iter().map(|(k, v)| (k.into(), v)).collect();
        debug_assert!(
            members
                .iter()
                .enumerate()
                .all(|(i, (k, _))| members[..i].iter().all(|(other, _)| other != k)),
            "duplicate key in a JSON object"
        );
        Value::Object(Object(members))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value if it is an integer written without fraction or exponent, and ≥ 0.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(Number::U64(n)) => Some(*n),
            _ => None,
        }
    }

    /// Any number, as the nearest `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Number(Number::U64(n)) => Some(n as f64),
            Value::Number(Number::I64(n)) => Some(n as f64),
            Value::Number(Number::F64(x)) => Some(x),
            _ => None,
        }
    }

    /// The value as indented text (two spaces a level, one member or element a line).
    pub fn to_string_pretty(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self, Some(0));
        out
    }
}

/// Compact text, no spaces.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_value(&mut out, self, None);
        f.write_str(&out)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number::U64(n))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        // usize is at most 64 bits on every target Rust supports.
        Value::Number(Number::U64(n as u64))
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Number(Number::F64(x))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Value {
        Value::Array(items.into_iter().map(Into::into).collect())
    }
}

/// Where and why a text is not valid JSON.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParseError {
    /// Byte offset of the fault in the text.
    pub offset: usize,
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault on its line.
    pub column: usize,
    /// What is wrong, e.g. "expected `,` or `}`".
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

/// Parses `bytes` as one JSON value (surrounding whitespace allowed). Bytes that are not
/// UTF-8 are an error at their position.
pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<Value, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let text = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            Err(error_at(text, e.valid_up_to(), "invalid UTF-8".to_string()))
        }
    }
}

/// Parses `text` as one JSON value (surrounding whitespace allowed).
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    parser
        .document()
        .map_err(|(offset, message)| error_at(text, offset, message))
}

/// A [`ParseError`] at byte `offset` of `text` (which may end there).
fn error_at(text: &str, offset: usize, message: String) -> ParseError {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ParseError {
        offset,
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message,
    }
}

/// A fault: byte offset and message.
type Fault = (usize, String);

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn document(&mut self) -> Result<Value, Fault> {
        let value = self.value(0)?;
        self.skip_whitespace();
        if self.at < self.bytes.len() {
            return Err(self.fault("trailing characters after the JSON value"));
        }
        Ok(value)
    }

    fn fault(&self, message: &str) -> Fault {
        (self.at, message.to_string())
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Fault> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.fault("expected a value, found the end of the text")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.fault("expected a value")),
        }
    }

    /// `true`, `false` or `null`; a misspelling is reported at its first wrong byte.
    fn literal(&mut self, word: &str, value: Value) -> Result<Value, Fault> {
        for &expected in word.as_bytes() {
            if self.peek() != Some(expected) {
                return Err(self.fault(&format!("expected `{word}`")));
            }
            self.at += 1;
        }
        Ok(value)
    }

    fn enter(&self, depth: usize) -> Result<(), Fault> {
        if depth > MAX_DEPTH {
            Err(self.fault(&format!(
                "arrays and objects nested more than {MAX_DEPTH} deep"
            )))
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Fault> {
        self.enter(depth)?;
        self.at += 1; // `[`
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.fault("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Fault> {
        self.enter(depth)?;
        self.at += 1; // `{`
        let mut members: Vec<(String, Value)> = Vec::new();
        // Objects with many members (a safetensors header lists every tensor) look keys up in
        // a set, so that a large header does not cost quadratic time.
        let mut seen = std::collections::HashSet::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(Object(members)));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.fault("expected a key (a string in double quotes)"));
            }
            let key_at = self.at;
            let key = self.string()?;
            if !seen.insert(key.clone()) {
                return Err((
                    key_at,
                    format!("the key `{key}` appears twice in an object"),
                ));
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.fault("expected `:`"));
            }
            self.at += 1;
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(Object(members)));
                }
                _ => return Err(self.fault("expected `,` or `}`")),
            }
        }
    }

    fn string(&mut self) -> Result<String, Fault> {
        self.at += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters up to the next quote, backslash or control
            // character in one go (the text is UTF-8, and those are all ASCII).
            let run_end = self.bytes[self.at..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map_or(self.bytes.len(), |n| self.at + n);
            out.push_str(&self.text[self.at..run_end]);
            self.at = run_end;
            match self.peek() {
                None => return Err(self.fault("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.fault("invalid escape in a string")),
                    };
                    self.at += 1;
                    out.push(escaped);
                }
                Some(_) => {
                    return Err(self.fault("control character in a string (escape it)"));
                }
            }
        }
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` for a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, Fault> {
        let start = self.at - 2;
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err((start, "unpaired surrogate in a \\u escape".to_string()));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err((start, "unpaired surrogate in a \\u escape".to_string()));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err((start, "unpaired surrogate in a \\u escape".to_string()))
            }
            code => code,
        };
        char::from_u32(code).ok_or((start, "invalid \\u escape".to_string()))
    }

    fn hex4(&mut self) -> Result<u32, Fault> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| self.fault("expected four hex digits after \\u"))?;
        // Four ASCII hex digits: valid UTF-8 and a valid u32.
        let code = u32::from_str_radix(std::str::from_utf8(digits).unwrap_or("0"), 16)
            .map_err(|_| self.fault("expected four hex digits after \\u"))?;
        self.at += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, Fault> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.fault("expected a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.fault("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.fault("expected a digit in the exponent"));
            }
            self.digits();
        }
        let literal = &self.text[start..self.at];
        if integer {
            if let Ok(n) = literal.parse::<u64>() {
                return Ok(Value::Number(Number::U64(n)));
            }
            // "-0" is the float −0, as serde_json reads it.
            if let Some(n) = literal.parse::<i64>().ok().filter(|&n| n != 0) {
                return Ok(Value::Number(Number::I64(n)));
            }
        }
        // The grammar checked above is a subset of what `f64::from_str` accepts, and that
        // parser rounds correctly.
        match literal.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Number(Number::F64(x))),
            _ => Err((start, "number out of range".to_string())),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

/// Appends `value` to `out`: compact when `indent` is `None`, else pretty at that level.
fn write_value(out: &mut String, value: &Value, indent: Option<usize>) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, *n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => write_sequence(out, '[', ']', items, indent, |out, item, at| {
            write_value(out, item, at)
        }),
        Value::Object(members) => {
            write_sequence(out, '{', '}', &members.0, indent, |out, (k, v), at| {
                write_string(out, k);
                out.push_str(if at.is_some() { ": " } else { ":" });
                write_value(out, v, at);
            })
        }
    }
}

fn write_sequence<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    indent: Option<usize>,
    mut write_item: impl FnMut(&mut String, &T, Option<usize>),
) {
    out.push(open);
    let inner = indent.map(|level| level + 1);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(level) = inner {
            newline(out, level);
        }
        write_item(out, item, inner);
    }
    if let (Some(level), false) = (indent, items.is_empty()) {
        newline(out, level);
    }
    out.push(close);
}

fn newline(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_number(out: &mut String, n: Number) {
    // Writing into a String cannot fail.
    let _ = match n {
        Number::U64(n) => write!(out, "{n}"),
        Number::I64(n) => write!(out, "{n}"),
        // `Debug` gives the shortest digits that read back to the same bits, always with a
        // decimal point or an exponent (`1.0`, `1e-7`), which is valid JSON.
        Number::F64(x) if x.is_finite() => write!(out, "{x:?}"),
        Number::F64(_) => write!(out, "null"),
    };
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// serde_json's value as this module's, for comparison.
    fn from_serde(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Number::U64(u),
                (None, Some(i)) => Number::I64(i),
                _ => Number::F64(n.as_f64().unwrap_or(f64::NAN)),
            }),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::Array(items.iter().map(from_serde).collect()),
            serde_json::Value::Object(map) => {
                Value::object(map.iter().map(|(k, v)| (k.clone(), from_serde(v))))
            }
        }
    }

    /// Equal as JSON data: numbers by value (so `-0` and `0`, or `1` read as an integer by one
    /// parser and a float by the other, agree), objects regardless of key order.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(_), Value::Number(_)) => a.as_f64() == b.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.0
                        .iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    fn random_string(rng: &mut StdRng) -> String {
        const PIECES: [&str; 12] = [
            "a", "key", " ", "\"", "\\", "/", "\n", "\u{1}", "é", "😀", "\u{7f}", "\u{2028}",
        ];
        (0..rng.random_range(0..5))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    fn random_value(rng: &mut StdRng, depth: usize) -> Value {
        let kinds = if depth > 3 { 5 } else { 7 };
        match rng.random_range(0..kinds) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => Value::Number(match rng.random_range(0..3) {
                0 => Number::U64(rng.random::<u64>() >> rng.random_range(0..64)),
                1 => Number::I64(-1 - (rng.random::<u64>() >> 1 >> rng.random_range(0..63)) as i64),
                _ => Number::F64(f64::from_bits(rng.random())).into_finite_or(0.5),
            }),
            3 | 4 => Value::String(random_string(rng)),
            5 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => {
                let mut members: Vec<(String, Value)> = Vec::new();
                for i in 0..rng.random_range(0..4) {
                    // Distinct keys: a random part and the member's index.
                    let key = format!("{}{i}", random_string(rng));
                    members.push((key, random_value(rng, depth + 1)));
                }
                Value::object(members)
            }
        }
    }

    trait IntoFinite {
        fn into_finite_or(self, fallback: f64) -> Number;
    }
    impl IntoFinite for Number {
        fn into_finite_or(self, fallback: f64) -> Number {
            match self {
                Number::F64(x) if !x.is_finite() => Number::F64(fallback),
                n => n,
            }
        }
    }

    #[test]
    fn written_values_read_back_identically_here_and_in_serde_json() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let value = random_value(&mut rng, 0);
            for text in [value.to_string(), value.to_string_pretty()] {
                // Exactly the same value, numbers to the bit, integers still integers.
                assert_eq!(parse(&text), Ok(value.clone()), "{text}");
                let theirs: serde_json::Value = serde_json::from_str(&text).expect(&text);
                assert!(same(&from_serde(&theirs), &value), "{text}");
            }
            // serde_json's own text reads to the same data here.
            let theirs: serde_json::Value = serde_json::from_str(&value.to_string()).unwrap();
            for text in [
                theirs.to_string(),
                serde_json::to_string_pretty(&theirs).unwrap(),
            ] {
                assert!(same(&parse(&text).expect(&text), &value), "{text}");
            }
        }
    }

    #[test]
    fn pretty_layout_is_serde_jsons() {
        let value = parse(r#"{"a": [1, -2, "x", [], {}], "b": {"c": null, "d": true}}"#).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&value.to_string()).unwrap();
        assert_eq!(
            value.to_string_pretty(),
            serde_json::to_string_pretty(&theirs).unwrap()
        );
        assert_eq!(
            value.to_string(),
            r#"{"a":[1,-2,"x",[],{}],"b":{"c":null,"d":true}}"#
        );
    }

    #[test]
    fn floats_round_trip_to_the_bit_and_non_finite_ones_become_null() {
        let mut rng = StdRng::seed_from_u64(2);
        let specials = [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e-7,
            1e21,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        let randoms = (0..20000).map(|_| f64::from_bits(rng.random()));
        for x in specials
            .into_iter()
            .chain(randoms)
            .filter(|x| x.is_finite())
        {
            let text = Value::from(x).to_string();
            let back = parse(&text).unwrap().as_f64().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e} written as {text}");
        }
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(Value::from(x).to_string(), "null");
        }
    }

    #[test]
    fn integers_are_exact_and_typed() {
        assert_eq!(
            parse("18446744073709551615").unwrap().as_u64(),
            Some(u64::MAX)
        );
        assert_eq!(
            parse("-9223372036854775808"),
            Ok(Value::Number(Number::I64(i64::MIN)))
        );
        // Beyond 64 bits, a float, as serde_json reads it.
        assert_eq!(parse("18446744073709551616").unwrap().as_u64(), None);
        assert_eq!(
            parse("18446744073709551616").unwrap().as_f64(),
            Some(2f64.powi(64))
        );
        assert_eq!(parse("3.0").unwrap().as_u64(), None);
        assert_eq!(
            parse("-0").unwrap().as_f64().map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
    }

    #[test]
    fn mangled_texts_are_accepted_or_rejected_as_serde_json_does() {
        let mut rng = StdRng::seed_from_u64(3);
        const JUNK: [&str; 14] = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "1e", "-", "tru", "\\u12", "\\ud800", "\u{0}",
        ];
        let mut rejected = 0;
        for _ in 0..4000 {
            let mut text = random_value(&mut rng, 0).to_string();
            for _ in 0..rng.random_range(1..3) {
                let mut at = rng.random_range(0..=text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if rng.random_bool(0.5) {
                    text.insert_str(at, JUNK[rng.random_range(0..JUNK.len())]);
                } else {
                    let end = (at + rng.random_range(1..3)).min(text.len());
                    if text.is_char_boundary(end) {
                        text.replace_range(at..end, "");
                    }
                }
            }
            let ours = parse(&text);
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert!(same(a, &from_serde(b)), "{text}"),
                // serde_json keeps the last of two equal keys; this parser refuses them.
                (Err(e), Ok(_)) if e.message.contains("appears twice") => {}
                (Err(_), Err(_)) => rejected += 1,
                _ => panic!("{text:?}: here {ours:?}, serde_json {theirs:?}"),
            }
        }
        assert!(
            rejected > 1000,
            "only {rejected} mangled texts were invalid"
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!((e.line, e.column, e.offset), (3, 7, 18));
        assert_eq!(e.to_string(), "expected `:` at line 3 column 7");
        let e = parse("{\"é\": 1, \"é\": 2}").unwrap_err();
        assert_eq!(e.message, "the key `é` appears twice in an object");
        assert_eq!((e.line, e.column), (1, 10));
        assert_eq!(
            parse("[1] x").unwrap_err().message,
            "trailing characters after the JSON value"
        );
        assert_eq!(
            parse("\"\\ud800\"").unwrap_err().message,
            "unpaired surrogate in a \\u escape"
        );
        assert_eq!(parse("1e999").unwrap_err().message, "number out of range");
        assert_eq!(
            parse("").unwrap_err().message,
            "expected a value, found the end of the text"
        );
        let e = parse("[nul]").unwrap_err();
        assert_eq!((e.message.as_str(), e.offset), ("expected `null`", 4));
        let e = parse_bytes(b"{\"a\":\n \"\xff\"}").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.line, e.column, e.offset),
            ("invalid UTF-8", 2, 3, 8)
        );
    }

    #[test]
    fn nesting_is_limited_not_a_stack_overflow() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(100_000);
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.offset, MAX_DEPTH);
        assert!(e.message.contains("nested more than 128"), "{}", e.message);
    }
}
