//! IDX files, the format of MNIST (and Fashion-MNIST): a 4-byte magic number `00 00 TT NN`
//! (`TT` the element type, `0x08` for unsigned bytes; `NN` the number of dimensions), `NN`
//! big-endian `u32` dimension sizes, then the elements in row-major order.
//!
//! Files may be gzip-compressed (as MNIST is distributed); byte offsets in error messages are
//! then offsets into the decompressed data.

use super::source;
use super::TensorDataset;
use crate::{Error, Float, Result};
use ndarray::{Array1, Array3, Array4, ArrayD, IxDyn};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// The IDX type code of unsigned bytes, the only element type kiln reads.
const UBYTE: u8 = 0x08;

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "not an IDX type",
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8], path: &Path, offset: usize) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(source::read_error(
                    path,
                    &format!("byte {}", offset + filled),
                    e,
                ))
            }
        }
    }
    Ok(filled)
}

/// Parses an unsigned-byte IDX stream; `dims` = the number of dimensions required, if any, and
/// `what` names the kind of file expected (for the error message).
fn parse(
    mut reader: impl BufRead,
    path: &Path,
    dims: Option<(usize, &str)>,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let error = |message: String| -> Error { Error::file(path, message) };
    let mut magic = [0u8; 4];
    let got = read_full(&mut reader, &mut magic, path, 0)?;
    if got < 4 {
        return Err(error(format!(
            "byte {got}: the file ends inside the 4-byte IDX magic number (it has {got} bytes)"
        )));
    }
    if magic[..2] != [0, 0] {
        return Err(error(format!(
            "byte 0: expected an IDX magic number (00 00, a type code, a dimension count), \
             found 0x{:08X}: not an IDX file",
            u32::from_be_bytes(magic)
        )));
    }
    if magic[2] != UBYTE {
        return Err(error(format!(
            "byte 2: expected type code 0x08 (unsigned byte), found 0x{:02X} ({}); kiln reads \
             unsigned-byte IDX files only",
            magic[2],
            type_name(magic[2])
        )));
    }
    let ndim = usize::from(magic[3]);
    match dims {
        Some((want, what)) if ndim != want => {
            return Err(error(format!(
                "byte 3: expected {want} dimension{} ({what}), found {ndim}",
                if want == 1 { "" } else { "s" }
            )))
        }
        None if ndim == 0 => {
            return Err(error(
                "byte 3: expected at least 1 dimension, found 0".into(),
            ))
        }
        _ => {}
    }

    let mut raw = vec![0u8; 4 * ndim];
    let got = read_full(&mut reader, &mut raw, path, 4)?;
    if got < raw.len() {
        return Err(error(format!(
            "byte {}: the file ends inside the dimension sizes (expected {ndim} × 4 bytes after \
             the magic number, found {got})",
            4 + got
        )));
    }
    let shape: Vec<usize> = raw
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let header = 4 + 4 * ndim;
    let Some(total) = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return Err(error(format!(
            "byte 4: the dimensions {shape:?} multiply to more elements than memory can hold"
        )));
    };

    // Grows with the data actually present (a small reservation, doubling as bytes arrive),
    // so a corrupt header that claims gigabytes fails as "truncated" after allocating no more
    // than about twice what the file holds.
    let mut data = Vec::with_capacity(total.min(1 << 16));
    (&mut reader)
        .take(total as u64)
        .read_to_end(&mut data)
        .map_err(|e| source::read_error(path, &format!("byte {}", header + data.len()), e))?;
    if data.len() < total {
        return Err(error(format!(
            "byte {}: expected {total} data bytes for dimensions {shape:?} after the {header}-byte \
             header, found only {}: the file is truncated",
            header + data.len(),
            data.len()
        )));
    }
    let mut extra = [0u8; 1];
    if read_full(&mut reader, &mut extra, path, header + total)? > 0 {
        return Err(error(format!(
            "byte {}: expected the end of the file after the {total} data bytes for dimensions \
             {shape:?}, found more data (wrong dimensions, or two files joined?)",
            header + total
        )));
    }
    Ok((shape, data))
}

fn read(path: &Path, dims: Option<(usize, &str)>) -> Result<(Vec<usize>, Vec<u8>)> {
    parse(source::open(path)?, path, dims)
}

/// Reads an unsigned-byte IDX file of any number of dimensions, gzip-compressed or not.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::File`] with the byte offset
/// and what was expected there for a bad magic number, another element type than unsigned
/// bytes, truncated data or trailing bytes.
pub fn read_idx(path: impl AsRef<Path>) -> Result<ArrayD<u8>> {
    let path = path.as_ref();
    let (shape, data) = read(path, None)?;
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| Error::file(path, format!("internal error: {e}")))
}

/// Reads an IDX image file (MNIST's `*-images-idx3-ubyte`): shape `[images, rows, columns]`,
/// pixels 0..=255.
///
/// # Errors
/// As [`read_idx`], and [`Error::File`] if the file does not have 3 dimensions.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Array3<u8>> {
    let path = path.as_ref();
    let (shape, data) = read(path, Some((3, "an image file: count, rows, columns")))?;
    Array3::from_shape_vec((shape[0], shape[1], shape[2]), data)
        .map_err(|e| Error::file(path, format!("internal error: {e}")))
}

