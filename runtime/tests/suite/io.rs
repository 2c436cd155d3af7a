//! Checkpoint save/load: round trips, dtype conversion, mismatch reports, malformed files,
//! atomic writes, and the model left untouched by a failed load.

use crate::common;

use common::Tiny;
use kiln_runtime::io::{self, TensorFile};
use kiln_runtime::Error;
use kiln_runtime::Model;
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test under cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-runtime-io")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn f64_tensor(shape: &[usize], values: &[f64]) -> Raw {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    Raw {
        dtype: Dtype::F64,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes a safetensors file with safetensors' own writer (independent of `io::save`).
fn write(path: &Path, tensors: &[(&str, Raw)]) {
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None).unwrap();
    fs::write(path, bytes).unwrap();
}

fn file_message(err: Error) -> (PathBuf, String) {
    match err {
        Error::File { path, message } => (path, message),
        other => panic!("expected Error::File, got {other:?}"),
    }
}

#[test]
fn save_then_load_round_trips_params_and_buffers() {
    let dir = scratch("round_trip");
    let path = dir.join("tiny.safetensors");
    let model = Tiny::<f64>::sample();
    io::save(&model, &path).unwrap();

    let mut loaded = Tiny::<f64>::zeros();
    io::load(&mut loaded, &path).unwrap();
    assert_eq!(loaded, model);

    // The file is what PyTorch expects: state_dict names, F64, PyTorch shapes.
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(file.names(), ["fc.bias", "fc.weight", "norm.running_mean"]);
    assert_eq!(file.shape("fc.weight").unwrap(), &[2, 3]);
    assert_eq!(file.dtype("fc.weight").unwrap(), io::Dtype::F64);
    assert_eq!(
        file.get::<f64>("fc.weight")
            .unwrap()
            .into_dimensionality()
            .unwrap(),
        model.weight
    );
    // No temporary file is left beside it.
    let entries: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["tiny.safetensors"]);
}

#[test]
fn f32_models_save_f32_and_load_either_dtype() {
    let dir = scratch("dtypes");
    let (p32, p64) = (dir.join("m32.safetensors"), dir.join("m64.safetensors"));
    let model32 = Tiny::<f32>::sample();
    io::save(&model32, &p32).unwrap();
    assert_eq!(
        TensorFile::open(&p32).unwrap().dtype("fc.bias").unwrap(),
        io::Dtype::F32
    );
    let mut back = Tiny::<f32>::zeros();
    io::load(&mut back, &p32).unwrap();
    assert_eq!(back, model32);

    // An f64 checkpoint loads into an f32 model rounded to nearest, and an f32 one into an
    // f64 model exactly.
    io::save(&Tiny::<f64>::sample(), &p64).unwrap();
    let mut rounded = Tiny::<f32>::zeros();
    io::load(&mut rounded, &p64).unwrap();
    assert_eq!(rounded, model32);
    let mut widened = Tiny::<f64>::zeros();
    io::load(&mut widened, &p32).unwrap();
    assert_eq!(widened.weight, model32.weight.mapv(f64::from));
}

#[test]
fn save_overwrites_an_existing_checkpoint() {
    let dir = scratch("overwrite");
    let path = dir.join("ckpt.safetensors");
    io::save(&Tiny::<f64>::zeros(), &path).unwrap();
    io::save(&Tiny::<f64>::sample(), &path).unwrap();
    let mut loaded = Tiny::<f64>::zeros();
    io::load(&mut loaded, &path).unwrap();
    assert_eq!(loaded, Tiny::<f64>::sample());
}

