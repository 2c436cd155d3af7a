//! GEMM throughput: kiln's own GEMM against `matrixmultiply` on the same data, for the
//! shapes kiln's workloads run (see `../shared/bench/WORKLOADS.md`).
//!
//! Run with `cargo bench --bench gemm` (add words after `--` to run only the shapes whose
//! name contains one of them, e.g. `cargo bench --bench gemm -- W3 batch-1`). Each entry is
//! the median GFLOP/s (2·m·n·k flops per call) over repeated timings of a warm call, single
//! thread. The results of the two libraries are compared as a sanity check.
//!
//! First it measures the core's FMA peak (a loop of independent register-only multiply-adds,
//! best of many short runs), so that each row also reads as a fraction of what the core can
//! do with the instruction set the GEMM runs (`KILN_GEMM_ISA=avx2` forces AVX2 on an AVX-512
//! machine). With `KILN_THREADS=2` the peak is per core and the GEMM may use two.
//!
//! matrixmultiply chooses its kernel from the CPU (AVX-512 where there is one); the header
//! says which, and whether it matches kiln's. For kiln's AVX2 kernels against matrixmultiply's
//! on an AVX-512 machine: `MMTEST_FEATURE=avx,avx2,fma KILN_GEMM_ISA=avx2 cargo bench --bench
//! gemm`.

#[cfg(feature = "gemm-reference")]
use ::gemm as gemm_crate;
use kiln::kernels::gemm;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One benchmarked product: `C[m×n] = op(A)[m×k] · op(B)[k×n]`.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_trans: bool,
    b_trans: bool,
}

const fn shape(
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_trans: bool,
    b_trans: bool,
) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        a_trans,
        b_trans,
    }
}

/// The workloads' products. Linear layers are `y = x·Wᵀ` (B transposed), `dW = dyᵀ·x` (A
/// transposed) and `dx = dy·W` (plain).
const SHAPES: &[Shape] = &[
    shape("square 1024³", 1024, 1024, 1024, false, false),
    shape("W3 fwd 1024→2048 (x·Wᵀ)", 256, 1024, 2048, false, true),
    shape("W3 fwd 2048→2048 (x·Wᵀ)", 256, 2048, 2048, false, true),
    shape("W3 dW 2048×1024 (dyᵀ·x)", 2048, 256, 1024, true, false),
    shape("W3 dW 2048×2048 (dyᵀ·x)", 2048, 256, 2048, true, false),
    shape("W3 dx 256×1024 (dy·W)", 256, 2048, 1024, false, false),
    shape("W3 dx 256×2048 (dy·W)", 256, 2048, 2048, false, false),
    shape("W2 fwd 784→128 (x·Wᵀ)", 64, 784, 128, false, true),
    shape("W2 fwd 128→64 (x·Wᵀ)", 64, 128, 64, false, true),
    shape("W2 fwd 64→10 (x·Wᵀ)", 64, 64, 10, false, true),
    shape("W2 dW 128×784 (dyᵀ·x)", 128, 64, 784, true, false),
    shape("W2 dW 64×128 (dyᵀ·x)", 64, 64, 128, true, false),
    shape("W2 dW 10×64 (dyᵀ·x)", 10, 64, 64, true, false),
    shape("W2 dx 64×128 (dy·W)", 64, 64, 128, false, false),
    shape("W2 dx 64×64 (dy·W)", 64, 10, 64, false, false),
    shape("W6 fwd c_attn 128→384 (x·Wᵀ)", 768, 128, 384, false, true),
    shape("W6 fwd c_fc 128→512 (x·Wᵀ)", 768, 128, 512, false, true),
    shape("W6 fwd mlp_proj 512→128 (x·Wᵀ)", 768, 512, 128, false, true),
    shape("W6 fwd c_proj 128→128 (x·Wᵀ)", 768, 128, 128, false, true),
    shape("W6 dW c_attn 384×128 (dyᵀ·x)", 384, 768, 128, true, false),
    shape("W6 dW c_fc 512×128 (dyᵀ·x)", 512, 768, 128, true, false),
    shape("W6 dW mlp_proj 128×512 (dyᵀ·x)", 128, 768, 512, true, false),
    shape("W6 dx c_attn (dy·W)", 768, 384, 128, false, false),
    shape("W6 dx mlp_proj (dy·W)", 768, 128, 512, false, false),
    shape("W6 dx c_proj (dy·W)", 768, 128, 128, false, false),
    shape("W7 fwd gates 128→512 (x·Wᵀ)", 3072, 128, 512, false, true),
    shape("W7 dW gates 512×128 (dyᵀ·x)", 512, 3072, 128, true, false),
    shape("W7 dx gates (dy·W)", 3072, 512, 128, false, false),
    shape(
        "W7 recurrent step, half batch (h·W_hhᵀ)",
        32,
        128,
        512,
        false,
        true,
    ),
    shape(
        "W7 recurrent step, whole batch (h·W_hhᵀ)",
        64,
        128,
        512,
        false,
        true,
    ),
    shape(
        "W7 recurrent backward, half batch (dg·W_hh)",
        32,
        512,
        128,
        false,
        false,
    ),
    shape("W6 head scores (Q·Kᵀ)", 64, 32, 64, false, true),
    shape("W6 head values (P·V)", 64, 64, 32, false, false),
    shape("W4 conv1 fwd (W·cols)", 6, 25, 784, false, false),
    shape("W4 conv2 fwd (W·cols)", 16, 150, 100, false, false),
    shape("W4 conv2 dW (dy·colsᵀ)", 16, 100, 150, false, true),
    shape("W4 conv1 dW (dy·colsᵀ)", 6, 784, 25, false, true),
    shape("W4 conv2 dcols (Wᵀ·dy)", 150, 16, 100, true, false),
    shape("W1 fwd 1000×1 (x·wᵀ)", 1000, 1, 1, false, true),
    shape("tiny 8³", 8, 8, 8, false, false),
    shape("tiny 16³ (A·Bᵀ)", 16, 16, 16, false, true),
    shape("small 32³", 32, 32, 32, false, false),
    shape("small 32³ (Aᵀ·B)", 32, 32, 32, true, false),
    shape("batch-4 784→128 (x·Wᵀ)", 4, 784, 128, false, true),
    shape("batch-1 784→128 (x·Wᵀ)", 1, 784, 128, false, true),
    shape("batch-1 128→64 (x·Wᵀ)", 1, 128, 64, false, true),
    shape("batch-1 64→10 (x·Wᵀ)", 1, 64, 10, false, true),
    shape("batch-1 784→128 (x·W)", 1, 784, 128, false, false),
];

