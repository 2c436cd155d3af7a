//! [`LabelledText`]: (label, text) rows from CSV files, split, encoded and batched for text
//! classification.

use super::batch::pad_into;
use super::csv_scan::CsvScan;
use super::TextEncoder;
use crate::data::loader::{epoch_rng, permutation};
use crate::data::source;
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A CSV column, by header name or by index counting from 0. Error messages number columns
/// the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// The column whose header cell is this name (surrounding spaces ignored); needs
    /// [`TextCsvOptions::header`].
    Name(String),
    /// The column at this index, counting from 0.
    Index(usize),
}

impl From<&str> for Column {
    fn from(name: &str) -> Self {
        Column::Name(name.to_string())
    }
}

impl From<usize> for Column {
    fn from(index: usize) -> Self {
        Column::Index(index)
    }
}

/// The order class names get their ids in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassOrder {
    /// The order the names first appear in the file.
    FirstSeen,
    /// Sorted (byte order), as scikit-learn's `LabelEncoder` numbers them.
    Sorted,
}

/// What the label column holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelKind {
    /// Class numbers `0, 1, ...` (surrounding spaces ignored); the class names are the
    /// numbers as text. `classes: None` takes the largest label + 1; with `Some(n)` a label
    /// not below `n` is malformed.
    Integers {
        /// The number of classes, if known.
        classes: Option<usize>,
    },
    /// Class names (surrounding spaces ignored), numbered in the given order.
    Names(ClassOrder),
    /// Exactly these class names, numbered in this order; any other label is malformed.
    Classes(Vec<String>),
}

/// How [`LabelledText::read_csv`] reads a file. The default: a header line, the label in
/// column 0 and the text in column 1, labels as class names numbered in order of first
/// appearance, commas, standard CSV quoting (`"a, \"b\"\nc"`), malformed rows an error.
///
/// ```
/// use kiln_runtime::text::{LabelKind, ClassOrder, TextCsvOptions};
/// // The tweets file: `sentiment,confidence,text`.
/// let tweets = TextCsvOptions {
///     label: "sentiment".into(),
///     text: "text".into(),
///     labels: LabelKind::Names(ClassOrder::Sorted),
///     ..TextCsvOptions::default()
/// };
/// # let _ = tweets;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCsvOptions {
    /// The first line names the columns (it is not a row).
    pub header: bool,
    /// The label column.
    pub label: Column,
    /// The text column.
    pub text: Column,
    /// What the labels are.
    pub labels: LabelKind,
    /// The byte between cells (`b','`; `b'\t'` for TSV).
    pub delimiter: u8,
    /// Whether `"` quotes cells (RFC 4180: quoted cells may hold delimiters, newlines and
    /// doubled quotes). Turn it off for files whose text has bare quotes and no quoting,
    /// such as TSV files of book lines.
    pub quoting: bool,
    /// Skip malformed rows (more or fewer fields than the header, a cell that is not UTF-8,
    /// a bad or unknown label), counting them in [`LabelledText::skipped`], instead of
    /// failing.
    pub skip_malformed: bool,
}

impl Default for TextCsvOptions {
    fn default() -> Self {
        TextCsvOptions {
            header: true,
            label: Column::Index(0),
            text: Column::Index(1),
            labels: LabelKind::Names(ClassOrder::FirstSeen),
            delimiter: b',',
            quoting: true,
            skip_malformed: false,
        }
    }
}

/// One skipped row: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRow {
    /// The line of the file the row starts on, counting from 1 (the header and blank lines
    /// included).
    pub line: u64,
    /// What is wrong with it (naming the column at fault, counting from 0, if one is).
    pub reason: String,
}

/// The malformed rows [`TextCsvOptions::skip_malformed`] skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// How many rows were skipped.
    pub count: usize,
    /// The first [`Skipped::KEPT`] of them.
    pub first: Vec<SkippedRow>,
}

