//! The benchmark workloads of `BENCHMARKS.md` (W1–W8; F4: W4 with its convolutions frozen;
//! O3: W3's Adam step alone): median milliseconds per training step (forward + loss +
//! backward + optimizer update) after warm-up, and steps per second, plus the macro's own
//! cost (time to expand the W3, W4 and W6 models, and a 12-block GPT).
//!
//! Run with `cargo bench --bench workloads`; `-- W2` runs the workloads whose id contains
//! `W2`; `-- --quick` counts a tenth of the steps (a smoke run).

use kiln::ndarray::{Array1, Array2, Array3, Array4};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Adam, Optimizer, Sgd};
use std::time::{Duration, Instant};

// W8's U-Net is the segmentation example's model, used as the example declares it.
#[allow(dead_code)]
#[path = "../examples/segment.rs"]
mod segment;

// W1-W6's models, shared with the data-parallel benchmark.
#[path = "common/models.rs"]
mod models;
use models::*;

/// The W6 model with 12 blocks: only expanded, to time the macro on a deep stack.
const GPT12_SOURCE: &str = "struct Gpt12 {
    input tokens: [B, T] tokens 96;
    target next: [B, T] classes 96;
    let wte = embedding(tokens, 768);
    let wpe = position_embedding(tokens, 768, max_len = 1024);
    let x = wte + wpe;
    let h = Block(x, repeat = 12);
    let ln_f = layer_norm(h);
    let logits = linear(ln_f, 96, bias = false, tied = wte);
    output logits;
    loss cross_entropy(logits, next);
    block Block(x) {
        let ln_1 = layer_norm(x);
        let attn = multi_head_attention(ln_1, heads = 12, causal = true);
        let x1 = x + attn;
        let ln_2 = layer_norm(x1);
        let c_fc = gelu(linear(ln_2, 3072));
        let mlp_proj = linear(c_fc, 768);
        let out = x1 + mlp_proj;
        output out;
    }
}";

