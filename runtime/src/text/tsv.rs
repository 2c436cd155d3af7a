//! [`read_tsv`]: tables of text lines in tab-separated files, such as a book one line per row.

use crate::data::source;
use crate::{Error, Result};
use std::io::BufRead;
use std::path::Path;

/// A tab-separated table of text: the header's column names and the rows' cells.
///
/// The format is the plain one (`novel\tline` a line, as `austen.tsv.gz` holds): one row per
/// line, cells separated by tabs, no quoting (quotes are text), every row as many cells as
/// the header. Read it with [`read_tsv`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tsv {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Reads a tab-separated file with a header line, gzip-compressed or not (recognised by
/// content). Line ends (`\n` or `\r\n`) are removed; empty lines inside the data are rows
/// (of one empty cell, so only a one-column table may have them).
///
/// ```
/// use kiln_runtime::text::read_tsv;
/// # fn main() -> kiln_runtime::Result<()> {
/// let path = std::env::temp_dir().join(format!("kiln-doc-tsv-{}.tsv", std::process::id()));
/// std::fs::write(&path, "novel\tline\nemma\tEMMA\nemma\t\npersuasion\t\"Oh!\" she said\n")
///     .expect("temp dir is writable");
/// let table = read_tsv(&path)?;
/// assert_eq!(table.columns(), ["novel", "line"]);
/// assert_eq!(table.joined("line", "\n")?, "EMMA\n\n\"Oh!\" she said");
/// assert_eq!(table.joined_where("line", "novel", "emma", "\n")?, "EMMA\n");
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::File`] naming the line for an empty
/// file, a row with a different number of cells from the header, text that is not UTF-8, or
/// corrupt gzip data.
pub fn read_tsv(path: impl AsRef<Path>) -> Result<Tsv> {
    let path = path.as_ref();
    let mut reader = source::open(path)?;
    let mut buffer = String::new();
    let mut line = 0usize;
    let mut table = Tsv::default();
    loop {
        buffer.clear();
        let read = reader
            .read_line(&mut buffer)
            .map_err(|e| source::read_error(path, &format!("line {}", line + 1), e))?;
        if read == 0 {
            break;
        }
        line += 1;
        let text = buffer.strip_suffix('\n').unwrap_or(&buffer);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if line == 1 {
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            table.columns = text.split('\t').map(str::to_string).collect();
            continue;
        }
        let cells: Vec<String> = text.split('\t').map(str::to_string).collect();
        if cells.len() != table.columns.len() {
            return Err(Error::file(
                path,
                format!(
                    "line {line}: {} cells, but the header has {} columns",
                    cells.len(),
                    table.columns.len()
                ),
            ));
        }
        table.rows.push(cells);
    }
    if line == 0 {
        return Err(Error::file(
            path,
            "byte 0: the file is empty (no header line)",
        ));
    }
    Ok(table)
}

impl Tsv {
    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The rows (without the header), each one cell per column.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The index of the column named `name`.
    ///
    /// # Errors
    /// [`Error::File`] (naming the file `<table>`) if there is no such column.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            Error::file(
                Path::new("<table>"),
                format!(
                    "no column `{name}` (the columns: {})",
                    self.columns.join(", ")
                ),
            )
        })
    }

    /// The cells of column `name`, joined with `separator` (`"\n"` puts a book's lines back
    /// together, blank lines as paragraph breaks).
    ///
    /// # Errors
    /// As [`Tsv::column`].
    pub fn joined(&self, name: &str, separator: &str) -> Result<String> {
        let column = self.column(name)?;
        Ok(self.join(column, separator, |_| true))
    }

    /// The cells of column `name` in the rows whose column `key` is `value`, joined with
    /// `separator` (one novel's text: `joined_where("line", "novel", "emma", "\n")`).
    ///
    /// # Errors
    /// As [`Tsv::column`].
    pub fn joined_where(
        &self,
        name: &str,
        key: &str,
        value: &str,
        separator: &str,
    ) -> Result<String> {
        let column = self.column(name)?;
        let key = self.column(key)?;
        Ok(self.join(column, separator, |row| row[key] == value))
    }

    fn join(&self, column: usize, separator: &str, keep: impl Fn(&[String]) -> bool) -> String {
        let mut text = String::new();
        for (i, row) in self.rows.iter().filter(|row| keep(row)).enumerate() {
            if i > 0 {
                text.push_str(separator);
            }
            text.push_str(&row[column]);
        }
        text
    }
}
