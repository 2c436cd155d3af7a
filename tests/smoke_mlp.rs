use kiln::ndarray::{Array1, Array2};
use kiln::rand::SeedableRng;
use kiln::Model;

kiln::model! {
    /// An MLP.
    pub struct Mlp {
        input x: [B, 12];
        target y: [B] classes 3;
        let h1 = relu(linear(x, 8));
        let h2 = tanh(linear(h1, 6));
        let logits = linear(h2, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn smoke() {
    let mut rng = kiln::rand::rngs::StdRng::seed_from_u64(0);
    let model = Mlp::<f64>::new(&mut rng);
    let x = Array2::from_shape_fn((5, 12), |(i, j)| ((i * 7 + j * 3) % 11) as f64 / 11.0 - 0.5);
    let y = Array1::from(vec![0usize, 1, 2, 1, 0]);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let loss = model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    println!("{loss} {}", model.summary());
    println!("{}", model.graph());
    let mut m2 = model.clone();
    let report = kiln::check::gradient_check(
        &mut m2,
        &grads,
        |m: &Mlp<f64>| {
            let mut ws = m.workspace();
            m.loss(x.view(), y.view(), &mut ws).unwrap()
        },
        1e-6,
    );
    report.assert_within(1e-6, 1e-9);
}