kiln::model! {
    /// W7: an LSTM over token embeddings, its last hidden state classified.
    struct LstmSentiment {
        input tokens: [B, T] tokens 20000;
        target y: [B] classes 3;
        let emb = embedding(tokens, 128, padding_idx = 0);
        let rnn = lstm(emb, 128, final_state = true);
        let logits = linear(rnn, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// The median and the steps per second of `counted` timed calls after `warmup` untimed ones.
fn measure(warmup: usize, counted: usize, mut step: impl FnMut()) -> (Duration, f64) {
    for _ in 0..warmup {
        step();
    }
    let mut times: Vec<Duration> = (0..counted)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let median = times[times.len() / 2];
    (median, 1.0 / median.as_secs_f64())
}

/// Prints one workload's line: median, steps per second and (on Linux) the peak resident
/// memory since the workload began (see [`reset_peak_memory`]).
fn report(id: &str, threads: usize, (median, per_second): (Duration, f64)) {
    let peak = peak_memory_mib().map_or(String::new(), |mib| format!("  peak {mib:>7.1} MiB"));
    println!(
        "{id:<16} threads {threads}  median {:>10.4} ms/step  {:>12.1} steps/s{peak}",
        median.as_secs_f64() * 1e3,
        per_second
    );
}

/// Resets the process's peak resident set size to the current one (Linux: writing 5 to
/// `/proc/self/clear_refs`), so that the next report shows one workload's peak.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size in MiB (`VmHWM` in `/proc/self/status`), where available.
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn labels(rng: &mut StdRng, n: usize) -> Array1<usize> {
    Array1::from_shape_simple_fn(n, || rng.random_range(0..10))
}

/// The parts of the harness, in the order they run; each runs in a process of its own.
const PARTS: [&str; 11] = [
    "W1", "W2", "W5", "W3", "O3", "W4", "F4", "W6", "W7", "W8", "expand",
];

/// Runs every workload with 1 and then 2 threads: the GEMM reads `KILN_THREADS` once per
/// process, and a workload's peak memory is its own only in a fresh process (an earlier
/// workload's freed memory may stay mapped), so each (workload, thread count) is a child run
/// of this same binary.
fn main() {
    if std::env::var_os("KILN_BENCH_CHILD").is_some() {
        return run();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Ok(exe) = std::env::current_exe() else {
        return run();
    };
    let options: Vec<&String> = args.iter().filter(|a| a.starts_with("--")).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let selected = PARTS
        .into_iter()
        .filter(|part| filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str())));
    let selected: Vec<&str> = selected.collect();
    for threads in ["1", "2"] {
        for part in &selected {
            let status = std::process::Command::new(&exe)
                .arg(part)
                .args(&options)
                .env("KILN_BENCH_CHILD", "1")
                .env("KILN_THREADS", threads)
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("the {threads}-thread run of {part} failed");
                std::process::exit(1);
            }
        }
    }
}

fn run() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted = |id: &str| filter.is_empty() || filter.iter().any(|f| id.contains(f.as_str()));
    let counted = |n: usize| if quick { n.div_ceil(10) } else { n };
    let mut rng = StdRng::seed_from_u64(0);
    let threads = [std::env::var("KILN_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(1)];

    if wanted("W1") {
        reset_peak_memory();
        let mut model = LinReg::<f32>::new(&mut rng);
        let x = Array2::from_shape_simple_fn((1000, 1), || rng.random_range(-1.0f32..1.0));
        let y = x.mapv(|v| 3.0 * v + 2.0);
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Sgd::new(0.01));
        for &t in &threads {
            report(
                "W1 seed-linreg",
                t,
                measure(10, counted(1000), || {
                    model
                        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("W2") || wanted("W5") {
        reset_peak_memory();
        let mut model = MlpSmall::<f32>::new(&mut rng);
        if wanted("W2") {
            let x = Array2::from_shape_simple_fn((64, 784), || rng.random_range(0.0f32..1.0));
            let y = labels(&mut rng, 64);
            let (mut ws, mut grads, mut opt) =
                (model.workspace(), model.zero_grads(), Adam::new(1e-3));
            for &t in &threads {
                report(
                    "W2 mlp-small",
                    t,
                    measure(20, counted(300), || {
                        model
                            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                            .expect("step");
                        opt.step(&mut model, &grads);
                    }),
                );
            }
        }
        if wanted("W5") {
            reset_peak_memory();
            let x = Array2::from_shape_simple_fn((1, 784), || rng.random_range(0.0f32..1.0));
            for &t in &threads {
                report(
                    "W5 infer-mlp",
                    t,
                    measure(100, counted(5000), || {
                        std::hint::black_box(model.forward(x.view()).expect("forward"));
                    }),
                );
            }
        }
    }
    if wanted("W3") {
        reset_peak_memory();
        let mut model = MlpWide::<f32>::new(&mut rng);
        let x = Array2::from_shape_simple_fn((256, 1024), || rng.random_range(0.0f32..1.0));
        let y = labels(&mut rng, 256);
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
        for &t in &threads {
            report(
                "W3 mlp-wide",
                t,
                measure(3, counted(20), || {
                    model
                        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("O3") {
        // W3's optimizer step alone (Adam over its 6.3 M parameters, the gradients of one
        // step held fixed): 28 bytes of memory traffic per parameter, the part of W3's step
        // bound by memory rather than by the multiply-adds.
        reset_peak_memory();
        let mut model = MlpWide::<f32>::new(&mut rng);
        let x = Array2::from_shape_simple_fn((256, 1024), || rng.random_range(0.0f32..1.0));
        let y = labels(&mut rng, 256);
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .expect("step");
        for &t in &threads {
            report(
                "O3 adam-w3",
                t,
                measure(5, counted(100), || opt.step(&mut model, &grads)),
            );
        }
    }
    if wanted("W4") {
        reset_peak_memory();
        let mut model = LeNet::<f32>::new(&mut rng);
        let x = Array4::from_shape_simple_fn((64, 1, 28, 28), || rng.random_range(0.0f32..1.0));
        let y = labels(&mut rng, 64);
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
        for &t in &threads {
            report(
                "W4 lenet",
                t,
                measure(10, counted(100), || {
                    model
                        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("F4") {
        // W4 fine-tuned: the convolutions frozen (in the optimizer and in the backward
        // pass, as `Trainer` does), the dense head trained.
        reset_peak_memory();
        let mut model = LeNet::<f32>::new(&mut rng);
        let x = Array4::from_shape_simple_fn((64, 1, 28, 28), || rng.random_range(0.0f32..1.0));
        let y = labels(&mut rng, 64);
        let convolution = |name: &str| name.starts_with("c1.") || name.starts_with("c2.");
        let mut opt = Adam::new(1e-3).freeze(move |name, _| convolution(name));
        let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
        ws.freeze(convolution);
        for &t in &threads {
            report(
                "F4 lenet, convolutions frozen",
                t,
                measure(10, counted(100), || {
                    model
                        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("W6") {
        reset_peak_memory();
        let mut model = CharGpt::<f32>::new(&mut rng);
        let tokens = Array2::from_shape_simple_fn((12, 64), || rng.random_range(0..96usize));
        let next = Array2::from_shape_simple_fn((12, 64), || rng.random_range(0..96usize));
        let mut opt = kiln::AdamW::new(1e-3).betas(0.9, 0.99).weight_decay(0.1);
        let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
        for &t in &threads {
            report(
                "W6 char-gpt",
                t,
                measure(5, counted(50), || {
                    model
                        .loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("W7") {
        reset_peak_memory();
        let mut model = LstmSentiment::<f32>::new(&mut rng);
        let tokens = Array2::from_shape_simple_fn((64, 48), || rng.random_range(0..20000usize));
        let y = Array1::from_shape_simple_fn(64, || rng.random_range(0..3usize));
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
        for &t in &threads {
            report(
                "W7 lstm-sentiment",
                t,
                measure(5, counted(50), || {
                    model
                        .loss_and_grad(tokens.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    if wanted("W8") {
        reset_peak_memory();
        let mut model = segment::UNet::<f32>::new(&mut rng);
        let x = Array4::from_shape_simple_fn((16, 1, 64, 64), || rng.random_range(0.0f32..1.0));
        let y = Array3::from_shape_simple_fn((16, 64, 64), || rng.random_range(0..11usize));
        let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
        for &t in &threads {
            report(
                "W8 unet-segment",
                t,
                measure(3, counted(20), || {
                    model
                        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                        .expect("step");
                    opt.step(&mut model, &grads);
                }),
            );
        }
    }
    // The macro's cost does not depend on the thread count: report it once.
    if wanted("expand") && threads[0] == 1 {
        let sources = [
            ("expand W3", W3_SOURCE),
            ("expand W4", W4_SOURCE),
            ("expand W6", W6_SOURCE),
            ("expand GPT-12", GPT12_SOURCE),
        ];
        for (id, source) in sources {
            let tokens: proc_macro2::TokenStream = source.parse().expect("model source lexes");
            let (median, _) = measure(5, counted(50), || {
                std::hint::black_box(kiln_compiler::expand(tokens.clone()).expect("expands"));
            });
            println!("{id:<16} median {:>10.4} ms", median.as_secs_f64() * 1e3);
        }
    }
}
