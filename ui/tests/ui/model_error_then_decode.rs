// A sequence model with a shape error, sampled from by code that uses its decoding cache
// (`decoder_cache`, `forward_cached`, the cache's own methods): only the DSL error may be
// reported.
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;

kiln::model! {
    pub struct TinyGpt {
        input tokens: [B, T] tokens 32;
        let h = embedding(tokens, 16);
        let a = multi_head_attention(h, heads = 3, causal = true);
        let logits = linear(h + a, 32);
        output logits;
    }
}

fn main() -> kiln::Result<()> {
    let model = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(0));
    let mut cache = model.decoder_cache(1, 16)?;
    let prompt = kiln::ndarray::array![[1usize, 2, 3]];
    let logits = model.forward_cached(prompt.view(), &mut cache)?;
    assert_eq!(logits.shape(), [1, 3, 32]);
    if cache.len() == cache.capacity() || cache.is_empty() || cache.batch() != 1 {
        cache.clear();
    }
    Ok(())
}
