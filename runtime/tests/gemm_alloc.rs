//! A warm GEMM allocates nothing: the packing buffers are thread-local and grow once.
//!
//! Counted by a global allocator, per thread, so that the test harness's own threads do not
//! interfere.

mod counting;
use counting::allocations_in;
use kiln_runtime::kernels::{gemm, linear_backward_input, linear_backward_weight, linear_forward};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn values<F: From<f32>>(len: usize, seed: f32) -> Vec<F> {
    (0..len)
        .map(|i| F::from(((i as f32 + seed) * 0.7371).sin()))
        .collect()
}

/// Every transpose combination of one `m × k × n` product, `f32` and `f64`.
fn all_layouts(m: usize, k: usize, n: usize) {
    let (a, b) = (values::<f32>(m * k, 1.0), values::<f32>(k * n, 2.0));
    let (ad, bd) = (values::<f64>(m * k, 1.0), values::<f64>(k * n, 2.0));
    let (mut c, mut cd) = (vec![0.0f32; m * n], vec![0.0f64; m * n]);
    for a_trans in [false, true] {
        for b_trans in [false, true] {
            gemm(m, k, n, 1.0, &a, a_trans, &b, b_trans, 0.0, &mut c);
            gemm(m, k, n, 0.5, &a, a_trans, &b, b_trans, 1.0, &mut c);
            gemm(m, k, n, 1.0, &ad, a_trans, &bd, b_trans, 0.0, &mut cd);
        }
    }
}

/// Shapes that take every path: packed (large, and beyond every default block size: m >
/// MC, k > KC, n > NC), matrix-vector (m = 1, n = 1) and small.
const SHAPES: &[(usize, usize, usize)] = &[
    (300, 520, 70),
    (9, 3, 4100),
    (256, 1024, 512),
    (64, 784, 128),
    (1, 784, 128),
    (33, 17, 1),
    (7, 13, 5),
];

#[test]
fn warm_gemm_calls_allocate_nothing() {
    let _exclusive = counting::exclusive();
    // The first round sizes this thread's packing buffers (and may allocate).
    let first = allocations_in(|| {
        for &(m, k, n) in SHAPES {
            all_layouts(m, k, n);
        }
    });
    // The inputs and outputs above are allocated inside `all_layouts`: count only GEMM calls.
    let (m, k, n) = (300, 520, 70);
    let (a, b) = (values::<f32>(m * k, 1.0), values::<f32>(k * n, 2.0));
    let mut c = vec![0.0f32; m * n];
    let warm = allocations_in(|| {
        for _ in 0..10 {
            for a_trans in [false, true] {
                for b_trans in [false, true] {
                    gemm(m, k, n, 1.0, &a, a_trans, &b, b_trans, 0.0, &mut c);
                }
            }
        }
    });
    assert_eq!(
        warm, 0,
        "warm GEMMs allocated ({first} allocations while warming up)"
    );

    // Smaller problems and every other path reuse the (larger) buffers.
    let mut buffers = Vec::new();
    for &(m, k, n) in SHAPES {
        buffers.push((
            values::<f32>(m * k, 1.0),
            values::<f32>(k * n, 2.0),
            vec![0.0f32; m * n],
            values::<f64>(m * k, 1.0),
            values::<f64>(k * n, 2.0),
            vec![0.0f64; m * n],
        ));
    }
    let later = allocations_in(|| {
        for _ in 0..3 {
            for (&(m, k, n), (a, b, c, ad, bd, cd)) in SHAPES.iter().zip(&mut buffers) {
                for a_trans in [false, true] {
                    for b_trans in [false, true] {
                        gemm(m, k, n, 1.0, a, a_trans, b, b_trans, 0.0, c);
                        gemm(m, k, n, 0.5, a, a_trans, b, b_trans, 1.0, c);
                        gemm(m, k, n, 1.0, ad, a_trans, bd, b_trans, 0.0, cd);
                    }
                }
            }
        }
    });
    assert_eq!(later, 0, "warm GEMMs of every shape and path allocated");
}

#[test]
fn warm_linear_kernels_allocate_nothing() {
    let _exclusive = counting::exclusive();
    // A W2-sized layer (batch 64, 784 → 128): forward and both backward products.
    let (batch, inp, out) = (64, 784, 128);
    let x = values::<f32>(batch * inp, 1.0);
    let w = values::<f32>(out * inp, 2.0);
    let bias = values::<f32>(out, 3.0);
    let dy = values::<f32>(batch * out, 4.0);
    let (mut y, mut dw, mut dx) = (
        vec![0.0f32; batch * out],
        vec![0.0f32; out * inp],
        vec![0.0f32; batch * inp],
    );
    let mut step = || {
        linear_forward(&x, &w, Some(&bias), batch, inp, out, &mut y);
        linear_backward_weight(&x, &dy, batch, inp, out, &mut dw, false);
        linear_backward_input(&dy, &w, batch, inp, out, &mut dx, true);
    };
    assert!(
        counting::warm_up(&mut step, 10),
        "the linear kernels kept allocating while warming up"
    );
    assert_eq!(allocations_in(|| (0..5).for_each(|_| step())), 0);
}

/// The counter works: the first GEMM on a fresh thread grows its packing buffers.
#[test]
fn the_first_packed_gemm_on_a_thread_allocates() {
    let _exclusive = counting::exclusive();
    std::thread::spawn(|| {
        let (m, k, n) = (64, 64, 64);
        let (a, b) = (values::<f32>(m * k, 1.0), values::<f32>(k * n, 2.0));
        let mut c = vec![0.0f32; m * n];
        let first = allocations_in(|| gemm(m, k, n, 1.0, &a, false, &b, false, 0.0, &mut c));
        assert!(
            first > 0,
            "the packing buffers were not allocated on first use"
        );
        let second = allocations_in(|| gemm(m, k, n, 1.0, &a, false, &b, false, 0.0, &mut c));
        assert_eq!(second, 0);
    })
    .join()
    .unwrap();
}