impl Skipped {
    /// How many skipped rows are described in [`Skipped::first`].
    pub const KEPT: usize = 10;

    fn push(&mut self, line: u64, reason: String) {
        self.count += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(SkippedRow { line, reason });
        }
    }
}

/// Texts with class labels, as a sentiment or topic classifier learns from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledText {
    texts: Vec<String>,
    labels: Vec<usize>,
    classes: Vec<String>,
    skipped: Skipped,
}

/// The three parts of [`LabelledText::split`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// The training part.
    pub train: LabelledText,
    /// The validation part.
    pub validation: LabelledText,
    /// The test part (the rest).
    pub test: LabelledText,
}

impl LabelledText {
    /// Texts and their labels, with the class names by id.
    ///
    /// # Panics
    /// If `texts` and `labels` differ in length or a label is not below `classes.len()`.
    pub fn new(texts: Vec<String>, labels: Vec<usize>, classes: Vec<String>) -> Self {
        assert_eq!(texts.len(), labels.len(), "one label per text");
        assert!(
            labels.iter().all(|&l| l < classes.len()),
            "labels must be below the number of classes, {}",
            classes.len()
        );
        LabelledText {
            texts,
            labels,
            classes,
            skipped: Skipped::default(),
        }
    }

    /// Reads (label, text) rows from a CSV file, gzip-compressed or not (recognised by
    /// content).
    ///
    /// Every row must have as many fields as the header (or, without one, the first row): a
    /// text with an unquoted delimiter in it would otherwise be cut short silently. A UTF-8
    /// byte-order mark at the start is ignored.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or read. [`Error::File`] naming the line
    /// of the file the row starts on (and the column, counting from 0, where one cell is at
    /// fault): a named column not in the header (or names without a header), a column index
    /// beyond the header's (or first row's) columns, the same column for the label and the
    /// text, no data rows, corrupt gzip data, or, unless [`TextCsvOptions::skip_malformed`]
    /// is set, a malformed row: more or fewer fields than the header, a quoted cell that is
    /// never closed (it runs to the end of the file), a label or text cell that is not
    /// UTF-8, an empty label, a label that is not a class number or not below
    /// [`LabelKind::Integers`]'s `classes`, or not one of [`LabelKind::Classes`]. With
    /// `skip_malformed`, it is still an error if every row is malformed.
    pub fn read_csv(path: impl AsRef<Path>, options: &TextCsvOptions) -> Result<Self> {
        let path = path.as_ref();
        Self::from_reader(source::open(path)?, path, options)
    }

    /// Reads CSV text held in memory (errors name the file `<string>`); see
    /// [`LabelledText::read_csv`].
    ///
    /// ```
    /// use kiln_runtime::text::{LabelKind, LabelledText, TextCsvOptions};
    /// let options = TextCsvOptions {
    ///     labels: LabelKind::Integers { classes: Some(2) },
    ///     ..TextCsvOptions::default()
    /// };
    /// let error = LabelledText::from_csv_str("y,text\n0,fine\n2,oops\n", &options).unwrap_err();
    /// assert_eq!(
    ///     error.to_string(),
    ///     "<string>: line 3, column 0: label 2 is out of range for 2 classes"
    /// );
    /// ```
    ///
    /// # Errors
    /// As [`LabelledText::read_csv`].
    pub fn from_csv_str(text: &str, options: &TextCsvOptions) -> Result<Self> {
        Self::from_reader(text.as_bytes(), Path::new("<string>"), options)
    }

    /// Reads CSV from any reader (decompressed already); `name` is the file errors name.
    ///
    /// # Errors
    /// As [`LabelledText::read_csv`].
    pub fn from_reader(
        reader: impl Read,
        name: impl AsRef<Path>,
        options: &TextCsvOptions,
    ) -> Result<Self> {
        Reading::new(name.as_ref(), options).run(reader)
    }

