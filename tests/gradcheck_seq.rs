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
