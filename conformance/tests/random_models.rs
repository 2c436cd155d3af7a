//! Random valid models, as Csmith and YARPGen test C compilers: a seeded generator
//! (`random_models/gen.rs`) builds random well-typed graphs over the op set and prints them
//! as `kiln::model!` source; each model's forward pass, further outputs and loss (in inference
//! and in training mode, dropout masks included) and batch norm's running statistics are
//! compared with a plain f64 interpreter of the same graph (`random_models/interp.rs`), its
//! gradients with central differences in f64, and its f32 instance (forward, loss and
//! gradients) with the f64 one (`random_models/harness.rs`). Models without a loss are
//! checked forward only.
//!
//! The CI-sized set (seeds 0..100) is committed as `random_models/generated.rs`, compiled
//! with this test (at opt-level 0, as all of this package: see the workspace's `Cargo.toml`);
//! `generated_file_is_current` fails when the generator's output differs
//! (`KILN_REGENERATE_RANDOM_MODELS=1 cargo test -p kiln-conformance --test random_models`
//! rewrites it). The long run compiles a scratch crate of N more models under
//! `target/random-models`:
//!
//! ```sh
//! KILN_RANDOM_MODELS=2000 cargo test -p kiln-conformance --test random_models long_run \
//!     -- --ignored --nocapture
//! ```

#[macro_use]
#[path = "random_models/harness.rs"]
mod harness;
#[path = "random_models/gen.rs"]
mod gen;
#[path = "random_models/generated.rs"]
mod generated;
#[path = "random_models/interp.rs"]
mod interp;
#[path = "random_models/long_run.rs"]
mod long_run;

/// The seeds of the committed set.
const CI_SEEDS: std::ops::Range<u64> = 0..100;

/// How many models with incremental decoding the committed set adds to those among
/// [`CI_SEEDS`] (about one in a hundred random models has it).
const DECODE_EXTRA: usize = 12;

/// How many models that decode through a recurrence (`lstm`, `gru`, `rnn` forward in time)
/// the committed set adds besides (they are rarer still).
const RECURRENT_DECODE_EXTRA: usize = 2;

/// Whether a generated model holds a recurrence.
fn recurrent(g: &gen::Graph) -> bool {
    g.op_kinds()
        .iter()
        .any(|k| ["lstm", "gru", "rnn"].contains(&k.as_str()))
}

/// The committed set's seeds: [`CI_SEEDS`], then the first [`DECODE_EXTRA`] seeds after them
/// whose model decodes incrementally, then the first [`RECURRENT_DECODE_EXTRA`] further ones
/// whose model decodes through a recurrence.
fn committed_seeds() -> Vec<u64> {
    let decodable = (CI_SEEDS.end..).filter(|&s| gen::generate(s).decodable());
    let extra: Vec<u64> = decodable.clone().take(DECODE_EXTRA).collect();
    let last = extra.last().copied().unwrap_or(CI_SEEDS.end);
    let recurrent = decodable
        .filter(|&s| s > last && recurrent(&gen::generate(s)))
        .take(RECURRENT_DECODE_EXTRA);
    CI_SEEDS.chain(extra).chain(recurrent).collect()
}

#[test]
fn generated_file_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("random_models")
        .join("generated.rs");
    let want = gen::file(committed_seeds());
    if std::env::var_os("KILN_REGENERATE_RANDOM_MODELS").is_some() {
        std::fs::write(&path, &want).expect("write generated.rs");
        return;
    }
    let have = std::fs::read_to_string(&path).expect("read generated.rs");
    assert!(
        have == want,
        "conformance/tests/random_models/generated.rs differs from the generator's output: rewrite it with \
         KILN_REGENERATE_RANDOM_MODELS=1 cargo test -p kiln-conformance --test random_models"
    );
}

#[test]
fn ci_random_models() {
    assert_eq!(
        generated::CASES.len(),
        CI_SEEDS.count() + DECODE_EXTRA + RECURRENT_DECODE_EXTRA
    );
    let summary = harness::Summary::run(generated::CASES);
    println!("{summary}");
    assert!(
        summary.failures.is_empty(),
        "{} of {} random models failed (reports above):\n{}",
        summary.failures.len(),
        summary.models,
        summary.failures.join("\n\n")
    );
}

/// The committed models with incremental decoding, fed in pieces through the decoding cache
/// (see `harness::check_decode`).
#[test]
fn ci_random_models_decode_in_pieces() {
    let failures: Vec<String> = generated::DECODE_CASES
        .iter()
        .filter_map(|(seed, check)| check(*seed).err())
        .collect();
    println!(
        "{} of {} random models decode incrementally",
        generated::DECODE_CASES.len(),
        generated::CASES.len()
    );
    assert!(
        generated::DECODE_CASES.len() > DECODE_EXTRA,
        "too few decodable models to test"
    );
    let recurrent = generated::DECODE_CASES
        .iter()
        .filter(|(seed, _)| recurrent(&gen::generate(*seed)))
        .count();
    assert!(
        recurrent >= RECURRENT_DECODE_EXTRA,
        "too few decodable models continue a recurrence"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn generator_is_deterministic_and_covers_the_families() {
    let a: Vec<String> = (0..20).map(|s| gen::source(&gen::generate(s))).collect();
    let b: Vec<String> = (0..20).map(|s| gen::source(&gen::generate(s))).collect();
    assert_eq!(a, b);
    let kinds: std::collections::BTreeSet<String> =
        CI_SEEDS.flat_map(|s| gen::generate(s).op_kinds()).collect();
    for op in [
        "linear",
        "conv2d",
        "embedding",
        "block",
        "mse",
        "l1",
        "smooth_l1",
        "huber",
        "bce",
        "kl_div",
        "cross_entropy(probabilities)",
        "nll(rank 2)",
        "batch_norm",
        "rms_norm",
        "dropout",
        "input lengths",
        "lstm/gru(lengths)",
        "lstm/gru(dropout)",
        "lstm/gru(h0)",
        "lstm(final_cells)",
        "lstm/gru(all_layers)",
        "lstm/gru(h0 per layer)",
        "rnn",
        "prelu",
        "prelu(per channel)",
        "multi_head_attention(memory)",
        "multi_head_attention(rotary)",
        "linear(tied)",
        "embedding(padding_idx)",
        "several outputs",
        "no loss (forward only)",
        "symbolic height or width",
        "narrow(end)",
        "concat(symbolic axis)",
    ] {
        assert!(
            kinds.contains(op),
            "no model of the CI set uses {op}: {kinds:?}"
        );
    }
}
