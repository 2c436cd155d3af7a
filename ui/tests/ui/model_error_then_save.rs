// A model without a loss and with an unknown name, whose value is saved, loaded and stepped
// by an optimizer: only the DSL error may be reported.
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::{Model, Optimizer, Sgd};

kiln::model! {
    pub struct Features {
        input x: [B, 4];
        let h = relu(linear(x, 8));
        output hh;
    }
}

fn main() -> kiln::Result<()> {
    let mut model = Features::<f64>::new(&mut StdRng::seed_from_u64(0));
    println!("{} parameters\n{}", model.num_params(), model.summary());
    let grads = Model::zero_grads(&model);
    Sgd::new(0.1).step(&mut model, &grads);
    kiln::io::save(&model, "features.safetensors")?;
    kiln::io::load(&mut model, "features.safetensors")?;
    Ok(())
}
