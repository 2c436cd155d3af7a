// Incremental decoding needs ops that work position by position or continue a sequence: a
// bidirectional LSTM's reverse direction reads each sequence from its end, so the model has
// no `forward_cached` (a one-direction LSTM continues from its states).
kiln::model! {
    pub struct Tagger {
        input tokens: [B, T] tokens 100;
        let e = embedding(tokens, 16);
        let h = lstm(e, 16, bidirectional = true);
        let tags = linear(h, 5);
        output tags;
    }
}

fn main() {
    let model = Tagger::<f32>::new(&mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0));
    let mut cache = model.decoder_cache(1, 32);
}
