// Attention without the causal mask lets every position see later ones: decoding new positions
// after cached ones would change the earlier outputs, so the model has no `forward_cached`.
kiln::model! {
    pub struct Encoder {
        input tokens: [B, T] tokens 100;
        let e = embedding(tokens, 16);
        let a = multi_head_attention(e, heads = 2);
        let logits = linear(a, 100);
        output logits;
    }
}

fn main() {
    let model = Encoder::<f32>::new(&mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0));
    let tokens = kiln::ndarray::Array2::<usize>::zeros((1, 4));
    let logits = model.forward_cached(tokens.view(), ());
}
