//! Non-finite values: the opt-in check (`ws.check_finite(true)`, `Trainer::detect_anomaly`)
//! stops at the first NaN or infinity and names the binding, op, line and pass, and the
//! trainer's epoch, step and batch; without it the trainer stops on a non-finite loss (or
//! non-finite weights before a checkpoint) and keeps the last good checkpoint.

use kiln::data::{self, TensorDataset};
use kiln::finite::Pass;
use kiln::optim::LrSchedule;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{Checkpoint, Trainer};
use kiln::{Error, Model, Sgd};
use std::path::PathBuf;

kiln::model! {
    pub struct SqrtNet {
        input x: [B, 4];
        target y: [B] classes 3;
        let s = sqrt(x);
        let h = tanh(linear(s, 8));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

// `r` feeds two ops, so it is not fused into `t`: where `r` is 0, `t = sqrt(r)` is finite but
// its backward step gives `r` an infinite gradient.
kiln::model! {
    pub struct ZeroSqrt {
        input x: [B, 4];
        target y: [B] classes 3;
        let h = linear(x, 8);
        let r = relu(h);
        let t = sqrt(r);
        let a = linear(t, 3);
        let logits = a + linear(r, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// The line of the first line of this file containing `text`.
fn line_of(text: &str) -> u32 {
    let source = include_str!("non_finite.rs");
    let index = source
        .lines()
        .position(|l| l.contains(text))
        .expect("the text is in this file");
    u32::try_from(index + 1).expect("small")
}

/// Iris (positive features): 150 samples in file order.
fn iris() -> TensorDataset<f32> {
    data::iris::<f32>().expect("bundled")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("non_finite-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn finite_weights<M: Model<f32>>(model: &M) -> bool {
    let mut finite = true;
    model.visit_params(&mut |_, view| finite &= view.iter().all(|v| v.is_finite()));
    finite
}

#[test]
fn a_nan_in_the_forward_pass_names_binding_op_line_step_and_batch() {
    // Sample 70 gets a negative feature: in order, batches of 32, it is in the third batch.
    let mut data = iris();
    data.features_mut()[[70, 2]] = -1.0;
    let mut model = SqrtNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(2, 32)
        .shuffle(false)
        .detect_anomaly(true)
        .progress(false)
        .fit(&mut model, &mut Sgd::new(0.1), &data)
        .expect_err("sqrt(-1) is NaN");
    let Error::NonFinite(found) = &err else {
        panic!("expected Error::NonFinite, got {err}")
    };
    assert_eq!(found.site.binding, "s");
    assert_eq!(found.site.op, "sqrt");
    assert_eq!(found.site.source, "sqrt(x)");
    assert_eq!(found.site.pass, Pass::Forward);
    assert_eq!(found.site.line, line_of("let s = sqrt(x);"));
    assert_eq!(
        (found.epoch, found.step, found.batch),
        (Some(1), Some(3), Some(3))
    );
    // Sample 6 of the batch, feature 2.
    assert_eq!(found.index, 6 * 4 + 2);
    assert!(found.value.is_nan());
    assert_eq!(
        err.to_string(),
        format!(
            "non-finite value (NaN) in `s` = sqrt(x) at line {}, from `sqrt`, forward pass, \
             epoch 1, step 3, batch 3 (element 26)",
            line_of("let s = sqrt(x);")
        )
    );
}

#[test]
fn an_infinite_gradient_in_the_backward_pass_names_the_value_it_belongs_to() {
    let mut model = ZeroSqrt::<f32>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(1, 32)
        .shuffle(false)
        .detect_anomaly(true)
        .progress(false)
        .fit(&mut model, &mut Sgd::new(0.1), &iris())
        .expect_err("the derivative of sqrt at 0 is infinite");
    let Error::NonFinite(found) = &err else {
        panic!("expected Error::NonFinite, got {err}")
    };
    assert_eq!(found.site.pass, Pass::Backward, "{err}");
    assert_eq!(
        (found.site.binding, found.site.op, found.site.gradient_of),
        ("t", "sqrt", "r"),
        "{err}"
    );
    assert_eq!(found.site.line, line_of("let t = sqrt(r);"));
    assert_eq!(
        (found.epoch, found.step, found.batch),
        (Some(1), Some(1), Some(1))
    );
    assert!(
        err.to_string()
            .starts_with("non-finite gradient (inf) of `r` in `t` = sqrt(r) at line"),
        "{err}"
    );
}

#[test]
fn the_check_is_off_by_default_and_on_for_a_workspace() {
    use kiln::ndarray::{Array1, Array2};
    let model = SqrtNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    let x = Array2::from_elem((2, 4), -1.0f32);
    let y = Array1::from_vec(vec![0usize, 1]);
    let mut grads = model.zero_grads();
    let mut model = model;
    let mut ws = model.workspace();
    // Off: NaN flows to the loss, as in PyTorch without anomaly detection.
    let loss = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect("no check");
    assert!(loss.is_nan());
    ws.check_finite(true);
    let err = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect_err("checked");
    let Error::NonFinite(found) = &err else {
        panic!("{err}")
    };
    assert_eq!((found.site.binding, found.index), ("s", 0));
    assert_eq!((found.epoch, found.step, found.batch), (None, None, None));
}

/// A learning rate that turns huge in the second epoch (infinite in f32).
struct Explode;

impl LrSchedule for Explode {
    fn lr(&self, epoch: usize, _step: usize, base_lr: f64) -> f64 {
        if epoch == 0 {
            base_lr
        } else {
            1e39
        }
    }
}

#[test]
fn training_stops_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("explode");
    let data = iris();
    let mut model = SqrtNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(5, 32)
        .schedule(Explode)
        .checkpoints(&dir)
        .progress(false)
        .fit(&mut model, &mut Sgd::new(0.05), &data)
        .expect_err("the loss overflows in the second epoch");
    println!("{err}");
    let Error::NonFiniteTraining { what, epoch, .. } = &err else {
        panic!("expected Error::NonFiniteTraining, got {err}")
    };
    assert_eq!(*epoch, 2, "{err}");
    assert!(what.starts_with("non-finite"), "{err}");
    let latest = Checkpoint::<f32>::latest(&dir).expect("a checkpoint");
    assert_eq!(latest, dir.join("epoch-0001"));
    assert!(
        err.to_string().contains("the last good checkpoint")
            && err.to_string().contains("epoch-0001")
            && err.to_string().contains("detect_anomaly"),
        "{err}"
    );
    let mut restored = SqrtNet::<f32>::new(&mut StdRng::seed_from_u64(1));
    let ckpt = Checkpoint::load(&dir, &mut restored).expect("the kept checkpoint loads");
    assert_eq!(ckpt.epochs_done, 1);
    assert!(finite_weights(&restored));
    // Only the first epoch's directory (no half-written second one with bad weights).
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["checkpoint.json", "epoch-0001"]);

    // With the check on, the same run stops at the first op that overflows, in epoch 2.
    let mut model = SqrtNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(5, 32)
        .schedule(Explode)
        .detect_anomaly(true)
        .progress(false)
        .fit(&mut model, &mut Sgd::new(0.05), &data)
        .expect_err("overflows");
    let Error::NonFinite(found) = &err else {
        panic!("expected Error::NonFinite, got {err}")
    };
    assert_eq!(found.epoch, Some(2), "{err}");
    println!("{err}");
}

kiln::model! {
    pub struct ReluNet {
        input x: [B, 4];
        target y: [B] classes 3;
        let h = relu(linear(x, 8));
        let r = relu(x);
        let logits = linear(h, 3);
        output logits, r;
        loss cross_entropy(logits, y);
    }
}

/// `relu` keeps a NaN, as PyTorch's does (and the ONNX `Relu` it exports): a NaN input or
/// weight reaches the outputs and the loss, where the trainer sees it, instead of turning
/// into 0 and training on silently.
#[test]
fn relu_keeps_nan() {
    let mut model = ReluNet::<f64>::new(&mut StdRng::seed_from_u64(0));
    let x = kiln::ndarray::array![[f64::NAN, 1.0, -1.0, 2.0], [0.5, -0.5, 0.0, 3.0]];
    let (logits, r) = model.forward(x.view()).expect("forward");
    assert!(r[[0, 0]].is_nan());
    assert_eq!(
        r.row(0).iter().skip(1).copied().collect::<Vec<_>>(),
        [1.0, 0.0, 2.0]
    );
    assert_eq!(r.row(1).to_vec(), [0.5, 0.0, 0.0, 3.0]);
    assert!(logits.row(0).iter().all(|v| v.is_nan()));
    assert!(logits.row(1).iter().all(|v| v.is_finite()));

    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let y = kiln::ndarray::array![0usize, 1];
    let loss = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect("a NaN is a value, not an error");
    assert!(loss.is_nan());
}
