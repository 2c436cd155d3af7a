//! CSV files of numbers: one sample per line, feature columns and one integer class-label
//! column, gzip-compressed or not.
//!
//! The format is the plain one numeric data sets use: cells separated by one delimiter
//! character, surrounding spaces ignored, no quoting, blank lines skipped, an optional header
//! line. Every malformed line is reported as [`Error::File`] with its line number (counting
//! from 1, the header included), the column (counting from 0, as [`CsvOptions::label_column`]
//! and `kiln::text`'s readers do) and the offending text.

use super::source;
use super::TensorDataset;
use crate::{Error, Float, Result};
use ndarray::{Array1, Array2};
use std::io::BufRead;
use std::path::Path;

/// How to read a CSV file. The default reads comma-separated numbers without a header, with
/// the class label in the last column and as many classes as the largest label + 1.
///
/// ```
/// use kiln_runtime::data::CsvOptions;
/// let options = CsvOptions { header: true, label_column: Some(0), ..CsvOptions::default() };
/// assert_eq!(options.delimiter, ',');
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// Skip the first line (column names).
    pub header: bool,
    /// The column holding the class label, counting from 0; `None` for the last column. The
    /// other columns are the features, in file order.
    pub label_column: Option<usize>,
    /// The number of classes; a label not below it is an error. `None` takes the largest
    /// label + 1 (which undercounts when the last classes happen not to occur in the file).
    pub classes: Option<usize>,
    /// The character between cells (`,`; `;` and `\t` are common too).
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: false,
            label_column: None,
            classes: None,
            delimiter: ',',
        }
    }
}

/// Reads a CSV file into a classification data set with features of shape `[columns - 1]`,
/// decompressing it on the fly when it is gzip (recognised by content, so `digits.csv.gz`
/// and a compressed file under any other name both work).
///
/// ```
/// use kiln_runtime::data::{read_csv, CsvOptions, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let path = std::env::temp_dir().join(format!("kiln-doc-{}.csv", std::process::id()));
/// std::fs::write(&path, "x,y,class\n0.5,1.5,0\n2.0,-1.0,1\n").expect("temp dir is writable");
/// let data = read_csv::<f32>(&path, &CsvOptions { header: true, ..CsvOptions::default() })?;
/// assert_eq!((data.len(), data.sample_shape(), data.classes()), (2, &[2][..], Some(2)));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::File`] naming the line,
/// column and text for a malformed file: no data rows, rows of different lengths, an empty
/// or non-numeric (or infinite, or NaN) cell, a label that is not a non-negative integer or
/// not below [`CsvOptions::classes`], a label column out of range, text that is not UTF-8,
/// or corrupt gzip data (positions are then in the decompressed text).
pub fn read_csv<F: Float>(
    path: impl AsRef<Path>,
    options: &CsvOptions,
) -> Result<TensorDataset<F>> {
    let path = path.as_ref();
    from_reader(source::open(path)?, path, options)
}

/// Reads CSV text held in memory (errors name the file `<string>`). See [`read_csv`].
///
/// ```
/// use kiln_runtime::data::{read_csv_str, CsvOptions};
/// # fn main() -> kiln_runtime::Result<()> {
/// let semicolons = CsvOptions { delimiter: ';', ..CsvOptions::default() };
/// let data = read_csv_str::<f64>("1;2;0\n3;4;1\n", &semicolons)?;
/// assert_eq!(data.features()[[1, 0]], 3.0);
/// let error = read_csv_str::<f64>("1,2,0\n3,x,1\n", &CsvOptions::default()).unwrap_err();
/// assert_eq!(error.to_string(), "<string>: line 2, column 1: `x` is not a number");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// As [`read_csv`].
pub fn read_csv_str<F: Float>(text: &str, options: &CsvOptions) -> Result<TensorDataset<F>> {
    from_reader(text.as_bytes(), "<string>", options)
}

/// Reads CSV text from any buffered reader; `name` is the file name errors report. See
/// [`read_csv`]. (The reader is read as is: wrap a gzip stream in a decoder first.)
///
/// # Errors
/// As [`read_csv`].
pub fn from_reader<F: Float>(
    reader: impl BufRead,
    name: impl AsRef<Path>,
    options: &CsvOptions,
) -> Result<TensorDataset<F>> {
    parse(reader, name.as_ref(), options).map(|(data, _header)| data)
}