    /// The number of texts.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The texts.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The labels, one class id per text.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The class names, by id.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The rows skipped as malformed while reading (none unless
    /// [`TextCsvOptions::skip_malformed`]).
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// The texts and labels at `indices`, in that order, with the same classes.
    ///
    /// # Panics
    /// If an index is not below [`LabelledText::len`].
    pub fn subset(&self, indices: &[usize]) -> LabelledText {
        LabelledText {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            skipped: Skipped::default(),
        }
    }

    /// A seeded random split into `round(train · n)` training, `round(validation · n)`
    /// validation and the remaining test texts (`split(0.8, 0.1, seed)` for 80/10/10); each
    /// part keeps the file order. The same seed and length give the same split.
    ///
    /// # Panics
    /// If a fraction is outside `0..=1` or their sum exceeds 1.
    pub fn split(&self, train: f64, validation: f64, seed: u64) -> Splits {
        assert!(
            (0.0..=1.0).contains(&train)
                && (0.0..=1.0).contains(&validation)
                && train + validation <= 1.0 + 1e-9,
            "fractions must be within 0..=1 and sum to at most 1, got {train} and {validation}"
        );
        let n = self.len();
        let n_train = ((train * n as f64).round() as usize).min(n);
        let n_validation = ((validation * n as f64).round() as usize).min(n - n_train);
        let order = permutation(n, &mut epoch_rng(seed, 0));
        let part = |range: std::ops::Range<usize>| {
            let mut indices = order[range].to_vec();
            indices.sort_unstable();
            self.subset(&indices)
        };
        Splits {
            train: part(0..n_train),
            validation: part(n_train..n_train + n_validation),
            test: part(n_train + n_validation..n),
        }
    }

    /// The texts encoded with `encoder` (a [`Vocab`](super::Vocab), or a pretrained model's
    /// [`HfTokenizer`](super::HfTokenizer)), ready for batching.
    pub fn encode(&self, encoder: &(impl TextEncoder + ?Sized)) -> EncodedText {
        let mut ids = Vec::new();
        let mut offsets = Vec::with_capacity(self.len() + 1);
        offsets.push(0);
        for text in &self.texts {
            encoder.encode_into(text, &mut ids);
            offsets.push(ids.len());
        }
        EncodedText {
            ids,
            offsets,
            labels: self.labels.clone(),
            classes: self.classes.len(),
        }
    }
}

/// The state of one CSV read.
struct Reading<'a> {
    path: &'a Path,
    options: &'a TextCsvOptions,
    texts: Vec<String>,
    labels: Vec<usize>,
    /// Class names by id, and their ids (for [`LabelKind::Names`] and [`LabelKind::Classes`]).
    classes: Vec<String>,
    class_ids: HashMap<String, usize>,
    skipped: Skipped,
}

/// A malformed row: the column at fault (from 0) if one is, and why.
type Malformed = (Option<usize>, String);

/// Where the label and text are in each row, and how many fields a row has.
#[derive(Clone, Copy, Debug)]
struct Layout {
    label: usize,
    text: usize,
    fields: usize,
    /// What fixed `fields`: `"the header"` or `"the first row"`.
    source: &'static str,
}

/// `"commas"`, `"tabs"`, ...: what a text holding `delimiter` holds, for hints.
fn delimiters(delimiter: u8) -> String {
    match delimiter {
        b',' => "commas".to_string(),
        b'\t' => "tabs".to_string(),
        b';' => "semicolons".to_string(),
        other => format!("`{}`", other.escape_ascii()),
    }
}

/// `"only column 0"`, `"columns 0 and 1"`, `"columns 0 to 4"`: the columns of a row of
/// `fields` fields, numbered as [`Column::Index`] numbers them.
fn numbered_columns(fields: usize) -> String {
    match fields {
        0 => "no columns".to_string(),
        1 => "only column 0".to_string(),
        2 => "columns 0 and 1".to_string(),
        n => format!("columns 0 to {}", n - 1),
    }
}

