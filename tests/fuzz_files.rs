//! Every file reader against mutated files: safetensors weights (`io::load`, `TensorFile`),
//! training checkpoints (`Checkpoint::load`), CSV, IDX (plain and gzip), vocabularies, TSV,
//! labelled-text CSV and Hugging Face `tokenizer.json` files (which, when they load, must also
//! encode and decode without panicking).
//!
//! From a valid file written here, each reader gets at least `MUTANTS` mutants: truncation
//! at every byte, bit flips, bytes overwritten, ranges deleted or duplicated, and edits that
//! know the format (huge declared lengths and shapes, overlapping offsets, wrong dtypes, NaN
//! payloads, bad cells). Every load must return (no panic); every error must name the file
//! and a position (a byte, a line, or the tensor or field at fault); a model whose load fails
//! must be bit-identical to before; and no single allocation during a load may exceed
//! `ALLOC_FACTOR` times the file's size (its decompressed size for gzip) plus `ALLOC_SLACK`:
//! a header claiming gigabytes must not be believed.
//!
//! `KILN_FUZZ_FULL=1 cargo test --test fuzz_files -- --nocapture` runs ten times as many
//! random mutants and prints the figures.

use kiln::data::{read_csv, read_idx, read_idx_images, CsvOptions, TensorDataset};
use kiln::io::TensorFile;
use kiln::ndarray::Array3;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::text::{read_tsv, HfTokenizer, LabelledText, TextCsvOptions, Tokenizer, Vocab};
use kiln::train::{Checkpoint, Trainer};
use kiln::{Adam, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Random mutants per reader in the default run (on top of every truncation and the
/// format-specific edits).
const MUTANTS: usize = 1000;
/// The largest single allocation a load may make, as a multiple of the file's size...
const ALLOC_FACTOR: usize = 8;
/// ...plus this (buffers, the gzip decoder's window and tables).
const ALLOC_SLACK: usize = 256 << 10;

// ---------------------------------------------------------------------------------------------
// The largest single allocation on this thread while tracking.
// ---------------------------------------------------------------------------------------------

struct PeakAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
        }
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping uses const-initialised
// thread-local `Cell`s, which do not allocate.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

/// Runs `f`, returning its result and the largest single allocation it made on this thread.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, PEAK.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// Mutations.
// ---------------------------------------------------------------------------------------------

/// SplitMix64, so every run tries the same files.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn random_mutants() -> usize {
    if std::env::var_os("KILN_FUZZ_FULL").is_some() {
        10 * MUTANTS
    } else {
        MUTANTS
    }
}