/// Parses CSV text; also returns the header line when [`CsvOptions::header`] is set (the
/// bundled iris file keeps its class names there).
pub(super) fn parse<F: Float>(
    mut reader: impl BufRead,
    path: &Path,
    options: &CsvOptions,
) -> Result<(TensorDataset<F>, Option<String>)> {
    let error = |message: String| -> Error { Error::file(path, message) };
    let delimiter = options.delimiter;
    let mut header = None;
    let mut features: Vec<F> = Vec::new();
    let mut labels: Vec<usize> = Vec::new();
    // (columns, label column, the line that fixed them) once the first data row is read.
    let mut layout: Option<(usize, usize, usize)> = None;
    let mut buffer = String::new();
    let mut line = 0usize;
    loop {
        buffer.clear();
        let read = reader
            .read_line(&mut buffer)
            .map_err(|e| source::read_error(path, &format!("line {}", line + 1), e))?;
        if read == 0 {
            break;
        }
        line += 1;
        let text = buffer.trim_end_matches(['\n', '\r']);
        if line == 1 && options.header {
            header = Some(text.to_string());
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }

        let count = text.split(delimiter).count();
        let label_column = match layout {
            Some((columns, label_column, first)) => {
                if count != columns {
                    return Err(error(format!(
                        "line {line}: {count} columns, but line {first} has {columns} \
                         (a missing or extra `{}`?)",
                        delimiter.escape_default()
                    )));
                }
                label_column
            }
            None => {
                if count < 2 {
                    return Err(error(format!(
                        "line {line}: 1 column; a row needs at least one feature and a label \
                         (is the delimiter `{}` right?)",
                        delimiter.escape_default()
                    )));
                }
                let label_column = options.label_column.unwrap_or(count - 1);
                if label_column >= count {
                    return Err(error(format!(
                        "line {line}: label_column {label_column} is out of range for {count} \
                         columns (it counts from 0)"
                    )));
                }
                layout = Some((count, label_column, line));
                label_column
            }
        };

        for (index, cell) in text.split(delimiter).enumerate() {
            let cell = cell.trim();
            let at = || format!("line {line}, column {index}");
            if cell.is_empty() {
                return Err(error(format!("{}: empty cell", at())));
            }
            if index == label_column {
                let label = parse_label(cell).map_err(|why| error(format!("{}: {why}", at())))?;
                if let Some(classes) = options.classes.filter(|&c| label >= c) {
                    return Err(error(format!(
                        "{}: label {label} is out of range for {classes} classes (labels must \
                         be 0..{classes})",
                        at()
                    )));
                }
                labels.push(label);
            } else {
                match cell.parse::<f64>() {
                    Ok(value) if value.is_finite() => features.push(F::from_f64(value)),
                    Ok(_) => {
                        return Err(error(format!("{}: `{cell}` is not a finite number", at())))
                    }
                    Err(_) => return Err(error(format!("{}: `{cell}` is not a number", at()))),
                }
            }
        }
    }

    let Some((columns, _, _)) = layout else {
        return Err(error(if options.header {
            format!("line {line}: no data rows after the header line")
        } else {
            format!("line {}: no data rows (the file is empty)", line.max(1))
        }));
    };
    let classes = options
        .classes
        .unwrap_or_else(|| labels.iter().max().map_or(0, |&m| m + 1));
    let n = labels.len();
    let features = Array2::from_shape_vec((n, columns - 1), features)
        .map_err(|e| error(format!("internal error assembling {n} rows: {e}")))?;
    let data = TensorDataset::with_labels(features, Array1::from_vec(labels), classes)?;
    Ok((data, header))
}

/// A class label: a non-negative integer, written `3` or `3.0`.
fn parse_label(cell: &str) -> Result<usize, String> {
    if let Ok(label) = cell.parse::<usize>() {
        return Ok(label);
    }
    match cell.parse::<f64>() {
        // Float-formatted integers (`3.0`) are what some exporters write for integer columns;
        // 2^53 bounds the integers an f64 holds exactly.
        Ok(v) if v >= 0.0 && v.fract() == 0.0 && v < 9_007_199_254_740_992.0 => Ok(v as usize),
        Ok(v) if v < 0.0 => Err(format!(
            "label `{cell}` is negative (labels are class numbers 0, 1, ...)"
        )),
        Ok(v) if v.fract() == 0.0 => Err(format!("label `{cell}` is too large to be a class")),
        Ok(_) => Err(format!(
            "label `{cell}` is not an integer (labels are class numbers 0, 1, ...)"
        )),
        Err(_) => Err(format!(
            "label `{cell}` is not a number (labels are class numbers 0, 1, ...; map class names \
             to numbers first)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    fn read(text: &str, options: &CsvOptions) -> Result<TensorDataset<f64>> {
        read_csv_str(text, options)
    }

    #[test]
    fn labels_accept_integers_and_integral_floats_only() {
        assert_eq!(parse_label("7"), Ok(7));
        assert_eq!(parse_label("7.0"), Ok(7));
        assert!(parse_label("-0.5").unwrap_err().contains("negative"));
        assert!(parse_label("1e300").unwrap_err().contains("too large"));
        assert!(parse_label("2.5").unwrap_err().contains("not an integer"));
        assert!(parse_label("NaN").unwrap_err().contains("not an integer"));
        assert!(parse_label("cat").unwrap_err().contains("not a number"));
    }

    #[test]
    fn crlf_blank_lines_and_spaces_are_tolerated() {
        let data = read("1, 2 ,0\r\n\r\n 3,4, 1\r\n\n", &CsvOptions::default()).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.features().as_slice(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!(data.labels().unwrap().to_vec(), [0, 1]);
    }

    #[test]
    fn header_is_returned_for_the_bundled_readers() {
        let options = CsvOptions {
            header: true,
            ..CsvOptions::default()
        };
        let (data, header) =
            parse::<f32>("a,b\n1,0\n".as_bytes(), Path::new("x"), &options).unwrap();
        assert_eq!(header.as_deref(), Some("a,b"));
        assert_eq!(data.sample_shape(), [1]);
    }
}
