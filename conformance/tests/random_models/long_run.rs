//! The long run: N more models (seeds from 1,000,000 on), compiled in batches as a scratch
//! crate under `target/random-models/` that includes this test's generator, interpreter and
//! harness by path and depends on kiln by path (the workspace root, this package's parent).
//! Its own target directory costs one build of the dependencies the first time; the models
//! compile at opt-level 0 (the kernels at 2), which is what keeps a batch of a few hundred
//! models quick to build.
//!
//! ```sh
//! KILN_RANDOM_MODELS=2000 cargo test -p kiln-conformance --test random_models long_run \
//!     -- --ignored --nocapture
//! ```
//!
//! `KILN_RANDOM_MODELS_START` (default 1000000) and `KILN_RANDOM_MODELS_BATCH` (default 250)
//! choose the seeds and the batch size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// `target/random-models`.
fn scratch_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("random-models")
}

fn write_crate(dir: &Path) {
    // This package is conformance/; kiln is the workspace root above it.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = here.join("tests").join("random_models");
    let root = here.parent().expect("conformance/ is inside the workspace");
    std::fs::create_dir_all(dir.join("src")).expect("create the scratch crate");
    let manifest = format!(
        r#"[package]
name = "kiln-random-models"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kiln = {{ path = {root:?} }}

[workspace]

[profile.dev]
opt-level = 0
debug = 0

[profile.dev.package."*"]
opt-level = 2
"#,
        root = root.display().to_string()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    let path = |f: &str| format!("{:?}", tests.join(f).display().to_string());
    let main = format!(
        r#"//! Runs the generated models of `generated.rs` (written by conformance/tests/random_models/long_run.rs).
#![allow(dead_code)]

#[macro_use]
#[path = {harness}]
mod harness;
#[path = {gen}]
mod gen;
#[path = {interp}]
mod interp;
mod generated;

fn main() {{
    let s = harness::Summary::run(generated::CASES);
    println!("models\t{{}}", s.models);
    println!("failed\t{{}}", s.failures.len());
    println!("grad_elements\t{{}}", s.grad_elements);
    println!("train_forward_checked\t{{}}", s.train_forward_checked);
    println!("max_grad_err\t{{:e}}", s.max_grad_err);
    println!("buffers_checked\t{{}}", s.buffers_checked);
    println!("max_f32_grad_err\t{{:e}}", s.max_f32_grad_err);
    println!("forward_only\t{{}}", s.forward_only);
    println!("small_step\t{{}}", s.small_step);
    for (op, n) in &s.ops {{
        println!("op\t{{op}}\t{{n}}");
    }}
    // Models with incremental decoding, fed in pieces; a failure goes to stderr, which the
    // long run reports as one.
    let mut decode_failed = 0;
    for (seed, check) in generated::DECODE_CASES {{
        if let Err(e) = check(*seed) {{
            eprintln!("{{e}}");
            decode_failed += 1;
        }}
    }}
    println!("decoded\t{{}}", generated::DECODE_CASES.len());
    println!("decode_failed\t{{decode_failed}}");
}}
"#,
        harness = path("harness.rs"),
        gen = path("gen.rs"),
        interp = path("interp.rs"),
    );
    std::fs::write(dir.join("src").join("main.rs"), main).expect("write main.rs");
}

#[test]
#[ignore = "long: KILN_RANDOM_MODELS=2000 cargo test -p kiln-conformance --test random_models long_run -- --ignored --nocapture"]
fn long_run() {
    let n = env_u64("KILN_RANDOM_MODELS", 2000);
    let start = env_u64("KILN_RANDOM_MODELS_START", 1_000_000);
    let batch = env_u64("KILN_RANDOM_MODELS_BATCH", 250).max(1);
    let root = scratch_root();
    let dir = root.join("crate");
    write_crate(&dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (mut build_s, mut run_s) = (0.0, 0.0);
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut first = start;
    while first < start + n {
        let last = (first + batch).min(start + n);
        std::fs::write(
            dir.join("src").join("generated.rs"),
            super::gen::file(first..last),
        )
        .expect("write generated.rs");
        let t = Instant::now();
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", root.join("target"))
            .status()
            .expect("run cargo");
        build_s += t.elapsed().as_secs_f64();
        if !status.success() {
            // The other batches still run; the test fails at the end.
            failures.push(format!(
                "seeds {first}..{last} do not compile (see the errors above)"
            ));
            first = last;
            continue;
        }
        let t = Instant::now();
        let out = Command::new(root.join("target").join("debug").join("kiln-random-models"))
            .output()
            .expect("run the models");
        run_s += t.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            failures.push(stderr.to_string());
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            match parts.as_slice() {
                ["op", name, count] => {
                    *ops.entry(name.to_string()).or_default() += count.parse::<u64>().unwrap()
                }
                [key @ ("max_grad_err" | "max_f32_grad_err"), v] => {
                    let e = totals.entry(key.to_string()).or_default();
                    *e = e.max(v.parse().unwrap());
                }
                [key, v] => {
                    *totals.entry(key.to_string()).or_default() += v.parse::<f64>().unwrap()
                }
                _ => {}
            }
        }
        println!(
            "seeds {first}..{last}: built in {build_s:.0} s so far, run in {run_s:.0} s so far, {} failed so far",
            totals.get("failed").copied().unwrap_or(0.0)
        );
        first = last;
    }
    println!("long run: seeds {start}..{}", start + n);
    for (k, v) in &totals {
        println!("  {k}: {v}");
    }
    println!("  build time {build_s:.0} s, run time {run_s:.0} s");
    println!("ops (count of uses over all models):");
    for (op, c) in &ops {
        println!("  {op:<36} {c}");
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
