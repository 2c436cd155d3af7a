//! IDX (MNIST) reading: round trips of small files written here, plain and gzip; every kind
//! of malformed file reported with the file name, the byte offset and what was expected; and
//! `mnist` on a miniature MNIST directory, including its missing-file and mismatch errors.

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_runtime::data::{mnist, read_idx, read_idx_images, read_idx_labels, Dataset};
use kiln_runtime::Error;
use ndarray::{Array1, Array3};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test under cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-runtime-data-idx")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// An unsigned-byte IDX file: magic, big-endian dimensions, data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Checks that `error` is an `Error::File` for `path` and returns its message.
fn file_message(error: Error, path: &Path) -> String {
    assert!(
        matches!(&error, Error::File { path: p, .. } if p == path),
        "an Error::File naming {}: {error:?}",
        path.display()
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    message
}

#[test]
fn images_labels_and_general_files_round_trip_plain_and_gzip() {
    let dir = scratch("round_trip");
    let images = Array3::from_shape_fn((3, 2, 4), |(n, r, c)| (n * 100 + r * 10 + c) as u8);
    let labels = Array1::from_vec(vec![7u8, 0, 255]);
    let image_bytes = idx(&[3, 2, 4], images.as_slice().unwrap());
    let label_bytes = idx(&[3], labels.as_slice().unwrap());
    for (suffix, encode) in [("", false), (".gz", true)] {
        let encode = |b: &[u8]| if encode { gzip(b) } else { b.to_vec() };
        let images_path = write(&dir, &format!("images{suffix}"), &encode(&image_bytes));
        let labels_path = write(&dir, &format!("labels{suffix}"), &encode(&label_bytes));
        assert_eq!(read_idx_images(&images_path).unwrap(), images);
        assert_eq!(read_idx_labels(&labels_path).unwrap(), labels);
        assert_eq!(read_idx(&images_path).unwrap(), images.clone().into_dyn());
    }
    // Any number of dimensions for `read_idx`, including empty ones.
    let path = write(&dir, "four.idx", &idx(&[1, 2, 1, 2], &[1, 2, 3, 4]));
    assert_eq!(read_idx(&path).unwrap().shape(), [1, 2, 1, 2]);
    let path = write(&dir, "none.idx", &idx(&[0, 28, 28], &[]));
    assert_eq!(read_idx_images(&path).unwrap().shape(), [0, 28, 28]);
}

#[test]
fn malformed_files_are_reported_with_byte_offsets() {
    let dir = scratch("malformed");
    let mut float_type = idx(&[2], &[0; 8]);
    float_type[2] = 0x0D;
    let cases: Vec<(&str, Vec<u8>, &str)> =
        vec![
        ("empty", vec![], "byte 0: the file ends inside the 4-byte IDX magic number"),
        ("short_magic", vec![0, 0, 8], "byte 3: the file ends inside the 4-byte IDX magic"),
        (
            "text",
            b"hello, world".to_vec(),
            "byte 0: expected an IDX magic number (00 00, a type code, a dimension count), \
             found 0x68656C6C: not an IDX file",
        ),
        (
            "float",
            float_type,
            "byte 2: expected type code 0x08 (unsigned byte), found 0x0D (f32)",
        ),
        (
            "labels_as_images",
            idx(&[2], &[1, 2]),
            "byte 3: expected 3 dimensions (an image file: count, rows, columns), found 1",
        ),
        (
            "short_dims",
            idx(&[2, 2, 2], &[])[..10].to_vec(),
            "byte 10: the file ends inside the dimension sizes (expected 3 × 4 bytes after the \
             magic number, found 6)",
        ),
        (
            "truncated",
            idx(&[2, 2, 3], &[9; 10]),
            "byte 26: expected 12 data bytes for dimensions [2, 2, 3] after the 16-byte header, \
             found only 10: the file is truncated",
        ),
        (
            "trailing",
            idx(&[1, 2, 2], &[9; 5]),
            "byte 20: expected the end of the file after the 4 data bytes for dimensions \
             [1, 2, 2], found more data",
        ),
    ];
    for (name, bytes, expected) in cases {
        for (file, bytes) in [
            (name.to_string(), bytes.clone()),
            (format!("{name}.gz"), gzip(&bytes)),
        ] {
            let path = write(&dir, &file, &bytes);
            let message = file_message(read_idx_images(&path).unwrap_err(), &path);
            assert!(
                message.contains(expected),
                "{file}:\n{message}\nwanted: {expected}"
            );
        }
    }

    let path = write(&dir, "images_as_labels", &idx(&[1, 1, 1], &[0]));
    let message = file_message(read_idx_labels(&path).unwrap_err(), &path);
    assert!(
        message.contains("byte 3: expected 1 dimension (a label file: count), found 3"),
        "{message}"
    );

    // A truncated gzip stream fails in the decompressor, at the decompressed offset reached.
    let compressed = gzip(&idx(&[100], &[7; 100]));
    let path = write(&dir, "cut.gz", &compressed[..compressed.len() - 12]);
    let message = file_message(read_idx_labels(&path).unwrap_err(), &path);
    assert!(
        message.contains(": byte ") && message.contains("cannot read"),
        "{message}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = scratch("missing");
    let path = dir.join("train-images-idx3-ubyte");
    let error = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path: p, .. } if p == &path),
        "{error:?}"
    );
}