/// Generic byte-level mutants of `valid`: every truncation, then `count` random edits (one
/// to three bit flips, a byte set to 0x00 / 0xFF / 0x7F, a range deleted or duplicated, a
/// NaN's bytes written somewhere).
fn byte_mutants(valid: &[u8], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    let mut rng = Rng(seed);
    let n = valid.len();
    for _ in 0..count {
        let mut m = valid.to_vec();
        match rng.below(6) {
            0 | 1 => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(n);
                    m[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let i = rng.below(n);
                m[i] = [0x00, 0xFF, 0x7F, b'9', b'"', b'\n'][rng.below(6)];
            }
            3 => {
                let i = rng.below(n);
                let j = (i + 1 + rng.below(16)).min(n);
                m.drain(i..j);
            }
            4 => {
                let i = rng.below(n);
                let j = (i + 1 + rng.below(16)).min(n);
                let copy = m[i..j].to_vec();
                let at = rng.below(n);
                m.splice(at..at, copy);
            }
            _ => {
                let i = rng.below(n.saturating_sub(4));
                m[i..i + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
        out.push(m);
    }
    out
}

/// Text mutants: each `(from, to)` replacement applied at each of its occurrences.
fn text_mutants(valid: &str, edits: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (from, to) in edits {
        for (at, _) in valid.match_indices(from) {
            let mut m = valid.to_string();
            m.replace_range(at..at + from.len(), to);
            out.push(m.into_bytes());
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// Gzip mutants: the compressed valid file mutated, and the plain mutants compressed (so the
/// decompressor succeeds and the parser sees the damage).
fn gzip_mutants(valid: &[u8], plain: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut out = byte_mutants(&gzip(valid), count, seed);
    let step = (plain.len() / count.max(1)).max(1);
    out.extend(plain.iter().step_by(step).map(|m| gzip(m)));
    out
}

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

/// What one reader did with its mutants.
#[derive(Default)]
struct Report {
    files: usize,
    ok: usize,
    errors: usize,
    /// Errors whose position is a tensor or field named in backticks, not a byte or line.
    named_only: usize,
    failures: Vec<String>,
    /// The largest single allocation seen, and the size of the file it was made for.
    worst_alloc: (usize, usize),
}

impl Report {
    fn fail(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }

    fn check(self, reader: &str) {
        eprintln!(
            "{reader}: {} mutated files, {} loaded, {} errors ({} placed by a tensor or field \
             name rather than a byte or line), {} panics; largest allocation {} bytes (for a \
             file of {} bytes)",
            self.files,
            self.ok,
            self.errors,
            self.named_only,
            self.failures
                .iter()
                .filter(|f| f.contains("panicked"))
                .count(),
            self.worst_alloc.0,
            self.worst_alloc.1,
        );
        assert!(
            self.failures.is_empty(),
            "{reader}: {} problems:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert!(
            self.files >= MUTANTS,
            "{reader}: only {} mutated files",
            self.files
        );
        assert!(
            self.errors > self.files / 4,
            "{reader}: only {} of {} mutants were rejected; the mutations are too mild",
            self.errors,
            self.files
        );
    }
}

/// Whether an error message says where in the file the problem is.
fn has_position(message: &str) -> bool {
    message.contains("byte ")
        || message.contains("bytes ")
        || message.contains("line ")
        || message.contains("offset")
        // The tensor or JSON field at fault, by name.
        || message.contains('`')
}

/// Writes each mutant to `path` and loads it with `load`; `size_of_content` is the size the
/// allocation bound is taken from (the decompressed size for gzip files).
fn fuzz(
    report: &mut Report,
    path: &Path,
    mutants: &[Vec<u8>],
    content_size: usize,
    mut load: impl FnMut(&Path) -> Result<(), String>,
) {
    for (i, bytes) in mutants.iter().enumerate() {
        replace_file(path, bytes);
        report.files += 1;
        let (outcome, peak) = peak_during(|| panic::catch_unwind(AssertUnwindSafe(|| load(path))));
        let size = bytes.len().max(content_size);
        if peak > report.worst_alloc.0 {
            report.worst_alloc = (peak, bytes.len());
        }
        if peak > ALLOC_FACTOR * size + ALLOC_SLACK {
            report.fail(format!(
                "mutant {i}: an allocation of {peak} bytes for a file of {} bytes",
                bytes.len()
            ));
        }
        match outcome {
            Err(_) => report.fail(format!("mutant {i} panicked ({} bytes)", bytes.len())),
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(message)) => {
                report.errors += 1;
                if !(message.contains("byte") || message.contains("line ")) {
                    report.named_only += 1;
                }
                if !message.contains(&path.display().to_string()) || !has_position(&message) {
                    report.fail(format!(
                        "mutant {i}: the error does not name the file and a position: {message}"
                    ));
                }
            }
        }
    }
}

/// Writes `bytes` as a new file at `path`. Removing the old file first matters: ext4 flushes
/// a file truncated and rewritten in place to disk (`auto_da_alloc`), which made each mutant
/// cost milliseconds.
fn replace_file(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).expect("scratch file");
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz_files-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

// ---------------------------------------------------------------------------------------------
// Safetensors weights and checkpoints.
// ---------------------------------------------------------------------------------------------

kiln::model! {
    /// Parameters of three ranks and batch-norm buffers.
    pub struct Small {
        input x: [B, 1, 4, 4];
        target y: [B] classes 3;
        let conv = conv2d(x, 2, kernel = 3);
        let c = relu(batch_norm(conv));
        let logits = linear(flatten(c), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// Every parameter's and buffer's bits, in visiting order.
fn state_bits<M: Model<f32>>(model: &M) -> Vec<u32> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, v| all.extend(v.iter().map(|x| x.to_bits())));
    model.visit_buffers(&mut |_, v| all.extend(v.iter().map(|x| x.to_bits())));
    all
}

/// Format-aware safetensors edits: the header length, dtypes, shapes and offsets.
fn safetensors_mutants(valid: &[u8]) -> Vec<Vec<u8>> {
    let header_len = u64::from_le_bytes(valid[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&valid[8..8 + header_len]).expect("UTF-8 header");
    let data = &valid[8 + header_len..];
    let rebuild = |h: &str| {
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    };
    let mut out = Vec::new();
    // Huge and off-by-one header lengths.
    for claimed in [
        u64::MAX,
        1 << 40,
        100 << 30,
        header_len as u64 + 1,
        header_len as u64 - 1,
        0,
    ] {
        let mut m = valid.to_vec();
        m[..8].copy_from_slice(&claimed.to_le_bytes());
        out.push(m);
    }
    let edits: &[(&str, &str)] = &[
        ("F32", "I64"),
        ("F32", "BF16"),
        ("F32", "F16"),
        ("F32", "BOOL"),
        ("F32", "F8_E4M3"),
        ("F32", "F99"),
        ("F32", "F64"),
        ("[2,1,3,3]", "[2000000000,1000000000,3,3]"),
        ("[2,1,3,3]", "[18446744073709551615,2]"),
        ("[2,1,3,3]", "[0,1,3,3]"),
        ("[2,1,3,3]", "[-2,1,3,3]"),
        ("[2,1,3,3]", "[2.5,1,3,3]"),
        ("[3,8]", "[8,3]"),
        ("[3,8]", "[100000000000,100000000000]"),
        ("[2]", "[]"),
        ("[2]", "[2,1]"),
        ("\"data_offsets\":[0,", "\"data_offsets\":[4,"),
        (
            "\"data_offsets\":[0,",
            "\"data_offsets\":[18446744073709551615,",
        ),
        ("\"data_offsets\"", "\"offsets\""),
        ("\"shape\"", "\"shape_\""),
        ("\"dtype\"", "\"type\""),
        ("{", "["),
        ("}", "}}"),
        (":", ";"),
    ];
    out.extend(
        text_mutants(header, edits)
            .into_iter()
            .map(|h| rebuild(&String::from_utf8(h).expect("UTF-8"))),
    );
    // Every tensor's offsets shifted into its neighbour's (overlaps and gaps).
    for shift in [1usize, 4, 8, 36] {
        let shifted = header.replace("\"data_offsets\":[", &format!("\"data_offsets\":[{shift}"));
        out.push(rebuild(&shifted));
    }
    // NaN, infinity and subnormal payloads in every data word.
    for pattern in [f32::NAN, f32::INFINITY, f32::MIN_POSITIVE / 2.0] {
        let mut m = valid.to_vec();
        for word in m[8 + header_len..].chunks_exact_mut(4) {
            word.copy_from_slice(&pattern.to_le_bytes());
        }
        out.push(m);
    }
    out
}

#[test]
fn safetensors_weights_into_a_model() {
    let dir = scratch("safetensors");
    let source = Small::<f32>::new(&mut StdRng::seed_from_u64(1));
    let valid_path = dir.join("valid.safetensors");
    kiln::io::save(&source, &valid_path).expect("save");
    let valid = std::fs::read(&valid_path).expect("read");
    let mut mutants = safetensors_mutants(&valid);
    mutants.extend(byte_mutants(&valid, random_mutants(), 11));

    let mut report = Report::default();
    let mut model = Small::<f32>::new(&mut StdRng::seed_from_u64(2));
    let mut unchanged_failures = 0;
    fuzz(
        &mut report,
        &dir.join("mutant.safetensors"),
        &mutants,
        valid.len(),
        |path| {
            let before = state_bits(&model);
            match kiln::io::load(&mut model, path) {
                Ok(()) => Ok(()),
                Err(e) => {
                    if state_bits(&model) != before {
                        unchanged_failures += 1;
                    }
                    Err(e.to_string())
                }
            }
        },
    );
    assert_eq!(unchanged_failures, 0, "a failed load changed the model");
    report.check("io::load (safetensors)");
}

#[test]
fn safetensors_files_by_tensor() {
    let dir = scratch("tensorfile");
    let x = kiln::ndarray::Array2::<f32>::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
    let labels: Vec<u8> = [2i64, 0, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
    let x_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 4], &x_bytes)
                .expect("view"),
        ),
        (
            "y",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![3], &labels)
                .expect("view"),
        ),
    ];
    let valid = safetensors::serialize(views, None).expect("serialize");
    let mut mutants = safetensors_mutants(&valid);
    mutants.push(header_edit(&valid, "[3,4]", "[4000000000,4000000000]"));
    mutants.push(header_edit(&valid, "\"I64\"", "\"F64\""));
    mutants.push(header_edit(&valid, "\"I64\"", "\"U8\""));
    mutants.extend(byte_mutants(&valid, random_mutants(), 12));
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("data.safetensors"),
        &mutants,
        valid.len(),
        |path| {
            let file = TensorFile::open(path).map_err(|e| e.to_string())?;
            for name in file.names() {
                let read = if name == "y" {
                    file.labels(name).map(drop)
                } else {
                    file.get::<f64>(name).map(drop)
                };
                read.map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    );
    report.check("TensorFile::open / get / labels");
}

/// `valid` with the first `from` in its header replaced by `to`, the header length adjusted.
fn header_edit(valid: &[u8], from: &str, to: &str) -> Vec<u8> {
    let header_len = u64::from_le_bytes(valid[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&valid[8..8 + header_len]).expect("UTF-8 header");
    assert!(header.contains(from), "{from} is not in {header}");
    let header = header.replacen(from, to, 1);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&valid[8 + header_len..]);
    out
}

#[test]
fn training_checkpoints() {
    let dir = scratch("checkpoint");
    let ckpt = dir.join("run");
    let x = kiln::ndarray::Array4::<f32>::from_shape_fn((8, 1, 4, 4), |(b, _, i, j)| {
        ((b * 7 + i * 3 + j) % 5) as f32
    });
    let y = kiln::ndarray::Array1::from_shape_fn(8, |b| b % 3);
    let data = TensorDataset::with_labels(x, y, 3).expect("dataset");
    let mut trained = Small::<f32>::new(&mut StdRng::seed_from_u64(3));
    Trainer::new(1, 4)
        .validation(&data)
        .early_stopping(3, 0.0)
        .checkpoints(&ckpt)
        .progress(false)
        .fit(&mut trained, &mut Adam::new(1e-2), &data)
        .expect("training runs");
    let epoch = Checkpoint::<f32>::latest(&ckpt).expect("a checkpoint");
    let mut model = Small::<f32>::new(&mut StdRng::seed_from_u64(4));
    Checkpoint::load(&ckpt, &mut model).expect("the valid checkpoint loads");
    let mut report = Report::default();
    let mut unchanged_failures = 0;
    let files = [
        "state.json",
        "model.safetensors",
        "optimizer.safetensors",
        "best.safetensors",
    ];
    for (k, file) in files.iter().enumerate() {
        let path = epoch.join(file);
        let valid = std::fs::read(&path).expect("checkpoint file");
        let mut mutants = if file.ends_with(".json") {
            let text = String::from_utf8(valid.clone()).expect("UTF-8");
            text_mutants(
                &text,
                &[
                    ("1", "18446744073709551616"),
                    ("1", "-1"),
                    ("1", "1e999"),
                    ("0", "NaN"),
                    ("true", "1"),
                    ("false", "\"no\""),
                    ("\"adam\"", "\"sgd\""),
                    (":", ": null, \"x\":"),
                    ("[", "[["),
                    ("{", "{\"format\": 1, "),
                ],
            )
        } else {
            safetensors_mutants(&valid)
        };
        mutants.extend(byte_mutants(
            &valid,
            random_mutants() / files.len(),
            20 + k as u64,
        ));
        let before_all = state_bits(&model);
        fuzz(&mut report, &path, &mutants, valid.len(), |_| {
            let before = state_bits(&model);
            match Checkpoint::load(&ckpt, &mut model) {
                Ok(_) => {
                    // A mutant that still loads may change the weights; put the valid ones
                    // back for the next comparison.
                    Ok(())
                }
                Err(e) => {
                    if state_bits(&model) != before {
                        unchanged_failures += 1;
                    }
                    Err(e.to_string())
                }
            }
        });
        replace_file(&path, &valid);
        Checkpoint::load(&ckpt, &mut model).expect("the restored checkpoint loads");
        assert_eq!(state_bits(&model), before_all);
    }
    assert_eq!(unchanged_failures, 0, "a failed load changed the model");
    report.check("Checkpoint::load");
}

// ---------------------------------------------------------------------------------------------
// Data files.
// ---------------------------------------------------------------------------------------------

fn valid_csv() -> String {
    let mut text = String::from("a,b,c,label\n");
    for i in 0..20 {
        text += &format!("{}.5,{},-{}e-1,{}\n", i, i * 3, i % 7, i % 3);
    }
    text
}

const CSV_EDITS: &[(&str, &str)] = &[
    (",", ";"),
    (",", ",,"),
    ("\n", "\n\n"),
    ("\n", ",\n"),
    (".5", "NaN"),
    (".5", "inf"),
    (".5", "1e999"),
    ("1\n", "18446744073709551616\n"),
    ("2\n", "-2\n"),
    ("2\n", "2.5\n"),
    ("3", "\u{fffd}"),
];

fn read_csv_file(path: &Path) -> Result<(), String> {
    let options = CsvOptions {
        header: true,
        ..CsvOptions::default()
    };
    read_csv::<f32>(path, &options)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn csv_files_plain_and_gzip() {
    let dir = scratch("csv");
    let valid = valid_csv();
    let mut plain = text_mutants(&valid, CSV_EDITS);
    plain.extend(byte_mutants(valid.as_bytes(), random_mutants(), 31));
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("data.csv"),
        &plain,
        valid.len(),
        read_csv_file,
    );
    report.check("read_csv");

    let zipped = gzip_mutants(valid.as_bytes(), &plain, random_mutants(), 32);
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("data.csv.gz"),
        &zipped,
        valid.len(),
        read_csv_file,
    );
    report.check("read_csv (gzip)");
}

fn valid_idx() -> Vec<u8> {
    let images = Array3::<u8>::from_shape_fn((5, 4, 3), |(n, i, j)| (n * 12 + i * 3 + j) as u8);
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in images.shape() {
        bytes.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    bytes.extend(images.iter());
    bytes
}

fn idx_mutants(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Huge and wrong dimensions, other type codes and ranks.
    for dim in 0..3 {
        for size in [u32::MAX, 1 << 31, 100_000, 0, 6, 4] {
            let mut m = valid.to_vec();
            m[4 + 4 * dim..8 + 4 * dim].copy_from_slice(&size.to_be_bytes());
            out.push(m);
        }
    }
    for (at, value) in [
        (2, 0x0D),
        (2, 0x0E),
        (2, 0x09),
        (2, 0xFF),
        (3, 0),
        (3, 1),
        (3, 255),
    ] {
        let mut m = valid.to_vec();
        m[at] = value;
        out.push(m);
    }
    out
}

fn read_idx_file(path: &Path) -> Result<(), String> {
    read_idx(path).map_err(|e| e.to_string())?;
    read_idx_images(path).map(drop).map_err(|e| e.to_string())
}

#[test]
fn idx_files_plain_and_gzip() {
    let dir = scratch("idx");
    let valid = valid_idx();
    let mut plain = idx_mutants(&valid);
    plain.extend(byte_mutants(&valid, random_mutants(), 41));
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("images-idx3-ubyte"),
        &plain,
        valid.len(),
        read_idx_file,
    );
    report.check("read_idx");

    let zipped = gzip_mutants(&valid, &plain, random_mutants(), 42);
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("images-idx3-ubyte.gz"),
        &zipped,
        valid.len(),
        read_idx_file,
    );
    report.check("read_idx (gzip)");
}

// ---------------------------------------------------------------------------------------------
// Text files.
// ---------------------------------------------------------------------------------------------

#[test]
fn vocabulary_files() {
    let dir = scratch("vocab");
    let vocab = Vocab::builder(Tokenizer::Words)
        .specials(&["<bos>"])
        .build(["the cat sat on the mat", "a dog, a log."]);
    let valid_path = dir.join("valid.json");
    vocab.save(&valid_path).expect("save");
    let valid = std::fs::read_to_string(&valid_path).expect("read");
    let mut mutants = text_mutants(
        &valid,
        &[
            ("1", "18446744073709551616"),
            ("1", "-1"),
            ("2", "99999999999"),
            ("3", "2"),
            ("\"words\"", "\"bytes\""),
            ("true", "\"yes\""),
            ("\"the\"", "\"cat\""),
            (",", ""),
            ("{", "["),
            ("\"", "\\"),
        ],
    );
    mutants.extend(byte_mutants(valid.as_bytes(), random_mutants(), 51));
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("vocab.json"),
        &mutants,
        valid.len(),
        |path| Vocab::load(path).map(drop).map_err(|e| e.to_string()),
    );
    report.check("Vocab::load");
}

/// A small `tokenizer.json` with every kind of part: added tokens, a normalizer sequence, a
/// pre-tokenizer sequence, a BPE model with byte fallback, a template and a decoder sequence.
const HF_TOKENIZER: &str = r#"{"version": "1.0",
 "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": true,
   "rstrip": false, "normalized": false, "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
 "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
   {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
   {"type": "Digits", "individual_digits": true}]},
 "post_processor": {"type": "TemplateProcessing",
   "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
   "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
 "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"},
   "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
   {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
 "truncation": {"direction": "Left", "max_length": 5, "strategy": "LongestFirst", "stride": 1},
 "padding": {"strategy": {"Fixed": 6}, "direction": "Right", "pad_to_multiple_of": 4,
   "pad_id": 1, "pad_type_id": 0, "pad_token": "<unk>"},
 "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
   "vocab": {"<s>": 0, "<unk>": 1, "<0xC3>": 2, "<0xA9>": 3, "▁": 4, "a": 5, "b": 6, "1": 7,
             "▁a": 8, "ab": 9, "▁ab": 10},
   "merges": ["▁ a", "a b", "▁ ab"]}}"#;

