// A model with a shape error, driven by code that needs `kiln::Model`, `kiln::Supervised` and
// `kiln::Trainable` (an optimizer step, `io::save`, `Trainer::fit`, `Trainer::fit_batches`):
// only the DSL error may be reported.
use kiln::data::TensorDataset;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::Trainer;
use kiln::{Adam, Optimizer};

kiln::model! {
    pub struct Broken {
        input x: [B, 4];
        target y: [B, 3];
        let h = linear(x, 8);
        let bad = h + x;
        let pred = linear(bad, 3);
        output pred;
        loss mse(pred, y);
    }
}

/// A batch source with no samples.
struct NoBatches;

impl kiln::data::BatchSource<f32> for NoBatches {
    fn len(&self) -> usize {
        0
    }
    fn served(&self) -> Vec<kiln::data::ServedArg> {
        Vec::new()
    }
    fn fill(&self, _: &[usize], _: &mut Vec<kiln::BatchArray<f32>>) -> kiln::Result<()> {
        Ok(())
    }
}

fn main() -> kiln::Result<()> {
    let mut model = Broken::<f32>::new(&mut StdRng::seed_from_u64(0));
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    let x = kiln::ndarray::Array2::<f32>::zeros((2, 4));
    let y = kiln::ndarray::Array2::<f32>::zeros((2, 3));
    model.loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)?;
    let mut opt = Adam::new(1e-3);
    opt.step(&mut model, &grads);
    kiln::io::save(&model, "broken.safetensors")?;
    let data = TensorDataset::with_values(x, y)?;
    Trainer::new(1, 2).fit(&mut model, &mut opt, &data)?;
    Trainer::new(1, 2).fit_batches(&mut model, &mut opt, &NoBatches)?;
    Ok(())
}