/// Deterministic values in [-1, 1) (a linear congruential generator: no dependency).
fn data(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// Median GFLOP/s of each function over `SAMPLES` timings each, each timing enough calls to
/// last ~`TARGET`. The samples of the functions alternate, so that all see the same machine
/// (the benchmark host is shared: a slow phase must not penalise only one of them).
///
/// Each timing follows a quarter as many untimed calls of the same function: the first calls
/// after another library's ran slower than the rest (its clock and cache state are the other
/// code's). Measured on an AVX-512 Intel Xeon with kiln forced to AVX2, one thread, 1024³:
/// kiln 95 GFLOP/s when its timing directly followed the references' (AVX-512 and AVX2
/// code), 100.5 after the untimed calls, and 100.4 with the references not run at all;
/// matrixmultiply 129 → 135 the same way.
fn gflops_alternating(flops: f64, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    const SAMPLES: usize = 15;
    const TARGET: Duration = Duration::from_millis(20);
    // Warm: packing buffers grown, caches and branch predictors primed.
    for f in fs.iter_mut() {
        f();
    }
    let calls: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            f();
            let once = start.elapsed().max(Duration::from_nanos(50));
            (TARGET.as_secs_f64() / once.as_secs_f64()).ceil().max(1.0) as usize
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(SAMPLES); fs.len()];
    for _ in 0..SAMPLES {
        for ((f, &calls), samples) in fs.iter_mut().zip(&calls).zip(&mut samples) {
            for _ in 0..calls.div_ceil(4) {
                f();
            }
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            samples.push(flops * calls as f64 / start.elapsed().as_secs_f64() / 1e9);
        }
    }
    samples
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[SAMPLES / 2]
        })
        .collect()
}

/// The row and column strides of `op(X)` (`rows × cols`) stored row-major, as `gemm` uses.
fn strides(rows: usize, cols: usize, trans: bool) -> (isize, isize) {
    if trans {
        (1, rows as isize)
    } else {
        (cols as isize, 1)
    }
}

/// How many threads the reference libraries may use: as many as kiln (`KILN_THREADS`, at most 2).
fn reference_threads() -> usize {
    kiln::kernels::parallel::threads()
}