#[test]
fn hugging_face_tokenizer_files() {
    let dir = scratch("hf_tokenizer");
    let valid = HF_TOKENIZER;
    HfTokenizer::from_json(valid).expect("the valid file loads");
    let mut mutants = text_mutants(
        valid,
        &[
            ("\"a b\"", "\"a c\""),
            ("\"a b\"", "[\"a\", \"b\"]"),
            ("\"a b\"", "[\"a\"]"),
            ("10", "4294967296"),
            ("10", "-1"),
            ("\"▁\"", "\"▁▁\""),
            ("BPE", "Unigram"),
            ("Metaspace", "Split"),
            ("true", "1"),
            ("\"first\"", "\"second\""),
            ("\"A\"", "\"C\""),
            ("\"<s>\"", "\"\""),
            (": 1,", ": 100000000,"),
            ("{", "["),
            ("LongestFirst", "OnlySecond"),
            ("\"Left\"", "\"Up\""),
            ("\"Fixed\": 6", "\"Fixed\": 4294967296"),
            ("\"pad_to_multiple_of\": 4", "\"pad_to_multiple_of\": 0"),
            ("\"stride\": 1", "\"stride\": 9"),
        ],
    );
    mutants.extend(byte_mutants(valid.as_bytes(), random_mutants(), 71));
    fuzz_hf_tokenizer(
        &dir,
        valid,
        &mutants,
        "HfTokenizer::from_file",
        ["<s>Ab é 12 ab\u{0}", "b 1"],
        &[0, 1, 2, 3, 2, 99, usize::MAX],
    );
}

