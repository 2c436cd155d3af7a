//! Determinism: the same seed gives bit-identical weights whatever the thread count and from
//! run to run. The digits example (a CNN, a few epochs) and the sentiment example (a
//! bidirectional LSTM with dropout, a small part of the tweets) are trained four times, each
//! in a process of its own (the thread count is read once per process): with
//! `KILN_THREADS=1` twice and `KILN_THREADS=2` twice. The saved weights (and, for digits, the
//! optimizer state of the last checkpoint) must be the same bytes in all four runs.

use crate::{digits, sentiment};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The environment variable that puts the test binary in child mode: the output directory.
const CHILD_OUT: &str = "KILN_DETERMINISM_OUT";
/// The test that runs the child (the parent re-executes the binary with this filter).
const TEST_NAME: &str = "determinism::same_seed_gives_bit_identical_weights_on_1_and_2_threads";

/// The files whose bytes must agree, relative to a child's output directory.
fn outputs(out: &Path) -> Vec<PathBuf> {
    let mut files = vec![out.join("digits/digits_cnn.safetensors")];
    let checkpoint = kiln::train::Checkpoint::<f32>::latest(out.join("digits/checkpoints"))
        .expect("the digits run checkpointed");
    files.push(checkpoint.join("model.safetensors"));
    files.push(checkpoint.join("optimizer.safetensors"));
    if Path::new(sentiment::TWEETS).is_file() {
        files.push(out.join("sentiment/sentiment.safetensors"));
    }
    files
}

/// The child: trains both examples into `out` and records its thread count.
fn child(out: &Path) {
    digits::train_digits(3, &out.join("digits"), false).expect("digits training");
    if Path::new(sentiment::TWEETS).is_file() {
        let config = sentiment::Config {
            epochs: 1,
            train_limit: Some(1000),
            out: out.join("sentiment"),
            verbose: false,
            ..sentiment::Config::default()
        };
        sentiment::train(&config).expect("sentiment training");
    }
    std::fs::write(
        out.join("threads.txt"),
        kiln::kernels::parallel::threads().to_string(),
    )
    .expect("writes");
    std::fs::write(out.join("helper.txt"), format!("{:?}", helper_ran())).expect("writes");
}

/// Whether kernels handed work to the helper thread (it is spawned on the first hand-over):
/// `None` where threads cannot be listed by name.
fn helper_ran() -> Option<bool> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "kiln-helper")
    }))
}

#[test]
fn same_seed_gives_bit_identical_weights_on_1_and_2_threads() {
    if let Some(out) = std::env::var_os(CHILD_OUT) {
        child(Path::new(&out));
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("the test binary");
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("determinism");
    let mut runs = Vec::new();
    for threads in [1, 2] {
        for run in 0..2 {
            let out = root.join(format!("threads{threads}-run{run}"));
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).expect("creates");
            let started = Instant::now();
            let status = Command::new(&exe)
                .args([TEST_NAME, "--exact", "--test-threads=1"])
                .env(CHILD_OUT, &out)
                .env("KILN_THREADS", threads.to_string())
                .stdout(Stdio::null())
                .status()
                .expect("the child runs");
            assert!(status.success(), "threads {threads}, run {run}: {status}");
            let used = std::fs::read_to_string(out.join("threads.txt")).expect("reads");
            assert_eq!(used, threads.to_string(), "the child's thread count");
            // With 2 threads the kernels must really have split work, or the comparison
            // proves nothing.
            let helper = std::fs::read_to_string(out.join("helper.txt")).expect("reads");
            if helper != "None" {
                assert_eq!(
                    helper,
                    format!("Some({})", threads == 2),
                    "helper thread used"
                );
            }
            println!(
                "KILN_THREADS={threads} run {run}: {:.1} s",
                started.elapsed().as_secs_f64()
            );
            runs.push(out);
        }
    }
    let reference = &runs[0];
    let files = outputs(reference);
    for out in &runs[1..] {
        for (expected, actual) in files.iter().zip(outputs(out)) {
            let a = std::fs::read(expected).expect("reads");
            let b = std::fs::read(&actual).expect("reads");
            assert!(
                a == b,
                "{} differs from {} ({} and {} bytes)",
                actual.display(),
                expected.display(),
                b.len(),
                a.len()
            );
        }
    }
    println!(
        "determinism: {} files bit-identical over 4 runs (1 and 2 threads, twice each)",
        files.len()
    );
}
