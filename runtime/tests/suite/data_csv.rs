//! CSV reading: round trips through files (plain and gzip), the options, and every kind of
//! malformed input reported with the file name, the line, the column and the text.

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_runtime::data::{self, read_csv, read_csv_str, CsvOptions, Dataset, TensorDataset};
use kiln_runtime::Error;
use ndarray::{array, Array1, Array2};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test under cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-runtime-data-csv")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A small data set with awkward floats (negative, tiny, large, many digits).
fn sample() -> TensorDataset<f64> {
    let x = Array2::from_shape_fn((7, 3), |(i, j)| {
        (i as f64 - 3.0) * [1.0, 1e-7, 12345.678901234][j] + j as f64 / 3.0
    });
    TensorDataset::with_labels(x, Array1::from_vec(vec![0, 1, 2, 3, 0, 1, 4]), 5).unwrap()
}

/// `data` as CSV text, with the label in column `label_column` (features in order around it).
fn to_csv(data: &TensorDataset<f64>, label_column: usize, delimiter: &str, header: bool) -> String {
    let mut text = String::new();
    if header {
        text.push_str("a,b,c,label\n");
    }
    let labels = data.labels().unwrap();
    for (row, features) in data.features().outer_iter().enumerate() {
        // `{}` prints the shortest text that parses back to the same f64.
        let mut cells: Vec<String> = features.iter().map(|v| v.to_string()).collect();
        cells.insert(label_column, labels[row].to_string());
        text.push_str(&cells.join(delimiter));
        text.push('\n');
    }
    text
}

/// The error message for `text` read with `options` from a file named `name` in `dir`.
fn error_for(dir: &Path, name: &str, text: &[u8], options: &CsvOptions) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    let error = read_csv::<f32>(&path, options).expect_err("malformed input is an error");
    assert!(
        matches!(&error, Error::File { path: p, .. } if p == &path),
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
fn round_trips_through_a_file() {
    let dir = scratch("round_trip");
    let data = sample();
    let path = dir.join("sample.csv");
    fs::write(&path, to_csv(&data, 3, ",", false)).unwrap();
    let read: TensorDataset<f64> = read_csv(&path, &CsvOptions::default()).unwrap();
    assert_eq!(read, data, "exact f64 round trip");
    assert_eq!(read.classes(), Some(5));
    assert_eq!(read.sample_shape(), [3]);

    // f32 rounds each value once, to nearest.
    let read32: TensorDataset<f32> = read_csv(&path, &CsvOptions::default()).unwrap();
    assert_eq!(read32.features(), &data.features().mapv(|v| v as f32));
}

#[test]
fn options_header_label_column_delimiter_and_classes() {
    let dir = scratch("options");
    let data = sample();
    let path = dir.join("first.tsv");
    fs::write(&path, to_csv(&data, 0, "\t", true)).unwrap();
    let options = CsvOptions {
        header: true,
        label_column: Some(0),
        classes: Some(8),
        delimiter: '\t',
    };
    let read: TensorDataset<f64> = read_csv(&path, &options).unwrap();
    assert_eq!(read.features(), data.features());
    assert_eq!(read.labels(), data.labels());
    assert_eq!(
        read.classes(),
        Some(8),
        "the given class count, not max + 1"
    );

    // A label in the middle; `;` as delimiter.
    let read: TensorDataset<f64> = read_csv_str(
        &to_csv(&data, 1, ";", false),
        &CsvOptions {
            label_column: Some(1),
            delimiter: ';',
            ..CsvOptions::default()
        },
    )
    .unwrap();
    assert_eq!(read, data);

    // `from_reader` names the source it is given.
    let error =
        data::csv::from_reader::<f32>("1,x,0\n".as_bytes(), "inline.csv", &CsvOptions::default())
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "inline.csv: line 1, column 1: `x` is not a number"
    );
}

#[test]
fn gzip_is_read_transparently() {
    let dir = scratch("gzip");
    let data = sample();
    let text = to_csv(&data, 3, ",", false);
    let path = dir.join("sample.csv.gz");
    fs::write(&path, gzip(text.as_bytes())).unwrap();
    assert_eq!(
        read_csv::<f64>(&path, &CsvOptions::default()).unwrap(),
        data
    );

    // Recognised by content too, whatever the name.
    let path = dir.join("compressed-but-named.csv");
    fs::write(&path, gzip(text.as_bytes())).unwrap();
    assert_eq!(
        read_csv::<f64>(&path, &CsvOptions::default()).unwrap(),
        data
    );

    // A `.gz` name on text that is already decompressed (as browsers leave downloads).
    let path = dir.join("decompressed.csv.gz");
    fs::write(&path, &text).unwrap();
    assert_eq!(
        read_csv::<f64>(&path, &CsvOptions::default()).unwrap(),
        data
    );

    // Concatenated gzip members (as `cat a.gz b.gz` makes) are one stream.
    let (head, tail) = text.split_at(text.find('\n').unwrap() + 1);
    let path = dir.join("members.csv.gz");
    fs::write(
        &path,
        [gzip(head.as_bytes()), gzip(tail.as_bytes())].concat(),
    )
    .unwrap();
    assert_eq!(
        read_csv::<f64>(&path, &CsvOptions::default()).unwrap(),
        data
    );

    // Errors count lines in the decompressed text.
    let path = dir.join("bad.csv.gz");
    fs::write(&path, gzip(b"1,2,0\n3,4,0\n5,six,1\n")).unwrap();
    let message = read_csv::<f32>(&path, &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("bad.csv.gz: line 3, column 1: `six` is not a number"),
        "{message}"
    );
}