/// Feeds each mutant of the `tokenizer.json` `valid` to [`HfTokenizer::from_file`], and what
/// loads encodes `texts` (alone, as a pair, token by token) and decodes the result and `ids`.
fn fuzz_hf_tokenizer(
    dir: &Path,
    valid: &str,
    mutants: &[Vec<u8>],
    what: &str,
    texts: [&str; 2],
    ids: &[usize],
) {
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("tokenizer.json"),
        mutants,
        valid.len(),
        |path| {
            let tokenizer = HfTokenizer::from_file(path).map_err(|e| e.to_string())?;
            let encoded = tokenizer.encode(texts[0], true);
            tokenizer.encode_pair(texts[0], texts[1], true);
            // With the file's truncation and padding: an error is the text's, not the file's
            // (a sequence too short to cut), and must not be a panic.
            let _ = tokenizer.encoding(texts[0], true);
            let _ = tokenizer.encoding_pair(texts[0], texts[1], false);
            let _ = tokenizer.encode_batch(&texts, true);
            tokenizer.tokenize(texts[1]);
            tokenizer.decode(&encoded, false);
            tokenizer.decode(ids, true);
            Ok(())
        },
    );
    report.check(what);
}

/// A Unigram `tokenizer.json` with SentencePiece's compiled character map (the small map of
/// `tests/fixtures/tokenizers/charsmap.json`) and the Replace patterns of its converters.
fn unigram_tokenizer() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers/charsmap.json");
    let text = std::fs::read_to_string(&path).expect("charsmap.json reads");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("charsmap.json is JSON");
    let charsmap = fixture["precompiled_charsmap"]
        .as_str()
        .expect("a charsmap");
    format!(
        r#"{{"added_tokens": [{{"id": 1, "content": "</s>", "special": true}}],
 "normalizer": {{"type": "Sequence", "normalizers": [
   {{"type": "Precompiled", "precompiled_charsmap": "{charsmap}"}},
   {{"type": "Replace", "pattern": {{"Regex": "\\A +| +\\z"}}, "content": ""}},
   {{"type": "Replace", "pattern": {{"Regex": " {{2,}}"}}, "content": " "}},
   {{"type": "Replace", "pattern": {{"String": " "}}, "content": "▁"}}]}},
 "pre_tokenizer": {{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}},
 "decoder": {{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}},
 "model": {{"type": "Unigram", "unk_id": 0, "byte_fallback": true,
   "vocab": [["<unk>", 0.0], ["</s>", 0.0], ["▁a", -1.5], ["▁", -1.7], ["ab", -2.05],
             ["1", -2.9], ["é", -2.9], ["b", -3.4], ["a", -3.4], ["<0xC3>", -5.0], ["<0xA9>", -5.0]]}}}}"#
    )
}