/// A miniature MNIST: `n` images of 28×28 whose pixels are `(image + row + column) % 256`
/// and labels `image % 10`.
fn fake_split(n: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n as usize * 784)
        .map(|i| ((i / 784) + (i % 784) / 28 + i % 28) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (idx(&[n, 28, 28], &pixels), idx(&[n], &labels))
}

#[test]
fn mnist_reads_plain_gzip_and_dotted_names() {
    let dir = scratch("mnist");
    let (train_images, train_labels) = fake_split(12);
    let (test_images, test_labels) = fake_split(3);
    write(&dir, "train-images-idx3-ubyte.gz", &gzip(&train_images));
    write(&dir, "train-labels-idx1-ubyte", &train_labels);
    write(&dir, "t10k-images.idx3-ubyte", &test_images);
    write(&dir, "t10k-labels.idx1-ubyte.gz", &gzip(&test_labels));

    let (train, test) = mnist::<f32>(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (12, 3));
    for data in [&train, &test] {
        assert_eq!(data.sample_shape(), [1, 28, 28]);
        assert_eq!(data.classes(), Some(10));
    }
    let features = train.features();
    assert_eq!(features[[0, 0, 0, 0]], 0.0);
    assert_eq!(features[[11, 0, 27, 27]], (11 + 27 + 27) as f32 / 255.0);
    assert!(features.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert_eq!(
        train.labels().unwrap().to_vec(),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    );
    assert_eq!(test.labels().unwrap().to_vec(), [0, 1, 2]);
    let (train64, _) = mnist::<f64>(&dir).unwrap();
    assert_eq!(train64.features()[[5, 0, 1, 2]], 8.0 / 255.0);
}

#[test]
fn mnist_errors_name_the_file_and_what_is_wrong() {
    let dir = scratch("mnist_errors");
    let (images, labels) = fake_split(4);

    // Missing: names the file and every name tried.
    let error = mnist::<f32>(&dir).unwrap_err();
    let message = file_message(error, &dir.join("train-images-idx3-ubyte"));
    assert!(
        message.contains(&format!(
            "MNIST file not found in {}; tried train-images-idx3-ubyte, \
             train-images-idx3-ubyte.gz, train-images.idx3-ubyte, train-images.idx3-ubyte.gz",
            dir.display()
        )),
        "{message}"
    );
    let error = mnist::<f32>(dir.join("absent")).unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");

    // The training set present, the test labels missing.
    write(&dir, "train-images-idx3-ubyte", &images);
    write(&dir, "train-labels-idx1-ubyte", &labels);
    write(&dir, "t10k-images-idx3-ubyte", &images);
    let error = mnist::<f32>(&dir).unwrap_err();
    let message = file_message(error, &dir.join("t10k-labels-idx1-ubyte"));
    assert!(message.contains("t10k-labels-idx1-ubyte.gz"), "{message}");

    // Image and label counts disagree.
    let labels_path = write(&dir, "t10k-labels-idx1-ubyte", &fake_split(5).1);
    let message = file_message(mnist::<f32>(&dir).unwrap_err(), &labels_path);
    assert!(
        message.contains("byte 4: expected 4 labels, one per image in")
            && message.contains("found 5"),
        "{message}"
    );

    // A label that is not a digit, at its byte offset.
    let mut bad = labels.clone();
    bad[8 + 2] = 10;
    let labels_path = write(&dir, "t10k-labels-idx1-ubyte", &bad);
    let message = file_message(mnist::<f32>(&dir).unwrap_err(), &labels_path);
    assert!(
        message.contains("byte 10: expected a digit 0..9, found label 10"),
        "{message}"
    );

    // Images of another size.
    let images_path = write(
        &dir,
        "t10k-images-idx3-ubyte",
        &idx(&[4, 27, 28], &vec![0; 4 * 27 * 28]),
    );
    write(&dir, "t10k-labels-idx1-ubyte", &labels);
    let message = file_message(mnist::<f32>(&dir).unwrap_err(), &images_path);
    assert!(
        message.contains("byte 8: expected 28 × 28 images, found 27 × 28"),
        "{message}"
    );

    // A label file where an image file belongs.
    let images_path = write(&dir, "t10k-images-idx3-ubyte", &labels);
    let message = file_message(mnist::<f32>(&dir).unwrap_err(), &images_path);
    assert!(
        message.contains("byte 3: expected 3 dimensions"),
        "{message}"
    );
}