/// Reads an IDX label file (MNIST's `*-labels-idx1-ubyte`): one byte per label.
///
/// # Errors
/// As [`read_idx`], and [`Error::File`] if the file does not have exactly 1 dimension.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Array1<u8>> {
    let path = path.as_ref();
    let (_, data) = read(path, Some((1, "a label file: count")))?;
    Ok(Array1::from_vec(data))
}

/// Finds `stem` in `dir` under its usual names: as is, gzip-compressed, and with the dot some
/// mirrors use (`train-images.idx3-ubyte`).
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let names = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    if let Some(found) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let place = if dir.is_dir() {
        format!("in {}", dir.display())
    } else if dir.exists() {
        format!(
            "({} is a file; give the directory that holds the files)",
            dir.display()
        )
    } else {
        format!("(the directory {} does not exist)", dir.display())
    };
    Err(Error::file(
        &dir.join(stem),
        format!("MNIST file not found {place}; tried {}", names.join(", ")),
    ))
}

/// Reads one split of MNIST: images scaled to `[0, 1]` as `[n, 1, 28, 28]`, labels 0..9.
fn split<F: Float>(dir: &Path, images: &str, labels: &str) -> Result<TensorDataset<F>> {
    let images_path = find(dir, images)?;
    let labels_path = find(dir, labels)?;
    let (shape, pixels) = read(
        &images_path,
        Some((3, "an image file: count, rows, columns")),
    )?;
    if shape[1..] != [28, 28] {
        return Err(Error::file(
            &images_path,
            format!(
                "byte 8: expected 28 × 28 images, found {} × {} (MNIST's images are 28 × 28; \
                 use read_idx_images for other sizes)",
                shape[1], shape[2]
            ),
        ));
    }
    let (_, labels) = read(&labels_path, Some((1, "a label file: count")))?;
    let n = shape[0];
    if labels.len() != n {
        return Err(Error::file(
            &labels_path,
            format!(
                "byte 4: expected {n} labels, one per image in {}, found {}",
                images_path.display(),
                labels.len()
            ),
        ));
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(Error::file(
            &labels_path,
            format!(
                "byte {}: expected a digit 0..9, found label {}",
                8 + i,
                labels[i]
            ),
        ));
    }
    // One conversion per byte value instead of one division per pixel.
    let table: Vec<F> = (0..=255u8)
        .map(|p| F::from_f64(f64::from(p) / 255.0))
        .collect();
    let pixels: Vec<F> = pixels.iter().map(|&p| table[usize::from(p)]).collect();
    let features = Array4::from_shape_vec((n, 1, 28, 28), pixels)
        .map_err(|e| Error::file(&images_path, format!("internal error: {e}")))?;
    let labels = labels.into_iter().map(usize::from).collect();
    TensorDataset::with_labels(features, labels, 10)
}

/// Reads MNIST (or Fashion-MNIST, which uses the same file names) from `dir`: the training set
/// from `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`, the test set from
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each plain or `.gz` (also accepted:
/// `train-images.idx3-ubyte` and the like). Images are scaled to `[0, 1]` with shape
/// `[n, 1, 28, 28]`; labels are 10 classes.
///
/// Returns `(train, test)`.
///
/// ```no_run
/// use kiln_runtime::data::{mnist, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let (train, test) = mnist::<f32>("data/mnist")?;
/// assert_eq!((train.len(), test.len()), (60_000, 10_000));
/// assert_eq!(train.sample_shape(), [1, 28, 28]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::File`] naming the file: a missing file (with the names tried), and everything
/// [`read_idx`] rejects, images that are not 28 × 28, an image and label count that disagree,
/// a label above 9; [`Error::Io`] if a file cannot be read.
pub fn mnist<F: Float>(dir: impl AsRef<Path>) -> Result<(TensorDataset<F>, TensorDataset<F>)> {
    let dir = dir.as_ref();
    Ok((
        split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bytes(bytes: &[u8], dims: Option<(usize, &str)>) -> Result<(Vec<usize>, Vec<u8>)> {
        parse(bytes, Path::new("t.idx"), dims)
    }

    #[test]
    fn parses_header_and_data() {
        let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
        let (shape, data) = parse_bytes(&bytes, None).unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(data, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_zero_dimensions_and_oversized_headers() {
        let message = parse_bytes(&[0, 0, 8, 0], None).unwrap_err().to_string();
        assert!(
            message.contains("byte 3: expected at least 1 dimension"),
            "{message}"
        );
        // 2^32-1 cubed overflows usize: reported, not allocated.
        let mut bytes = vec![0, 0, 8, 3];
        bytes.extend([0xFF; 12]);
        let message = parse_bytes(&bytes, None).unwrap_err().to_string();
        assert!(message.contains("byte 4:"), "{message}");
    }
}
