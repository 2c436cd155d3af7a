// `Trainer::fit_batches` trains models that declare a loss; a model with only outputs is
// refused, with what to add.
use kiln::train::Trainer;

kiln::model! {
    pub struct Encoder {
        input tokens: [B, T] tokens 50;
        let e = embedding(tokens, 16);
        let pooled = mean(e, axis = 1);
        output pooled;
    }
}

/// Windows of token ids.
struct Windows;

impl kiln::data::BatchSource<f32> for Windows {
    fn len(&self) -> usize {
        10
    }
    fn served(&self) -> Vec<kiln::data::ServedArg> {
        let tokens = kiln::data::ServedKind::Tokens { vocab: Some(50) };
        vec![kiln::data::ServedArg::new("tokens", tokens, 2)]
    }
    fn fill(&self, indices: &[usize], batch: &mut Vec<kiln::BatchArray<f32>>) -> kiln::Result<()> {
        let ids = kiln::ndarray::ArrayD::zeros(vec![indices.len(), 8]);
        *batch = vec![kiln::BatchArray::Ids(ids)];
        Ok(())
    }
}

fn main() {
    let mut rng = <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0);
    let mut model = Encoder::<f32>::new(&mut rng);
    let mut optimizer = kiln::Adam::new(1e-3);
    let _ = Trainer::new(1, 4).fit_batches(&mut model, &mut optimizer, &Windows);
}
