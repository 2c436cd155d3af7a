//! A batch large enough to be split in halves (convolution, pooling and the element-wise loops
//! run one half on the helper thread, recurrent layers one part of the batch) computes what its
//! samples compute one by one, the same bits on every run, and the same bits with one thread
//! as with two.

use kiln::ndarray::{s, Array1, Array2, Array4, ArrayView1, ArrayViewD, Axis};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Model, Supervised, TargetView};

kiln::model! {
    struct Cnn {
        input x: [B, 2, 16, 16];
        target y: [B] classes 3;
        let c = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let p = max_pool2d(c, 2);
        let q = avg_pool2d(c, 2);
        let h = tanh(flatten(p)) * sigmoid(flatten(q));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// Every gradient of `grads`, flattened in visiting order.
fn flatten<M: Model<f64>>(grads: &M::Grads) -> Vec<f64> {
    let mut out = Vec::new();
    M::visit_grads(grads, &mut |_, g| out.extend(g.iter().copied()));
    out
}

/// One step on the whole batch computes the mean of the steps on its samples one by one
/// (the loss is a mean over the batch): the loss and every gradient, to rounding. Returns
/// the batch's loss and gradients.
fn assert_batch_is_mean_of_samples<M: Supervised<f64>>(
    model: &mut M,
    x: ArrayViewD<'_, f64>,
    y: ArrayView1<'_, usize>,
) -> (f64, Vec<f64>) {
    let batch = y.len();
    let (mut ws, mut grads) = (M::Workspace::default(), model.zero_grads());
    let loss = model
        .train_batch(x.view(), TargetView::Labels(y.view()), &mut ws, &mut grads)
        .unwrap();
    let all = flatten::<M>(&grads);
    let (mut loss_sum, mut grad_sum) = (0.0, vec![0.0; all.len()]);
    for n in 0..batch {
        let (xn, yn) = (
            x.slice_axis(Axis(0), (n..n + 1).into()),
            y.slice(s![n..n + 1]),
        );
        loss_sum += model
            .train_batch(xn, TargetView::Labels(yn), &mut ws, &mut grads)
            .unwrap();
        for (total, g) in grad_sum.iter_mut().zip(flatten::<M>(&grads)) {
            *total += g;
        }
    }
    assert_close(&[loss], &[loss_sum / batch as f64], "loss");
    let mean: Vec<f64> = grad_sum.iter().map(|g| g / batch as f64).collect();
    assert_close(&all, &mean, "gradients");
    (loss, all)
}

#[test]
fn a_split_batch_matches_its_samples_one_by_one() {
    // 40 samples: the relu and both poolings see 40 × 8 × 16 × 16 = 81,920 values, above the
    // splitting thresholds; one sample alone is never split.
    let batch = 40;
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Cnn::<f64>::new(&mut rng);
    let x = Array4::from_shape_simple_fn((batch, 2, 16, 16), || rng.random_range(-1.0..1.0));
    let y = Array1::from_shape_simple_fn(batch, || rng.random_range(0..3));
    let (loss, grads) = assert_batch_is_mean_of_samples(&mut model, x.view().into_dyn(), y.view());

    // The same bits again, and each sample's logits as the batch's.
    let (mut ws, mut again) = (model.workspace(), model.zero_grads());
    let repeat = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut again)
        .unwrap();
    assert_eq!(loss.to_bits(), repeat.to_bits());
    assert_eq!(flatten::<Cnn<f64>>(&again), grads);
    let logits: Array2<f64> = ws.logits().unwrap().to_owned();
    for n in 0..batch {
        let one = model.forward(x.slice(s![n..n + 1, .., .., ..])).unwrap();
        assert_close(
            one.as_slice().unwrap(),
            logits.slice(s![n, ..]).as_slice().unwrap(),
            &format!("logits of sample {n}"),
        );
    }
}

kiln::model! {
    /// Large enough that its wide layer's GEMMs are split across threads too.
    struct Wide {
        input x: [B, 2, 16, 16];
        target y: [B] classes 3;
        let c = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let p = max_pool2d(c, 2);
        let h = relu(linear(flatten(p), 1024));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

kiln::model! {
    /// Recurrent layers over batches of two parts (16 sequences or more), each part's gradient
    /// products in several chunks of rows: the bidirectional stack adds both directions into
    /// one input adjoint, the GRU writes its own.
    struct Recurrent {
        input tokens: [B, T] tokens 50;
        input len: [B] lengths T;
        target y: [B] classes 3;
        let emb = embedding(tokens, 16, padding_idx = 0);
        let both = lstm(emb, 64, layers = 2, bidirectional = true, lengths = len, final_state = true);
        let forward = gru(emb, 96, lengths = len, final_state = true);
        let logits = linear(concat(both, forward), 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// The loss and every gradient of one step of [`Recurrent`] on fixed data, as bit patterns.
fn recurrent_step_bits() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(6);
    let mut model = Recurrent::<f64>::new(&mut rng);
    let tokens = Array2::from_shape_simple_fn((24, 40), || rng.random_range(0..50usize));
    let len = Array1::from_shape_simple_fn(24, || rng.random_range(1..=40usize));
    let y = Array1::from_shape_simple_fn(24, || rng.random_range(0..3usize));
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let loss = model
        .loss_and_grad(tokens.view(), len.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    let mut bits = vec![loss.to_bits()];
    Recurrent::<f64>::visit_grads(&grads, &mut |_, g| {
        bits.extend(g.iter().map(|v| v.to_bits()))
    });
    bits
}

/// The loss and every gradient of one step of [`Wide`] on fixed data, as bit patterns.
fn wide_step_bits() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = Wide::<f64>::new(&mut rng);
    let x = Array4::from_shape_simple_fn((40, 2, 16, 16), || rng.random_range(-1.0..1.0));
    let y = Array1::from_shape_simple_fn(40, || rng.random_range(0..3));
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let loss = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    let mut bits = vec![loss.to_bits()];
    Wide::<f64>::visit_grads(&grads, &mut |_, g| {
        bits.extend(g.iter().map(|v| v.to_bits()))
    });
    bits
}

/// FNV-1a over the bit patterns: one line for the child process to print.
fn fingerprint(bits: &[u64]) -> u64 {
    bits.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The thread count is read once per process, so the one-thread run is a child process: this
/// test binary again, running only this test with `KILN_THREADS=1`.
#[test]
fn one_and_two_threads_give_the_same_bits() {
    const CHILD: &str = "KILN_SPLIT_BATCH_CHILD";
    let here = fingerprint(&[wide_step_bits(), recurrent_step_bits()].concat());
    if std::env::var_os(CHILD).is_some() {
        println!("fingerprint {here:016x}");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "one_and_two_threads_give_the_same_bits",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("KILN_THREADS", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "the one-thread run failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let child = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint in the child's output:\n{stdout}"));
    assert_eq!(child, format!("{here:016x}"), "one thread and two differ");
}

kiln::model! {
    /// A convolution whose weight (73,728 values) is too large for 8 partial gradients: its
    /// batch is summed in 2 chunks.
    struct BigKernel {
        input x: [B, 8, 4, 4];
        target y: [B] classes 2;
        let c = conv2d(x, 1024, kernel = 3);
        let logits = linear(flatten(c), 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn a_large_convolution_weight_is_summed_in_fewer_chunks() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut model = BigKernel::<f64>::new(&mut rng);
    let x = Array4::from_shape_simple_fn((5, 8, 4, 4), || rng.random_range(-1.0..1.0));
    let y = Array1::from_shape_simple_fn(5, || rng.random_range(0..2));
    assert_batch_is_mean_of_samples(&mut model, x.view().into_dyn(), y.view());
}