#[test]
fn save_into_a_missing_directory_is_an_io_error() {
    let dir = scratch("missing_dir");
    let path = dir.join("no/such/dir/ckpt.safetensors");
    match io::save(&Tiny::<f64>::sample(), &path) {
        Err(Error::Io { path: p, .. }) => assert!(p.ends_with("ckpt.safetensors.tmp"), "{p:?}"),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(!dir.join("no").exists());
}

#[test]
fn mismatches_are_reported_together_and_leave_the_model_unchanged() {
    let dir = scratch("mismatch");
    let path = dir.join("bad.safetensors");
    write(
        &path,
        &[
            // Wrong shape: [3, 2] instead of [2, 3].
            ("fc.weight", f64_tensor(&[3, 2], &[1.0; 6])),
            // fc.bias is missing.
            ("norm.running_mean", f64_tensor(&[2], &[9.0, 9.0])),
            ("head.weight", f64_tensor(&[1, 2], &[1.0, 2.0])),
        ],
    );
    let mut model = Tiny::<f64>::sample();
    let err = io::load(&mut model, &path).unwrap_err();
    let text = err.to_string();
    let Error::Mismatch { path: p, message } = err else {
        panic!("expected Error::Mismatch, got {text}")
    };
    assert_eq!(p, path);
    assert!(text.starts_with(&path.display().to_string()), "{text}");
    assert!(message.starts_with("3 problems: "), "{message}");
    assert!(
        message.contains("missing `fc.bias` (model shape [2])"),
        "{message}"
    );
    assert!(
        message.contains("`fc.weight` has shape [3, 2] in the file but [2, 3] in the model"),
        "{message}"
    );
    assert!(
        message.contains("unexpected `head.weight` (file shape [1, 2])"),
        "{message}"
    );
    // The valid running_mean was not applied either.
    assert_eq!(model, Tiny::<f64>::sample());
}

#[test]
fn a_single_missing_parameter_is_named() {
    let dir = scratch("missing_one");
    let path = dir.join("partial.safetensors");
    let model = Tiny::<f64>::sample();
    write(&path, &[("fc.weight", f64_tensor(&[2, 3], &[0.5; 6]))]);
    let mut target = model.clone();
    let message = match io::load(&mut target, &path) {
        Err(Error::Mismatch { message, .. }) => message,
        other => panic!("expected Error::Mismatch, got {other:?}"),
    };
    assert_eq!(message, "1 problem: missing `fc.bias` (model shape [2])");
    assert_eq!(target, model);
}

#[test]
fn a_parameters_only_file_loads_and_keeps_the_buffers() {
    let dir = scratch("params_only");
    let path = dir.join("params.safetensors");
    let model = Tiny::<f64>::sample();
    write(
        &path,
        &[
            ("fc.weight", f64_tensor(&[2, 3], &[0.5; 6])),
            ("fc.bias", f64_tensor(&[2], &[0.25; 2])),
        ],
    );
    let mut target = model.clone();
    io::load(&mut target, &path).expect("a file without buffers loads");
    let mut params = Vec::new();
    target.visit_params(&mut |name, view| {
        params.push((name, view.iter().copied().collect::<Vec<_>>()))
    });
    assert_eq!(params[0], ("fc.weight", vec![0.5; 6]));
    assert_eq!(params[1], ("fc.bias", vec![0.25; 2]));
    let (mut kept, mut original) = (Vec::new(), Vec::new());
    target.visit_buffers(&mut |_, view| kept.extend(view.iter().copied()));
    model.visit_buffers(&mut |_, view| original.extend(view.iter().copied()));
    assert_eq!(kept, original, "buffers keep their values");
}

#[test]
fn integer_tensors_are_not_parameters() {
    let dir = scratch("int_param");
    let path = dir.join("ints.safetensors");
    let ints = Raw {
        dtype: Dtype::I64,
        shape: vec![2],
        data: [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    write(
        &path,
        &[
            ("fc.weight", f64_tensor(&[2, 3], &[0.5; 6])),
            ("fc.bias", ints),
            ("norm.running_mean", f64_tensor(&[2], &[0.5; 2])),
        ],
    );
    let mut model = Tiny::<f64>::sample();
    let text = io::load(&mut model, &path).unwrap_err().to_string();
    assert!(
        text.contains("`fc.bias` has dtype I64 in the file, expected F32 or F64"),
        "{text}"
    );
    assert_eq!(model, Tiny::<f64>::sample());
}

#[test]
fn truncated_files_name_the_path_and_the_cut_tensor() {
    let dir = scratch("truncated");
    let good = dir.join("good.safetensors");
    io::save(&Tiny::<f64>::sample(), &good).unwrap();
    let bytes = fs::read(&good).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;

    // Cut inside the last tensor's data.
    let cut = dir.join("cut.safetensors");
    fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let mut model = Tiny::<f64>::sample();
    let (path, message) = file_message(io::load(&mut model, &cut).unwrap_err());
    assert_eq!(path, cut);
    assert!(message.starts_with("truncated: tensor `"), "{message}");
    assert!(
        message.contains(&format!("the file ends at byte {}", bytes.len() - 5)),
        "{message}"
    );
    assert_eq!(model, Tiny::<f64>::sample());

    // Cut inside the header.
    let cut = dir.join("cut_header.safetensors");
    fs::write(&cut, &bytes[..8 + header_len / 2]).unwrap();
    let (_, message) = file_message(TensorFile::open(&cut).unwrap_err());
    assert!(
        message.contains(&format!("says {header_len} bytes")),
        "{message}"
    );

    // Cut inside the length prefix.
    fs::write(&cut, &bytes[..5]).unwrap();
    let (_, message) = file_message(TensorFile::open(&cut).unwrap_err());
    assert!(message.contains("5 bytes long"), "{message}");

    // Extra bytes after the data are as wrong as missing ones.
    let long = dir.join("long.safetensors");
    let mut extended = bytes.clone();
    extended.extend_from_slice(&[0; 3]);
    fs::write(&long, &extended).unwrap();
    let (_, message) = file_message(TensorFile::open(&long).unwrap_err());
    assert!(
        message.contains(&format!(
            "3 unexpected bytes after the last tensor, from byte {}",
            bytes.len()
        )),
        "{message}"
    );
}

#[test]
fn garbage_files_are_file_errors_naming_the_path() {
    let dir = scratch("garbage");
    let path = dir.join("garbage.safetensors");
    // Deterministic noise: its first 8 bytes make an absurd header length.
    let noise: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(&path, &noise).unwrap();
    let mut model = Tiny::<f64>::sample();
    let err = io::load(&mut model, &path).unwrap_err();
    let text = err.to_string();
    let (p, _) = file_message(err);
    assert_eq!(p, path);
    assert!(text.starts_with(&path.display().to_string()), "{text}");
    assert_eq!(model, Tiny::<f64>::sample());

    // A plausible length but a header that is not JSON: the offending byte (the `o` of
    // `nope`, header index 7, file byte 8 + 7) is reported.
    let mut bad_json = 12u64.to_le_bytes().to_vec();
    bad_json.extend_from_slice(b"{\"a\": nope }");
    fs::write(&path, &bad_json).unwrap();
    let (_, message) = file_message(TensorFile::open(&path).unwrap_err());
    assert!(
        message.starts_with("the header is not valid JSON at byte 15"),
        "{message}"
    );

    // Valid JSON whose entry does not describe its data.
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
    let mut wrong_size = (header.len() as u64).to_le_bytes().to_vec();
    wrong_size.extend_from_slice(header);
    wrong_size.extend_from_slice(&[0; 4]);
    fs::write(&path, &wrong_size).unwrap();
    let (_, message) = file_message(TensorFile::open(&path).unwrap_err());
    assert!(
        message.contains("tensor `w`") && message.contains("need 8"),
        "{message}"
    );

    // A header that is not UTF-8.
    let mut not_utf8 = 4u64.to_le_bytes().to_vec();
    not_utf8.extend_from_slice(&[b'{', 0xff, b'}', b' ']);
    fs::write(&path, &not_utf8).unwrap();
    let (_, message) = file_message(TensorFile::open(&path).unwrap_err());
    assert!(
        message.contains("not UTF-8: invalid byte at offset 9"),
        "{message}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = scratch("missing_file");
    let path = dir.join("absent.safetensors");
    let err = io::load(&mut Tiny::<f64>::sample(), &path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if *p == path),
        "{err:?}"
    );
}

#[test]
fn tensor_file_reads_labels_and_rejects_negative_ones() {
    let dir = scratch("labels");
    let path = dir.join("labels.safetensors");
    let ints = |dtype, bytes: Vec<u8>, n| Raw {
        dtype,
        shape: vec![n],
        data: bytes,
    };
    write(
        &path,
        &[
            (
                "i64",
                ints(
                    Dtype::I64,
                    [3i64, 0, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
                    3,
                ),
            ),
            (
                "i32",
                ints(
                    Dtype::I32,
                    [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                    2,
                ),
            ),
            ("u8", ints(Dtype::U8, vec![4, 5, 6, 255], 4)),
            (
                "neg",
                ints(
                    Dtype::I64,
                    [2i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect(),
                    2,
                ),
            ),
        ],
    );
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(file.labels("i64").unwrap(), [3, 0, 7]);
    assert_eq!(file.labels("i32").unwrap(), [1, 2]);
    assert_eq!(file.labels("u8").unwrap(), [4, 5, 6, 255]);
    let text = file.labels("neg").unwrap_err().to_string();
    assert!(
        text.contains("labels.safetensors")
            && text.contains("tensor `neg`: label -1 at position 1"),
        "{text}"
    );
    let text = file.get::<f32>("nope").unwrap_err().to_string();
    assert!(
        text.contains("no tensor named `nope` (the file has: i32, i64, neg, u8)"),
        "{text}"
    );
    assert!(file.shape("nope").is_err());
    assert!(file.contains("u8") && !file.contains("nope"));
}

/// `load_with`: a checkpoint whose module names differ (an `nn.Sequential`'s) loads through a
/// renaming; tensors the model does not read, or parameters the file lacks, are accepted only
/// when asked, and reported as PyTorch's `load_state_dict(strict=False)` reports them.
#[test]
fn load_with_renames_and_reports_what_it_left_aside() {
    let dir = scratch("load_with");
    let path = dir.join("sequential.safetensors");
    write(
        &path,
        &[
            (
                "features.0.weight",
                f64_tensor(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ),
            ("features.0.bias", f64_tensor(&[2], &[0.5, -0.5])),
            ("features.1.running_mean", f64_tensor(&[2], &[7.0, 8.0])),
            ("classifier.weight", f64_tensor(&[1, 2], &[1.0, 2.0])),
        ],
    );
    let rename = |name: &str| {
        name.replace("fc.", "features.0.")
            .replace("norm.", "features.1.")
    };

    // Renamed but strict: the classifier is unexpected, and nothing is loaded.
    let mut model = Tiny::<f64>::zeros();
    let strict = io::LoadOptions {
        rename: Some(&rename),
        ..io::LoadOptions::default()
    };
    let err = io::load_with(&mut model, &path, &strict).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("1 problem: unexpected `classifier.weight` (file shape [1, 2])"),
        "{err}"
    );
    assert_eq!(model, Tiny::zeros());

    // Unexpected tensors allowed: everything the model has is loaded, the rest reported.
    let lenient = io::LoadOptions {
        rename: Some(&rename),
        allow_unexpected: true,
        ..io::LoadOptions::default()
    };
    let report = io::load_with(&mut model, &path, &lenient).expect("renamed");
    assert_eq!(report.unexpected, ["classifier.weight"]);
    assert!(report.missing.is_empty());
    assert_eq!(
        model,
        Tiny::from_values(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.5, -0.5], &[7.0, 8.0])
    );

    // Missing parameters: an error naming the name looked for, unless allowed.
    let mut model = Tiny::<f64>::zeros();
    let err = io::load(&mut model, &path).unwrap_err().to_string();
    assert!(
        err.contains("missing `fc.weight` (model shape [2, 3])"),
        "{err}"
    );
    let partial = |name: &str| name.replace("fc.bias", "features.0.bias");
    let err = io::load_with(
        &mut model,
        &path,
        &io::LoadOptions {
            rename: Some(&partial),
            allow_unexpected: true,
            ..io::LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing `fc.weight` (model shape [2, 3])"),
        "{err}"
    );
    let report = io::load_with(
        &mut model,
        &path,
        &io::LoadOptions {
            rename: Some(&partial),
            allow_unexpected: true,
            allow_missing: true,
        },
    )
    .expect("missing allowed");
    assert_eq!(report.missing, ["fc.weight"]);
    assert_eq!(model.weight, Tiny::<f64>::zeros().weight, "kept as it was");
    assert_eq!(model.bias.to_vec(), [0.5, -0.5]);
}
