// A model with an error still declares its types and constructors beside the error, so the
// code around it type-checks and only the model's own error is reported.
kiln::model! {
    pub struct Mlp {
        input x: [B, 16];
        let h = relu(linear(x, 8));
        let out = linear(h, 2) + h;
        output out;
    }
}

#[allow(dead_code)]
fn build(
    rng: &mut kiln::rand::rngs::StdRng,
) -> (Mlp, Mlp<f64>, Option<MlpGrads>, Option<MlpWorkspace<f64>>) {
    (Mlp::new(rng), Mlp::<f64>::zeros(), None, None)
}

fn main() {}
