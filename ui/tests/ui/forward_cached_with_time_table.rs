// Incremental decoding reads only the new positions of the sequence inputs and the whole of
// the others (an encoder's states, its output): an input that depends on the time axis
// without being a sequence [B, T, ...] could be neither, so the model has no `forward_cached`.
kiln::model! {
    pub struct Positions {
        input tokens: [B, T] tokens 100;
        input table: [B, 4, T];
        let e = embedding(tokens, 16);
        let mixed = matmul(table, e);
        output mixed;
    }
}

fn main() {
    let model = Positions::<f32>::new(&mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0));
    let _cache = model.decoder_cache(1, 8);
}
