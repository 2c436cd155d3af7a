//! Opening data files, gzip-compressed or not, and turning read failures into [`Error`]s.

use crate::Error;
use flate2::bufread::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// The first two bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens `path` for buffered reading, decompressing it when it is gzip.
///
/// Gzip is recognised by its magic bytes rather than by a `.gz` name: a compressed file is
/// read whatever it is called, and a `.gz` file that is already decompressed (as browsers
/// leave downloads) is read as it is. (Neither CSV text nor IDX data can start with `1f 8b`.)
pub(crate) fn open(path: &Path) -> Result<Box<dyn BufRead>, Error> {
    let io_error = |source| Error::io(path, source);
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let gzip = reader
        .fill_buf()
        .map_err(io_error)?
        .starts_with(&GZIP_MAGIC);
    Ok(if gzip {
        // Multi-member, as `gzip` concatenations and some archivers produce.
        Box::new(BufReader::new(MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

/// Converts a read failure at `position` (`"line 3"`, `"byte 16"`) into an [`Error`]: bad
/// data (invalid UTF-8, a corrupt or truncated gzip stream) is a malformed file,
/// [`Error::File`]; anything else is the operating system's, [`Error::Io`].
pub(crate) fn read_error(path: &Path, position: &str, error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            Error::file(path, format!("{position}: cannot read: {error}"))
        }
        _ => Error::Io {
            path: path.to_path_buf(),
            source: error,
        },
    }
}
