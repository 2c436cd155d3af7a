//! [`CsvScan`]: the reader under the CSV parser of [`LabelledText`](super::LabelledText),
//! which knows the physical line each record starts on.
//!
//! `csv::Position::line` is wrong after skipped blank lines (rust-csv issue 208), and the
//! record's byte position, which is right, points at the start of those blank lines rather
//! than at the record. So this reader follows the bytes the parser reads with the same rules
//! (`csv_core`'s, for the options `LabelledText` uses: one quote byte `"`, doubled quotes
//! inside quoted cells, `\r`, `\n` or `\r\n` ending records, blank lines skipped, no comments,
//! no escape byte) and notes where each record starts and on which line.

use std::collections::VecDeque;
use std::io::{self, Read};

const BOM: [u8; 3] = [0xef, 0xbb, 0xbf];

/// Where the parser is in a record, as far as quoting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// At the start of a record or cell.
    Start,
    /// In a cell that did not start with a quote (quotes in it are plain bytes).
    Plain,
    /// In a quoted cell.
    Quoted,
    /// Just after a quote in a quoted cell: it closes the cell, or, doubled, is a quote.
    QuoteInQuoted,
}

/// A reader that drops a leading UTF-8 byte-order mark (so that it is not part of the first
/// cell) and records, for each CSV record it passes on, the byte offset and the line of the
/// record's first byte.
pub(super) struct CsvScan<R> {
    inner: R,
    delimiter: u8,
    quoting: bool,
    /// The first bytes, read ahead to look for a byte-order mark: `head[taken..len]` are
    /// still to be passed on.
    head: [u8; 3],
    head_len: usize,
    head_taken: usize,
    /// Whether `head` has been filled.
    started: bool,
    /// The offset of the next byte passed on (counting after the byte-order mark, as the
    /// parser's positions do).
    offset: u64,
    /// The line of the next byte, from 1: `\n`, `\r\n` and a lone `\r` end a line.
    line: u64,
    after_cr: bool,
    cell: Cell,
    /// The next byte that is not a line end starts a record.
    at_record_start: bool,
    /// The line of the quote that opened the current quoted cell.
    quote_line: u64,
    /// (byte offset, line) of the records read ahead of the parser.
    starts: VecDeque<(u64, u64)>,
    /// The inner reader reported the end of the input.
    eof: bool,
}

impl<R: Read> CsvScan<R> {
    /// Scans `inner` for a parser with this delimiter and quoting.
    pub(super) fn new(inner: R, delimiter: u8, quoting: bool) -> Self {
        CsvScan {
            inner,
            delimiter,
            quoting,
            head: [0; 3],
            head_len: 0,
            head_taken: 0,
            started: false,
            offset: 0,
            line: 1,
            after_cr: false,
            cell: Cell::Start,
            at_record_start: true,
            quote_line: 0,
            starts: VecDeque::new(),
            eof: false,
        }
    }

    /// The line of the record at byte `offset` (the parser's `Position::byte`, which may
    /// point at blank lines before the record), counting from 1; `None` if no record was
    /// seen there. Calls must come with increasing offsets: records before `offset` are
    /// forgotten, so that memory stays bounded by the parser's read-ahead.
    pub(super) fn line_of(&mut self, offset: u64) -> Option<u64> {
        while self
            .starts
            .front()
            .is_some_and(|&(start, _)| start < offset)
        {
            self.starts.pop_front();
        }
        self.starts.front().map(|&(_, line)| line)
    }

    /// The line of the quote that opened a quoted cell still open at the end of the input
    /// (which the parser ends silently, making every row after it part of that cell).
    pub(super) fn unclosed_quote(&self) -> Option<u64> {
        (self.eof && self.cell == Cell::Quoted).then_some(self.quote_line)
    }