#[test]
fn damaged_gzip_is_a_file_error() {
    let dir = scratch("damaged_gzip");
    let options = CsvOptions::default();

    let compressed = gzip(to_csv(&sample(), 3, ",", false).as_bytes());
    let message = error_for(
        &dir,
        "truncated.csv.gz",
        &compressed[..compressed.len() / 2],
        &options,
    );
    assert!(
        message.contains(": line ") && message.contains("cannot read"),
        "{message}"
    );

    // A wrong checksum in the trailer: every line parses, the stream's end does not.
    let mut checksum = compressed.clone();
    let crc = checksum.len() - 8;
    checksum[crc] ^= 0xFF;
    let message = error_for(&dir, "checksum.csv.gz", &checksum, &options);
    assert!(
        message.contains("line 8: cannot read: corrupt gzip stream"),
        "{message}"
    );

    // Damage in the middle: whatever fails first (the inflater, or a line of garbage), it is
    // an `Error::File` naming the file (checked by `error_for`).
    let mut corrupt = compressed.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 8].fill(0xFF);
    error_for(&dir, "corrupt.csv.gz", &corrupt, &options);
}

#[test]
fn malformed_cells_are_reported_with_line_column_and_text() {
    let dir = scratch("cells");
    let options = CsvOptions::default();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "ragged.csv",
            b"1,2,0\n3,4,1\n5,1\n",
            "line 3: 2 columns, but line 1 has 3",
        ),
        (
            "long.csv",
            b"1,2,0\n\n3,4,5,1\n",
            "line 3: 4 columns, but line 1 has 3",
        ),
        (
            "word.csv",
            b"1,2,0\n3,abc,1\n",
            "line 2, column 1: `abc` is not a number",
        ),
        (
            "empty_cell.csv",
            b"1,2,0\n,4,1\n",
            "line 2, column 0: empty cell",
        ),
        (
            "blank_label.csv",
            b"1,2,0\n3,4, \n",
            "line 2, column 2: empty cell",
        ),
        (
            "nan.csv",
            b"1,NaN,0\n",
            "line 1, column 1: `NaN` is not a finite number",
        ),
        (
            "inf.csv",
            b"1,2,0\n-inf,2,0\n",
            "line 2, column 0: `-inf` is not a finite number",
        ),
        (
            "negative.csv",
            b"1,2,0\n1,2,-1\n",
            "line 2, column 2: label `-1` is negative",
        ),
        (
            "fraction.csv",
            b"1,2,2.5\n",
            "line 1, column 2: label `2.5` is not an integer",
        ),
        (
            "named.csv",
            b"1,2,setosa\n",
            "line 1, column 2: label `setosa` is not a number",
        ),
        (
            "one_column.csv",
            b"1\n2\n",
            "line 1: 1 column; a row needs at least one feature",
        ),
        ("empty.csv", b"", "line 1: no data rows (the file is empty)"),
        (
            "blank.csv",
            b"\n  \n\r\n",
            "line 3: no data rows (the file is empty)",
        ),
        ("utf8.csv", b"1,2,0\n1,\xFF,0\n", "line 2: cannot read"),
    ];
    for (name, text, expected) in cases {
        let message = error_for(&dir, name, text, &options);
        assert!(
            message.contains(&format!("{name}: {expected}")),
            "{name}: {message}"
        );
    }
}

#[test]
fn option_violations_are_reported_with_positions() {
    let dir = scratch("options_errors");
    let header = CsvOptions {
        header: true,
        ..CsvOptions::default()
    };
    let message = error_for(&dir, "header_only.csv", b"a,b,label\n", &header);
    assert!(
        message.ends_with("header_only.csv: line 1: no data rows after the header line"),
        "{message}"
    );
    // Line numbers count the header line.
    let message = error_for(
        &dir,
        "after_header.csv",
        b"a,b,label\n1,2,0\n1,x,0\n",
        &header,
    );
    assert!(message.contains("line 3, column 1: `x`"), "{message}");

    let classes = CsvOptions {
        classes: Some(3),
        ..CsvOptions::default()
    };
    let message = error_for(&dir, "classes.csv", b"1,2,0\n1,2,2\n1,2,3\n", &classes);
    assert!(
        message.contains("classes.csv: line 3, column 2: label 3 is out of range for 3 classes"),
        "{message}"
    );

    let column = CsvOptions {
        label_column: Some(3),
        ..CsvOptions::default()
    };
    let message = error_for(&dir, "column.csv", b"1,2,0\n", &column);
    assert!(
        message.contains("line 1: label_column 3 is out of range for 3 columns"),
        "{message}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = scratch("missing");
    let path = dir.join("nowhere.csv");
    let error = read_csv::<f32>(&path, &CsvOptions::default()).unwrap_err();
    let not_found = |source: &std::io::Error| source.kind() == std::io::ErrorKind::NotFound;
    assert!(
        matches!(&error, Error::Io { path: p, source } if p == &path && not_found(source)),
        "{error:?}"
    );
    assert!(error.to_string().contains("nowhere.csv"), "{error}");
}

#[test]
fn labels_in_float_notation_and_padding_are_accepted() {
    let data: TensorDataset<f32> =
        read_csv_str(" 0.5 , 1e-3 , 1.0 \n-2,+3,0.0\n", &CsvOptions::default()).unwrap();
    assert_eq!(
        data.features(),
        &array![[0.5f32, 1e-3], [-2.0, 3.0]].into_dyn()
    );
    assert_eq!(data.labels(), Some(&array![1, 0]));
    assert_eq!(data.classes(), Some(2));
}