#[test]
fn hugging_face_unigram_tokenizer_files() {
    let dir = scratch("hf_unigram");
    let valid = unigram_tokenizer();
    HfTokenizer::from_json(&valid).expect("the valid file loads");
    let mut mutants = text_mutants(
        &valid,
        &[
            ("-1.5", "\"x\""),
            ("\"unk_id\": 0", "\"unk_id\": 11"),
            ("\"unk_id\": 0", "\"unk_id\": null"),
            ("[\"ab\", -2.05]", "[\"ab\"]"),
            ("Unigram", "BPE"),
            ("Precompiled", "Precompile"),
            ("2,}", "3,}"),
            (
                "\"precompiled_charsmap\": \"",
                "\"precompiled_charsmap\": \"A",
            ),
            (
                "\"precompiled_charsmap\": \"",
                "\"precompiled_charsmap\": \"/////",
            ),
            (
                "\"precompiled_charsmap\": \"AAQ",
                "\"precompiled_charsmap\": \"AAA",
            ),
        ],
    );
    // The charsmap's base64 is most of the file: random bytes land there most often, where a
    // flipped character is a damaged trie, not a syntax error.
    mutants.extend(byte_mutants(valid.as_bytes(), random_mutants(), 73));
    fuzz_hf_tokenizer(
        &dir,
        &valid,
        &mutants,
        "HfTokenizer::from_file (Unigram)",
        ["  AB é\u{200b}12 ab</s>x\u{0}  ", "Ａé\u{301}\u{301} 1 2"],
        &[0, 1, 2, 9, 10, 99, usize::MAX],
    );
}