impl<'a> Reading<'a> {
    fn new(path: &'a Path, options: &'a TextCsvOptions) -> Self {
        let classes = match &options.labels {
            LabelKind::Classes(names) => names.clone(),
            _ => Vec::new(),
        };
        let class_ids = classes
            .iter()
            .enumerate()
            .map(|(id, name)| (name.clone(), id))
            .collect();
        Reading {
            path,
            options,
            texts: Vec::new(),
            labels: Vec::new(),
            classes,
            class_ids,
            skipped: Skipped::default(),
        }
    }

    fn error(&self, line: u64, column: Option<usize>, message: &str) -> Error {
        match column {
            Some(c) => Error::file(self.path, format!("line {line}, column {c}: {message}")),
            None => Error::file(self.path, format!("line {line}: {message}")),
        }
    }

    fn run(mut self, reader: impl Read) -> Result<LabelledText> {
        let options = self.options;
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(options.delimiter)
            .quoting(options.quoting)
            .from_reader(CsvScan::new(reader, options.delimiter, options.quoting));
        let mut record = csv::ByteRecord::new();
        // The label column, the text column, and the number of fields every row must have.
        let mut layout: Option<Layout> = None;
        let mut first = true;
        let mut line = 1;
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => return Err(self.csv_error(error, line)),
            }
            // Not `Position::line`, which is off after blank lines (rust-csv issue 208).
            line = record
                .position()
                .and_then(|position| csv.get_mut().line_of(position.byte()))
                .unwrap_or(line);
            let unclosed = csv.get_ref().unclosed_quote().map(|quote| {
                let opened = if quote == line {
                    String::new()
                } else {
                    format!(" opened on line {quote}")
                };
                format!(
                    "the quoted cell{opened} is never closed, so the rest of the file is one \
                     cell (a stray `\"`?)"
                )
            });
            if std::mem::take(&mut first) && options.header {
                if let Some(reason) = unclosed {
                    return Err(self.error(line, None, &reason));
                }
                layout = Some(self.resolve_header(&record, line)?);
                continue;
            }
            let layout = match layout {
                Some(layout) => layout,
                None => *layout.insert(self.resolve_indices(&record, line)?),
            };
            let row = match unclosed {
                Some(reason) => Err((None, reason)),
                None => self.row(&record, layout),
            };
            match row {
                Ok((label, text)) => {
                    self.labels.push(label);
                    self.texts.push(text);
                }
                Err((column, reason)) if options.skip_malformed => {
                    let reason = match column {
                        Some(c) => format!("column {c}: {reason}"),
                        None => reason,
                    };
                    self.skipped.push(line, reason);
                }
                Err((column, reason)) => return Err(self.error(line, column, &reason)),
            }
        }
        self.finish(line)
    }

    /// The label and text columns from the header line, which also fixes the number of fields.
    fn resolve_header(&self, header: &csv::ByteRecord, line: u64) -> Result<Layout> {
        let names: Vec<String> = header
            .iter()
            .map(|cell| String::from_utf8_lossy(cell).trim().to_string())
            .collect();
        let find = |column: &Column, what: &str| match column {
            Column::Index(i) => Ok(*i),
            Column::Name(name) => names.iter().position(|n| n == name.trim()).ok_or_else(|| {
                self.error(
                    line,
                    None,
                    &format!(
                        "the header has no {what} column `{name}` (its columns: {})",
                        names.join(", ")
                    ),
                )
            }),
        };
        let label = find(&self.options.label, "label")?;
        let text = find(&self.options.text, "text")?;
        self.layout(label, text, header.len(), "the header", line, |i| {
            format!(" (`{}`)", names[i])
        })
    }

    /// The label and text columns without a header: indices only. The first row fixes the
    /// number of fields.
    fn resolve_indices(&self, first_row: &csv::ByteRecord, line: u64) -> Result<Layout> {
        let index = |column: &Column| match column {
            Column::Index(i) => Ok(*i),
            Column::Name(name) => Err(self.error(
                line,
                None,
                &format!("column `{name}` is named, but the file is read without a header line"),
            )),
        };
        let label = index(&self.options.label)?;
        let text = index(&self.options.text)?;
        self.layout(label, text, first_row.len(), "the first row", line, |_| {
            String::new()
        })
    }

    /// Checks the label and text columns against the `fields` of the header or first row
    /// (`source`), whose column `i` is described by `name(i)`.
    fn layout(
        &self,
        label: usize,
        text: usize,
        fields: usize,
        source: &'static str,
        line: u64,
        name: impl Fn(usize) -> String,
    ) -> Result<Layout> {
        for (column, what) in [(label, "label"), (text, "text")] {
            if column >= fields {
                return Err(self.error(
                    line,
                    None,
                    &format!(
                        "no {what} column {column}: {source} has {}",
                        numbered_columns(fields)
                    ),
                ));
            }
        }
        if label == text {
            // A classifier given its labels as text would learn nothing useful.
            return Err(self.error(
                line,
                None,
                &format!(
                    "the label and the text are the same column, {label}{}",
                    name(label)
                ),
            ));
        }
        Ok(Layout {
            label,
            text,
            fields,
            source,
        })
    }

    /// One row's label id and text.
    fn row(
        &mut self,
        record: &csv::ByteRecord,
        layout: Layout,
    ) -> std::result::Result<(usize, String), Malformed> {
        if record.len() != layout.fields {
            let hint = if record.len() < layout.fields {
                "a line break in a text that is not quoted?".to_string()
            } else if self.options.quoting {
                format!(
                    "quote a text that contains {}",
                    delimiters(self.options.delimiter)
                )
            } else {
                format!(
                    "a text that contains {}?",
                    delimiters(self.options.delimiter)
                )
            };
            return Err((
                None,
                format!(
                    "{} field{} where {} has {} ({hint})",
                    record.len(),
                    if record.len() == 1 { "" } else { "s" },
                    layout.source,
                    layout.fields,
                ),
            ));
        }
        let cell = |column: usize, what: &str| {
            // Present: the row has as many fields as the header, which has both columns.
            let bytes = record.get(column).unwrap_or_default();
            std::str::from_utf8(bytes).map_err(|e| {
                (
                    Some(column),
                    format!(
                        "the {what} is not valid UTF-8 (at byte {} of the cell)",
                        e.valid_up_to()
                    ),
                )
            })
        };
        let label = cell(layout.label, "label")?.trim();
        let text = cell(layout.text, "text")?;
        let label = self
            .label(label)
            .map_err(|reason| (Some(layout.label), reason))?;
        Ok((label, text.to_string()))
    }

    fn label(&mut self, label: &str) -> std::result::Result<usize, String> {
        match &self.options.labels {
            LabelKind::Integers { classes } => {
                let value: usize = label
                    .parse()
                    .map_err(|_| format!("label `{label}` is not a class number (0, 1, ...)"))?;
                match classes {
                    Some(n) if value >= *n => {
                        Err(format!("label {value} is out of range for {n} classes"))
                    }
                    _ => Ok(value),
                }
            }
            LabelKind::Names(_) => {
                if label.is_empty() {
                    return Err("the label is empty".into());
                }
                if let Some(&id) = self.class_ids.get(label) {
                    return Ok(id);
                }
                let id = self.classes.len();
                self.classes.push(label.to_string());
                self.class_ids.insert(label.to_string(), id);
                Ok(id)
            }
            LabelKind::Classes(names) => self.class_ids.get(label).copied().ok_or_else(|| {
                format!(
                    "unknown label `{label}` (the classes are {})",
                    names.join(", ")
                )
            }),
        }
    }

    /// A read error after the record on `line`. (The error's own position has the csv
    /// crate's line, which is off after blank lines; reading with `flexible` and byte
    /// records, the only errors are the reader's.)
    fn csv_error(&self, error: csv::Error, line: u64) -> Error {
        match error.into_kind() {
            csv::ErrorKind::Io(io) => source::read_error(self.path, &format!("line {line}"), io),
            other => self.error(line, None, &format!("{other:?}")),
        }
    }

    /// The data set read, or an error if no row was usable; `line` is the last line read.
    fn finish(mut self, line: u64) -> Result<LabelledText> {
        if self.texts.is_empty() {
            let message = match self.skipped.first.first() {
                Some(row) => format!(
                    "every one of the {} rows is malformed (line {}: {})",
                    self.skipped.count, row.line, row.reason
                ),
                None if self.options.header => {
                    format!("line {line}: no data rows after the header line")
                }
                None => format!("line {line}: no data rows (the file is empty)"),
            };
            return Err(Error::file(self.path, message));
        }
        match self.options.labels {
            LabelKind::Integers { classes } => {
                let n = classes.unwrap_or_else(|| self.labels.iter().max().map_or(0, |m| m + 1));
                self.classes = (0..n).map(|c| c.to_string()).collect();
            }
            LabelKind::Names(ClassOrder::Sorted) => {
                let mut order: Vec<usize> = (0..self.classes.len()).collect();
                order.sort_by(|&a, &b| self.classes[a].cmp(&self.classes[b]));
                let mut new_id = vec![0; order.len()];
                for (new, &old) in order.iter().enumerate() {
                    new_id[old] = new;
                }
                for label in &mut self.labels {
                    *label = new_id[*label];
                }
                self.classes = order.iter().map(|&old| self.classes[old].clone()).collect();
            }
            LabelKind::Names(ClassOrder::FirstSeen) | LabelKind::Classes(_) => {}
        }
        Ok(LabelledText {
            texts: self.texts,
            labels: self.labels,
            classes: self.classes,
            skipped: self.skipped,
        })
    }
}

