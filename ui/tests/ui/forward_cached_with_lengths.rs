// Decoding continues sequences position by position: lengths of the decoded sequences have
// no meaning there, so a model that reads them has no `forward_cached`.
kiln::model! {
    pub struct Padded {
        input tokens: [B, T] tokens 100;
        input len: [B] lengths T;
        let e = embedding(tokens, 16);
        let h = lstm(e, 16, lengths = len);
        let logits = linear(h, 100);
        output logits;
    }
}

fn main() {
    let model = Padded::<f32>::new(&mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0));
    let _cache = model.decoder_cache(1, 8);
}