#[test]
fn tsv_and_labelled_text_files() {
    let dir = scratch("text");
    let tsv = "novel\tline\nemma\tEMMA\nemma\t\"Oh!\" she said\npersuasion\tChapter 1\n";
    let mut mutants = text_mutants(tsv, &[("\t", ""), ("\t", "\t\t"), ("\n", "\n\t")]);
    mutants.extend(byte_mutants(tsv.as_bytes(), random_mutants(), 61));
    mutants.extend(
        byte_mutants(tsv.as_bytes(), random_mutants() / 4, 62)
            .iter()
            .map(|m| gzip(m)),
    );
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("lines.tsv"),
        &mutants,
        tsv.len(),
        |path| read_tsv(path).map(drop).map_err(|e| e.to_string()),
    );
    report.check("read_tsv");

    let csv =
        "label,text\npos,\"great, really\"\nneg,awful\npos,\"a \"\"fine\"\" film\"\nneg,meh\n";
    let mut mutants = text_mutants(
        csv,
        &[
            (",", ""),
            (",", ",,"),
            ("\"", ""),
            ("\"", "\"\"\""),
            ("pos", ""),
            ("\n", "\r"),
        ],
    );
    mutants.extend(byte_mutants(csv.as_bytes(), random_mutants(), 63));
    let mut report = Report::default();
    fuzz(
        &mut report,
        &dir.join("reviews.csv"),
        &mutants,
        csv.len(),
        |path| {
            LabelledText::read_csv(path, &TextCsvOptions::default())
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    report.check("LabelledText::read_csv");
}

/// The allocation bound is real: reading a valid IDX file of 1 MB allocates about its size.
#[test]
fn the_allocation_probe_sees_a_large_read() {
    let dir = scratch("probe");
    let path = dir.join("big-idx1-ubyte");
    let mut bytes = vec![0, 0, 0x08, 1];
    bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
    bytes.resize(8 + (1 << 20), 7);
    std::fs::write(&path, &bytes).expect("write");
    let (read, peak) = peak_during(|| read_idx(&path));
    assert_eq!(read.expect("valid").len(), 1 << 20);
    assert!(peak >= 1 << 20, "the probe saw only {peak} bytes");
}