/// Texts encoded as ids (one flat buffer), with their labels: what [`TextLoader`] batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedText {
    ids: Vec<usize>,
    /// Text `i` is `ids[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    labels: Vec<usize>,
    classes: usize,
}

impl EncodedText {
    /// The number of texts.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The ids of text `index` (empty for an empty text).
    ///
    /// # Panics
    /// If `index` is not below [`EncodedText::len`].
    pub fn sequence(&self, index: usize) -> &[usize] {
        &self.ids[self.offsets[index]..self.offsets[index + 1]]
    }

    /// The labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// A loader of batches of `batch_size` texts, in order, keeping the last smaller batch,
    /// not truncating; see [`TextLoader`]'s options.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    pub fn loader(&self, batch_size: usize) -> TextLoader<'_> {
        assert!(batch_size > 0, "batch_size must be at least 1");
        TextLoader {
            data: self,
            batch_size,
            seed: None,
            drop_last: false,
            max_len: None,
        }
    }
}

/// Cuts an [`EncodedText`] into [`TextBatch`]es, each padded to its own longest text (as
/// [`pad_batch`](super::pad_batch) does).
#[derive(Clone, Debug)]
pub struct TextLoader<'a> {
    data: &'a EncodedText,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
    max_len: Option<usize>,
}

