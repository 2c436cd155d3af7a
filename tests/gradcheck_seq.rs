//! Sequence models' generated backward passes against central finite differences, in f64:
//! rank-3 values through the dense ops, blocks applied as a chain, token embeddings, tied
//! heads, attention and recurrence.

use kiln::ndarray::{Array, Array2, Dimension, IntoDimension};
use kiln::rand::rngs::StdRng;
use kiln::rand::{Rng, SeedableRng};
use kiln::Model;

const EPS: f64 = 1e-6;
const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-9;

fn random<D: IntoDimension>(rng: &mut StdRng, shape: D, lo: f64, hi: f64) -> Array<f64, D::Dim>
where
    D::Dim: Dimension,
{
    Array::from_shape_simple_fn(shape, || rng.random_range(lo..hi))
}

fn ids(rng: &mut StdRng, shape: (usize, usize), below: usize) -> Array2<usize> {
    Array2::from_shape_simple_fn(shape, || rng.random_range(0..below))
}

fn check<M: Model<f64> + Clone>(model: &M, grads: &M::Grads, loss: impl FnMut(&M) -> f64) {
    let mut probe = model.clone();
    let report = kiln::check::gradient_check(&mut probe, grads, loss, EPS);
    report.assert_within(RTOL, ATOL);
}

kiln::model! {
    /// Two pre-norm residual blocks over [B, T, 8].
    struct Stack {
        input x: [B, T, 8];
        target y: [B, T, 3];
        let h = Mlp(x, repeat = 2);
        let pred = linear(h, 3);
        output pred;
        loss mse(pred, y);

        block Mlp(x) {
            let ln = layer_norm(x);
            let up = gelu(linear(ln, 16));
            let down = linear(up, 8);
            let out = x + down;
            output out;
        }
    }
}

#[test]
fn a_chain_of_two_blocks() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Stack::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 3, 8), -1.0, 1.0);
    let y = random(&mut rng, (2, 3, 3), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    let names: Vec<&str> = {
        let mut v = Vec::new();
        model.visit_params(&mut |n, _| v.push(n));
        v
    };
    assert_eq!(names[0], "h.0.ln.weight");
    assert!(names.contains(&"h.1.down.bias"));
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// Token and position embeddings, a 2-block stack and a head tied to the token table,
    /// trained on next tokens with the padding id ignored.
    struct TinyLm {
        input tokens: [B, T] tokens 11;
        target next: [B, T] classes 11;
        let wte = embedding(tokens, 6, padding_idx = 0);
        let wpe = position_embedding(tokens, 6, max_len = 8);
        let x = wte + wpe;
        let h = Mlp(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 11, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next, ignore_index = 0);

        block Mlp(x) {
            let ln = layer_norm(x);
            let up = tanh(linear(ln, 12));
            let down = linear(up, 6);
            let out = x + down;
            output out;
        }
    }
}

#[test]
fn embeddings_blocks_and_a_tied_head() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = TinyLm::<f64>::new(&mut rng);
    assert!(model.wte.weight.row(0).iter().all(|&v| v == 0.0), "padding row starts at zero");
    let tokens = ids(&mut rng, (2, 5), 11);
    let mut next = ids(&mut rng, (2, 5), 11);
    next[[0, 1]] = 0;
    next[[1, 4]] = 0;
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .unwrap();
    // Row 0 still has a gradient here: the tied head scores class 0 with it (only the
    // lookup of padding positions gives it none, as in PyTorch).
    check(&model, &grads, |m| {
        m.loss(tokens.view(), next.view(), &mut m.workspace()).unwrap()
    });
    // The head owns no weight: the model's parameters are the embedding tables and blocks.
    let mut names = Vec::new();
    model.visit_params(&mut |n, _| names.push(n));
    assert!(!names.iter().any(|n| n.starts_with("logits")), "{names:?}");
    assert_eq!(model.tied_names(), &[("logits.weight", "wte.weight")]);
}

#[test]
fn token_ids_out_of_the_vocabulary_are_an_error() {
    let mut rng = StdRng::seed_from_u64(6);
    let model = TinyLm::<f32>::new(&mut rng);
    let mut tokens = ids(&mut rng, (2, 5), 11);
    tokens[[1, 3]] = 11;
    let err = model.forward(tokens.view()).unwrap_err().to_string();
    assert!(
        err.contains("`tokens`") && err.contains("token id 11 at position [1, 3]"),
        "{err}"
    );
    let long = ids(&mut rng, (1, 9), 11);
    let err = model.forward(long.view()).unwrap_err().to_string();
    assert!(err.contains("max_len = 8"), "{err}");
}
