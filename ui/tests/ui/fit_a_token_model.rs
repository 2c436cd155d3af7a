// `Trainer::fit` drives models with one float input and one label per sample; a text
// classifier reading token ids trains with `Trainer::fit_batches`, and the error says so.
use kiln::train::Trainer;

kiln::model! {
    pub struct TextClassifier {
        input tokens: [B, 8] tokens 50;
        target y: [B] classes 3;
        let e = embedding(tokens, 16);
        let pooled = mean(e, axis = 1);
        let logits = linear(pooled, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() {
    let mut rng = <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0);
    let mut model = TextClassifier::<f32>::new(&mut rng);
    let mut optimizer = kiln::Adam::new(1e-3);
    let data = kiln::data::TensorDataset::<f32>::with_labels(
        kiln::ndarray::Array2::zeros((4, 8)),
        kiln::ndarray::Array1::zeros(4),
        3,
    )
    .expect("a data set");
    let _ = Trainer::new(1, 4).fit(&mut model, &mut optimizer, &data);
}