impl<'a> TextLoader<'a> {
    /// Visit the texts in a random order each epoch, fixed by `seed` and the epoch number
    /// (the same scheme as [`DataLoader::shuffle`](crate::data::DataLoader::shuffle)).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Leave out a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Truncate texts to their first `max_len` ids.
    ///
    /// # Panics
    /// If `max_len` is 0.
    pub fn max_len(mut self, max_len: usize) -> Self {
        assert!(max_len > 0, "max_len must be at least 1");
        self.max_len = Some(max_len);
        self
    }

    /// The number of batches an epoch has.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.data.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The batches of epoch `epoch` (which picks the shuffle).
    pub fn epoch(&self, epoch: usize) -> TextEpoch<'a> {
        let n = self.data.len();
        let order = match self.seed {
            Some(seed) => permutation(n, &mut epoch_rng(seed, epoch)),
            None => (0..n).collect(),
        };
        TextEpoch {
            loader: self.clone(),
            order,
            batch: 0,
        }
    }
}

/// One batch of texts: `tokens` `[B, T]` (padded with [`Vocab::PAD`](super::Vocab::PAD) to the batch's longest
/// text, or truncated to [`TextLoader::max_len`]), `lengths` `[B]` (at least 1) and
/// `labels` `[B]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextBatch {
    /// The ids, `[B, T]`.
    pub tokens: Array2<usize>,
    /// Each text's length in `tokens`, clamped to at least 1.
    pub lengths: Array1<usize>,
    /// The class ids.
    pub labels: Array1<usize>,
}