/// Runs one shape in one precision; returns the GFLOP/s of kiln, matrixmultiply and (with the
/// `gemm-reference` feature) the `gemm` crate.
macro_rules! bench_shape {
    ($t:ty, $mm:path, $s:expr) => {{
        let s: &Shape = $s;
        let (m, k, n) = (s.m, s.k, s.n);
        let a: Vec<$t> = data(m * k, 1).into_iter().map(|x| x as $t).collect();
        let b: Vec<$t> = data(k * n, 2).into_iter().map(|x| x as $t).collect();
        let mut c_kiln = vec![0.0 as $t; m * n];
        let mut c_mm = vec![0.0 as $t; m * n];
        #[cfg(feature = "gemm-reference")]
        let mut c_gemm = vec![0.0 as $t; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let ((rsa, csa), (rsb, csb)) = (strides(m, k, s.a_trans), strides(k, n, s.b_trans));
        let mut run_kiln = || {
            gemm(
                m,
                k,
                n,
                1.0,
                black_box(&a),
                s.a_trans,
                black_box(&b),
                s.b_trans,
                0.0,
                black_box(&mut c_kiln),
            )
        };
        let mut run_mm = || {
            // SAFETY: the strides describe `a`, `b` and `c_mm` exactly, as in `gemm`.
            unsafe {
                $mm(
                    m,
                    k,
                    n,
                    1.0,
                    black_box(&a).as_ptr(),
                    rsa,
                    csa,
                    black_box(&b).as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    black_box(&mut c_mm).as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        };
        #[cfg(feature = "gemm-reference")]
        let parallelism = match reference_threads() {
            1 => gemm_crate::Parallelism::None,
            threads => gemm_crate::Parallelism::Rayon(threads),
        };
        #[cfg(feature = "gemm-reference")]
        let mut run_gemm = || {
            // SAFETY: as above; `read_dst = false` makes `dst = beta · lhs · rhs`.
            unsafe {
                gemm_crate::gemm(
                    m,
                    n,
                    k,
                    black_box(&mut c_gemm).as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    black_box(&a).as_ptr(),
                    csa,
                    rsa,
                    black_box(&b).as_ptr(),
                    csb,
                    rsb,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
        #[cfg(feature = "gemm-reference")]
        let rates = gflops_alternating(flops, &mut [&mut run_kiln, &mut run_mm, &mut run_gemm]);
        #[cfg(not(feature = "gemm-reference"))]
        let rates = gflops_alternating(flops, &mut [&mut run_kiln, &mut run_mm]);
        let disagreement = |other: &[$t]| {
            c_kiln
                .iter()
                .zip(other)
                .map(|(x, y)| ((x - y).abs() / (1.0 + y.abs())) as f64)
                .fold(0.0, f64::max)
        };
        let diff = disagreement(&c_mm);
        assert!(
            diff < 1e-3,
            "{}: kiln and matrixmultiply disagree by {diff:e}",
            s.name
        );
        #[cfg(feature = "gemm-reference")]
        {
            let diff = disagreement(&c_gemm);
            assert!(
                diff < 1e-3,
                "{}: kiln and the gemm crate disagree by {diff:e}",
                s.name
            );
        }
        (rates[0], rates[1], rates.get(2).copied())
    }};
}

/// The measured FMA peak of one core, GFLOP/s: 12 independent chains of vector multiply-adds
/// on registers (enough to cover the FMA latency on two pipes), the best of many runs of
/// about 0.1 ms so that a run the scheduler interrupts does not count.
fn fma_peak_gflops(avx512: bool) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const ITERS: usize = 4096;
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2_chains(scale: f32) -> f32 {
            let (b, c) = (_mm256_set1_ps(scale), _mm256_set1_ps(1e-3));
            let mut acc = [_mm256_set1_ps(1.0); 12];
            for _ in 0..ITERS {
                for a in &mut acc {
                    *a = _mm256_fmadd_ps(*a, b, c);
                }
            }
            acc.iter().map(|&a| _mm256_cvtss_f32(a)).sum()
        }
        /// # Safety
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512_chains(scale: f32) -> f32 {
            let (b, c) = (_mm512_set1_ps(scale), _mm512_set1_ps(1e-3));
            let mut acc = [_mm512_set1_ps(1.0); 12];
            for _ in 0..ITERS {
                for a in &mut acc {
                    *a = _mm512_fmadd_ps(*a, b, c);
                }
            }
            acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
        }
        let supported = if avx512 {
            is_x86_feature_detected!("avx512f")
        } else {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        };
        if !supported {
            return None;
        }
        let lanes = if avx512 { 16.0 } else { 8.0 };
        let flops = (ITERS * 12) as f64 * lanes * 2.0;
        let mut best = f64::INFINITY;
        for _ in 0..3000 {
            let start = Instant::now();
            // SAFETY: the features were detected above.
            let r = unsafe {
                if avx512 {
                    avx512_chains(black_box(0.999))
                } else {
                    avx2_chains(black_box(0.999))
                }
            };
            black_box(r);
            best = best.min(start.elapsed().as_secs_f64());
        }
        Some(flops / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = avx512;
        None
    }
}

/// The vector code matrixmultiply runs here. It picks its kernel at run time (AVX-512 where
/// the CPU has it, with its default features), unless it was built with `MMTEST_FEATURE` set
/// to the features it may use: `MMTEST_FEATURE=avx,avx2,fma cargo bench --bench gemm` holds it
/// to its AVX2 kernel, the reference for kiln's AVX2 kernels (`KILN_GEMM_ISA=avx2`) on an
/// AVX-512 machine. (A compile-time switch of matrixmultiply's own tests; reading it here too
/// makes cargo rebuild this benchmark, and matrixmultiply with it, when it changes.)
fn matrixmultiply_isa() -> &'static str {
    let allowed = |feature: &str| match option_env!("MMTEST_FEATURE") {
        None | Some("") => true,
        Some(list) => list.split(',').any(|f| f.trim() == feature),
    };
    #[cfg(target_arch = "x86_64")]
    {
        if allowed("avx512f") && is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if allowed("avx2") && allowed("fma") && is_x86_feature_detected!("fma") {
            return "AVX2";
        }
    }
    let _ = allowed;
    "baseline"
}

/// The instruction set the GEMM will run with, as `KILN_GEMM_ISA` and the CPU decide.
fn gemm_isa_is_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let forced_lower = matches!(
            std::env::var("KILN_GEMM_ISA").as_deref(),
            Ok("avx2") | Ok("portable")
        );
        !forced_lower && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the shapes by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let avx512 = gemm_isa_is_avx512();
    let peak = fma_peak_gflops(avx512);
    match peak {
        Some(p) => println!(
            "FMA peak of one core ({}, measured): {p:.1} GFLOP/s = {:.2} GHz × {} FLOP/cycle",
            if avx512 { "AVX-512" } else { "AVX2" },
            p / if avx512 { 64.0 } else { 32.0 },
            if avx512 { 64 } else { 32 },
        ),
        None => println!("FMA peak: not measured on this CPU"),
    }
    println!();
    let mm_isa = matrixmultiply_isa();
    let kiln_isa = if avx512 { "AVX-512" } else { "AVX2" };
    println!(
        "kiln on {} thread(s) ({kiln_isa}); matrixmultiply on one ({mm_isa}{}){}",
        reference_threads(),
        if mm_isa != kiln_isa && peak.is_some() {
            ": not like for like; `MMTEST_FEATURE=avx,avx2,fma` at build time holds it to AVX2"
        } else {
            ""
        },
        if cfg!(feature = "gemm-reference") {
            "; the gemm crate on as many as kiln (its AVX2 kernels: built without its x86-v4 feature)"
        } else {
            " (add `--features gemm-reference` for the gemm crate's column)"
        }
    );
    println!();
    println!(
        "| shape | m | k | n | op | kiln f32 GFLOP/s | of one core's peak | matrixmultiply | kiln/matrixmultiply | gemm crate | kiln/gemm |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for s in SHAPES.iter().filter(|s| selected(s.name)) {
        let (kiln, mm, gemm_crate) = bench_shape!(f32, matrixmultiply::sgemm, s);
        let op = format!(
            "{}·{}",
            if s.a_trans { "Aᵀ" } else { "A" },
            if s.b_trans { "Bᵀ" } else { "B" }
        );
        let of_peak = peak.map_or("–".to_string(), |p| format!("{:.0}%", 100.0 * kiln / p));
        let (gemm_rate, gemm_ratio) = gemm_crate.map_or(("–".into(), "–".into()), |g| {
            (format!("{g:.1}"), format!("{:.2}×", kiln / g))
        });
        println!(
            "| {} | {} | {} | {} | {op} | {kiln:.1} | {of_peak} | {mm:.1} | {:.2}× | {gemm_rate} | {gemm_ratio} |",
            s.name,
            s.m,
            s.k,
            s.n,
            kiln / mm
        );
    }
    let square = shape("f64 square 1024³", 1024, 1024, 1024, false, false);
    if selected(square.name) {
        let (kiln, mm, gemm_crate) = bench_shape!(f64, matrixmultiply::dgemm, &square);
        let (gemm_rate, gemm_ratio) = gemm_crate.map_or(("–".into(), "–".into()), |g| {
            (format!("{g:.1}"), format!("{:.2}×", kiln / g))
        });
        println!(
            "| {} (vs dgemm) | 1024 | 1024 | 1024 | A·B | {kiln:.1} | – | {mm:.1} | {:.2}× | {gemm_rate} | {gemm_ratio} |",
            square.name,
            kiln / mm
        );
    }
}