    /// Reads the first three bytes (fewer for a shorter input) into `head`, dropping them if
    /// they are a byte-order mark.
    fn start(&mut self) -> io::Result<()> {
        while self.head_len < BOM.len() {
            match self.inner.read(&mut self.head[self.head_len..]) {
                Ok(0) => break,
                Ok(n) => self.head_len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head[..self.head_len] == BOM {
            self.head_taken = self.head_len;
        }
        self.started = true;
        Ok(())
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let line_end = byte == b'\n' || byte == b'\r';
            if self.at_record_start && !line_end {
                self.starts.push_back((self.offset, self.line));
                self.at_record_start = false;
            }
            let separator = line_end || byte == self.delimiter;
            self.cell = match self.cell {
                Cell::Start if self.quoting && byte == b'"' => {
                    self.quote_line = self.line;
                    Cell::Quoted
                }
                Cell::Quoted if byte == b'"' => Cell::QuoteInQuoted,
                Cell::Quoted => Cell::Quoted,
                Cell::QuoteInQuoted if byte == b'"' => Cell::Quoted,
                Cell::Start | Cell::Plain | Cell::QuoteInQuoted if separator => Cell::Start,
                Cell::Start | Cell::Plain | Cell::QuoteInQuoted => Cell::Plain,
            };
            if line_end && self.cell != Cell::Quoted {
                self.at_record_start = true;
            }
            if byte == b'\r' || (byte == b'\n' && !self.after_cr) {
                self.line += 1;
            }
            self.after_cr = byte == b'\r';
            self.offset += 1;
        }
    }
}

impl<R: Read> Read for CsvScan<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.start()?;
        }
        let n = if self.head_taken < self.head_len {
            let head = &self.head[self.head_taken..self.head_len];
            let n = head.len().min(buf.len());
            buf[..n].copy_from_slice(&head[..n]);
            self.head_taken += n;
            n
        } else {
            self.inner.read(buf)?
        };
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.scan(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (line, first bytes) of each record the csv crate reads from `text` through a
    /// scan, read `chunk` bytes at a time.
    fn records(text: &[u8], chunk: usize, quoting: bool) -> Vec<(u64, Vec<u8>)> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .quoting(quoting)
            .from_reader(CsvScan::new(Chunked(text, chunk), b',', quoting));
        let mut record = csv::ByteRecord::new();
        let mut found = Vec::new();
        while csv.read_byte_record(&mut record).unwrap() {
            let byte = record.position().unwrap().byte();
            let line = csv.get_mut().line_of(byte).unwrap();
            found.push((line, record.get(0).unwrap().to_vec()));
        }
        found
    }

    fn lines(text: &[u8]) -> Vec<u64> {
        let all = records(text, usize::MAX, true).into_iter().map(|(l, _)| l);
        let all: Vec<u64> = all.collect();
        // Read a byte at a time, or in chunks of 2, the lines are the same.
        for chunk in [1, 2] {
            let again: Vec<u64> = records(text, chunk, true).iter().map(|r| r.0).collect();
            assert_eq!(again, all, "read {chunk} bytes at a time");
        }
        all
    }

    #[test]
    fn lines_count_blank_lines_crlf_and_lone_cr() {
        assert_eq!(lines(b"a\nb\n\n\n\nc\n"), [1, 2, 6]);
        assert_eq!(lines(b"a\r\nb\r\n\r\n\r\nc"), [1, 2, 5]);
        assert_eq!(lines(b"a\rb\r\rc\r"), [1, 2, 4]);
        assert_eq!(lines(b"\n\na\n"), [3]);
    }

    #[test]
    fn quoted_cells_with_line_ends_and_quotes() {
        assert_eq!(
            lines(b"a,\"x\n\ny\"\nb,\"q\"\"\r\n\"\"\"\nc,\"\"\n"),
            [1, 4, 6]
        );
        // A quote inside an unquoted cell is a plain byte.
        assert_eq!(lines(b"a,x\"y\nb\n"), [1, 2]);
        // Without quoting, a quote opens nothing.
        let plain = records(b"\"a\n\"b\n", 1, false);
        assert_eq!(plain, [(1, b"\"a".to_vec()), (2, b"\"b".to_vec())]);
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        for chunk in [1, 2, 3, 100] {
            let found = records(b"\xef\xbb\xbf\"a\",b\n\nc\n", chunk, true);
            assert_eq!(found, [(1, b"a".to_vec()), (3, b"c".to_vec())]);
        }
        // Too short to be one, or only its start: passed on.
        assert_eq!(records(b"\xef\xbb", 1, true), [(1, b"\xef\xbb".to_vec())]);
        assert_eq!(records(b"x", 1, true), [(1, b"x".to_vec())]);
    }

    #[test]
    fn an_unclosed_quote_is_reported_at_the_end() {
        let mut scan = CsvScan::new(&b"a\nb,\"c\nd\ne\n"[..], b',', true);
        let mut all = Vec::new();
        scan.read_to_end(&mut all).unwrap();
        assert_eq!(scan.unclosed_quote(), Some(2));
        let mut closed = CsvScan::new(&b"a\nb,\"c\nd\"\"\"\ne\n"[..], b',', true);
        closed.read_to_end(&mut all).unwrap();
        assert_eq!(closed.unclosed_quote(), None);
    }
}