/// The batches of one epoch: an [`Iterator`] of new [`TextBatch`]es, or, with
/// [`TextEpoch::next_into`], refills of one batch's buffers.
#[derive(Clone, Debug)]
pub struct TextEpoch<'a> {
    loader: TextLoader<'a>,
    order: Vec<usize>,
    batch: usize,
}

impl TextEpoch<'_> {
    /// Writes the next batch into `batch`, reusing its buffers (no allocation once they are
    /// as large as the epoch's largest batch); `false` at the end of the epoch.
    pub fn next_into(&mut self, batch: &mut TextBatch) -> bool {
        if self.batch >= self.loader.batches_per_epoch() {
            return false;
        }
        let size = self.loader.batch_size;
        let start = self.batch * size;
        let indices = &self.order[start..(start + size).min(self.order.len())];
        self.batch += 1;
        let data = self.loader.data;
        let longest = indices
            .iter()
            .map(|&i| data.sequence(i).len())
            .max()
            .unwrap_or(0);
        let len = self
            .loader
            .max_len
            .map_or(longest, |m| longest.min(m))
            .max(1);
        let rows = indices.len();
        batch.tokens = reshaped2(std::mem::take(&mut batch.tokens), rows, len);
        batch.lengths = reshaped1(std::mem::take(&mut batch.lengths), rows);
        batch.labels = reshaped1(std::mem::take(&mut batch.labels), rows);
        pad_into(
            indices.iter().map(|&i| data.sequence(i)),
            len,
            &mut batch.tokens,
            &mut batch.lengths,
        );
        for (slot, &i) in batch.labels.iter_mut().zip(indices) {
            *slot = data.labels[i];
        }
        true
    }
}

impl Iterator for TextEpoch<'_> {
    type Item = TextBatch;

    fn next(&mut self) -> Option<TextBatch> {
        let mut batch = TextBatch::default();
        self.next_into(&mut batch).then_some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.loader.batches_per_epoch() - self.batch;
        (left, Some(left))
    }
}

impl ExactSizeIterator for TextEpoch<'_> {}

/// `array`'s buffer as a `[rows, cols]` array (contents unspecified), reallocating only if
/// it is too small.
fn reshaped2(array: Array2<usize>, rows: usize, cols: usize) -> Array2<usize> {
    let (mut buffer, _) = array.into_raw_vec_and_offset();
    buffer.resize(rows * cols, 0);
    Array2::from_shape_vec((rows, cols), buffer).unwrap_or_else(|_| Array2::zeros((rows, cols)))
}

/// `array`'s buffer as a `[len]` array, reallocating only if it is too small.
fn reshaped1(array: Array1<usize>, len: usize) -> Array1<usize> {
    let (mut buffer, _) = array.into_raw_vec_and_offset();
    buffer.resize(len, 0);
    Array1::from_vec(buffer)
}
