//! Incremental decoding (`forward_cached`): a sequence fed in pieces through the decoding cache
//! gives the outputs `forward` gives on the whole sequence, and bad calls are errors that leave
//! the cache as it was.

use kiln::ndarray::{s, Array2, Array3};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};

kiln::model! {
    /// A small GPT: token and position embeddings, two pre-norm blocks of causal attention
    /// and a GELU MLP (with dropout, inactive here), a tied head.
    struct TinyGpt {
        input tokens: [B, T] tokens 13;
        target next: [B, T] classes 13;
        let wte = embedding(tokens, 8);
        let wpe = position_embedding(tokens, 8, max_len = 12);
        let x = wte + wpe;
        let h = Block(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 13, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 2, causal = true);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let fc = dropout(gelu(linear(ln_2, 16)), p = 0.1);
            let out = x1 + linear(fc, 8);
            output out;
        }
    }
}

kiln::model! {
    /// Attention at the top level, two outputs, float inputs: also decodable.
    struct TwoHeads {
        input x: [B, T, 4];
        let a = multi_head_attention(x, heads = 1, causal = true);
        let y = softmax(linear(a, 3));
        let z = relu(a) * 2.0;
        output y, z;
    }
}

kiln::model! {
    /// A character-level recurrent language model: a two-layer LSTM, then a GRU and a relu
    /// RNN, each continuing from the states the earlier positions left.
    struct CharRnn {
        input tokens: [B, T] tokens 13;
        target next: [B, T] classes 13;
        let e = embedding(tokens, 6);
        let l = lstm(e, 5, layers = 2);
        let g = gru(l, 4);
        let r = rnn(g, 3, nonlinearity = relu);
        let logits = linear(r, 13);
        output logits;
        loss cross_entropy(logits, next);
    }
}

kiln::model! {
    /// Recurrence inside repeated blocks, beside causal attention with rotary position
    /// embeddings after an RMS norm.
    struct RecurrentBlocks {
        input tokens: [B, T] tokens 13;
        let e = embedding(tokens, 8);
        let h = Mix(e, repeat = 2);
        let logits = linear(h, 13);
        output logits;

        block Mix(x) {
            let n = rms_norm(x);
            let a = multi_head_attention(n, heads = 2, causal = true, rotary = true);
            let r = gru(x + a, 8);
            let out = x + r;
            output out;
        }
    }
}

fn tokens(rng: &mut StdRng, batch: usize, len: usize) -> Array2<usize> {
    Array2::from_shape_fn((batch, len), |_| rng.random_range(0..13))
}

fn assert_close(got: &Array3<f64>, want: &Array3<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-12,
            "{what}: element {i}: {g} against {w}"
        );
    }
}

#[test]
fn pieces_give_the_whole_sequences_outputs() {
    let mut rng = StdRng::seed_from_u64(11);
    let model = TinyGpt::<f64>::new(&mut rng);
    let ids = tokens(&mut rng, 3, 12);
    let whole = model.forward(ids.view()).unwrap();
    let mut cache = model.decoder_cache(3, 12).unwrap();
    let mut at = 0;
    for piece in [5, 1, 1, 3, 2] {
        let new = ids.slice(s![.., at..at + piece]);
        let logits = model.forward_cached(new, &mut cache).unwrap();
        let want = whole.slice(s![.., at..at + piece, ..]).to_owned();
        assert_close(&logits, &want, &format!("positions {at}..{}", at + piece));
        at += piece;
        assert_eq!(cache.len(), at);
    }
    // A cleared cache starts new sequences, here a prefix of the same ones.
    cache.clear();
    assert!(cache.is_empty());
    let again = model
        .forward_cached(ids.slice(s![.., ..4]), &mut cache)
        .unwrap();
    assert_close(
        &again,
        &whole.slice(s![.., ..4, ..]).to_owned(),
        "after clear",
    );
}

#[test]
fn several_outputs_and_float_inputs() {
    let mut rng = StdRng::seed_from_u64(2);
    let model = TwoHeads::<f64>::new(&mut rng);
    let x = Array3::from_shape_fn((2, 7, 4), |_| rng.random_range(-1.0..1.0));
    let (y, z) = model.forward(x.view()).unwrap();
    let mut cache = model.decoder_cache(2, 7).unwrap();
    let (y1, z1) = model
        .forward_cached(x.slice(s![.., ..3, ..]), &mut cache)
        .unwrap();
    let (y2, z2) = model
        .forward_cached(x.slice(s![.., 3.., ..]), &mut cache)
        .unwrap();
    assert_close(&y1, &y.slice(s![.., ..3, ..]).to_owned(), "y, first piece");
    assert_close(&z1, &z.slice(s![.., ..3, ..]).to_owned(), "z, first piece");
    assert_close(&y2, &y.slice(s![.., 3.., ..]).to_owned(), "y, second piece");
    assert_close(&z2, &z.slice(s![.., 3.., ..]).to_owned(), "z, second piece");
}

#[test]
fn bad_calls_are_errors_and_keep_the_cache() {
    let mut rng = StdRng::seed_from_u64(4);
    let model = TinyGpt::<f32>::new(&mut rng);
    let ids = tokens(&mut rng, 2, 12);
    let whole = model.forward(ids.view()).unwrap();
    let mut cache = model.decoder_cache(2, 8).unwrap();
    model
        .forward_cached(ids.slice(s![.., ..6]), &mut cache)
        .unwrap();

    let full = model
        .forward_cached(ids.slice(s![.., 6..9]), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        full.contains("holds 6 of its 8 positions, and 3 more do not fit"),
        "{full}"
    );
    let batch = model
        .forward_cached(ids.slice(s![..1, 6..7]), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(batch.contains("batches of 2 sequences"), "{batch}");
    let empty = model
        .forward_cached(ids.slice(s![.., 6..6]), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(empty.contains("T cannot be 0"), "{empty}");
    let mut bad = ids.slice(s![.., 6..7]).to_owned();
    bad[[1, 0]] = 13;
    let token = model.forward_cached(bad.view(), &mut cache).unwrap_err();
    assert!(token.to_string().contains("token id 13"), "{token}");
    assert_eq!(cache.len(), 6);

    // The cache still continues the sequences where they were.
    let next = model
        .forward_cached(ids.slice(s![.., 6..8]), &mut cache)
        .unwrap();
    let want = whole.slice(s![.., 6..8, ..]).to_owned();
    for (g, w) in next.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{g} against {w}");
    }
}

#[test]
fn a_cache_longer_than_the_position_table_is_an_error_when_made() {
    let model = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(4));
    // Its last positions could never be filled: the first position past the table would be
    // an error in the middle of a generation.
    let long = model
        .decoder_cache(2, 20)
        .err()
        .expect("too long")
        .to_string();
    assert!(
        long.contains("a capacity of 20 positions, but the model addresses at most 12"),
        "{long}"
    );
    assert!(
        long.contains("`wpe` is a position table of `max_len = 12`"),
        "{long}"
    );
    assert!(TinyGptCache::<f32>::new(2, 13).is_err());
    let mut full = model.decoder_cache(2, 12).unwrap();
    let ids = tokens(&mut StdRng::seed_from_u64(5), 2, 12);
    model.forward_cached(ids.view(), &mut full).unwrap();
    assert_eq!(full.len(), 12);

    // Without a position table, attention alone sets no limit.
    let model = TwoHeads::<f32>::new(&mut StdRng::seed_from_u64(7));
    assert!(model.decoder_cache(1, 1000).is_ok());
}

/// Feeds `ids` to `forward_cached` in pieces of the given lengths and checks each piece's
/// outputs against `whole`'s positions.
fn check_pieces(
    run: &mut dyn FnMut(kiln::ndarray::ArrayView2<usize>) -> kiln::Result<Array3<f64>>,
    ids: &Array2<usize>,
    whole: &Array3<f64>,
    pieces: &[usize],
    what: &str,
) {
    let mut at = 0;
    for &piece in pieces {
        let got = run(ids.slice(s![.., at..at + piece])).unwrap();
        let want = whole.slice(s![.., at..at + piece, ..]).to_owned();
        assert_close(
            &got,
            &want,
            &format!("{what}, positions {at}..{}", at + piece),
        );
        at += piece;
    }
}

#[test]
fn recurrent_layers_continue_from_their_states() {
    let mut rng = StdRng::seed_from_u64(21);
    let model = CharRnn::<f64>::new(&mut rng);
    let ids = tokens(&mut rng, 3, 10);
    let whole = model.forward(ids.view()).unwrap();
    let mut cache = model.decoder_cache(3, 10).unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| model.forward_cached(x, &mut cache);
    check_pieces(&mut run, &ids, &whole, &[4, 1, 1, 3, 1], "CharRnn");
    assert_eq!(cache.len(), 10);

    // Cleared, the cache starts new sequences from zero states.
    cache.clear();
    let other = tokens(&mut rng, 3, 10);
    let whole = model.forward(other.view()).unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| model.forward_cached(x, &mut cache);
    check_pieces(&mut run, &other, &whole, &[1, 9], "CharRnn after clear");

    let model = RecurrentBlocks::<f64>::new(&mut rng);
    let whole = model.forward(ids.view()).unwrap();
    let mut cache = model.decoder_cache(3, 10).unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| model.forward_cached(x, &mut cache);
    check_pieces(&mut run, &ids, &whole, &[2, 5, 1, 2], "RecurrentBlocks");
}

#[test]
fn a_failed_call_leaves_the_recurrent_states_as_they_were() {
    let mut rng = StdRng::seed_from_u64(8);
    let model = CharRnn::<f64>::new(&mut rng);
    let ids = tokens(&mut rng, 2, 9);
    let whole = model.forward(ids.view()).unwrap();
    let mut cache = model.decoder_cache(2, 9).unwrap();
    model
        .forward_cached(ids.slice(s![.., ..4]), &mut cache)
        .unwrap();
    let mut bad = ids.slice(s![.., 4..6]).to_owned();
    bad[[0, 1]] = 99;
    let err = model.forward_cached(bad.view(), &mut cache).unwrap_err();
    assert!(err.to_string().contains("token id 99"), "{err}");
    assert!(model
        .forward_cached(ids.slice(s![..1, 4..5]), &mut cache)
        .is_err());
    assert_eq!(cache.len(), 4);
    let rest = model
        .forward_cached(ids.slice(s![.., 4..9]), &mut cache)
        .unwrap();
    assert_close(
        &rest,
        &whole.slice(s![.., 4.., ..]).to_owned(),
        "after errors",
    );
}

kiln::model! {
    /// A recurrent decoder started by an encoder's states, given as inputs that are not
    /// sequences: an LSTM from `(h, c)` (PyTorch's `h_0`, `c_0`), then a GRU from states
    /// computed from the encoder's summary (a static value, computed whole at every call).
    struct StartedDecoder {
        input tokens: [B, T] tokens 13;
        input h: [2, B, 5];
        input c: [2, B, 5];
        input summary: [B, 6];
        let e = embedding(tokens, 4);
        let l = lstm(e, 5, layers = 2, h0 = h, c0 = c);
        let start = tanh(linear(summary, 3));
        let g = gru(l, 3, h0 = start);
        let logits = linear(g, 13);
        output logits;
    }
}

kiln::model! {
    /// An encoder–decoder transformer in one model: the source is encoded by attention over
    /// its real length (no causal mask: static, computed whole at every call), the decoder
    /// blocks attend causally to the target and across to the encoded source.
    struct Seq2Seq {
        input tgt: [B, T] tokens 13;
        input src: [B, S] tokens 11;
        input src_len: [B] lengths S;
        let src_tok = embedding(src, 8);
        let src_pos = position_embedding(src, 8, max_len = 9);
        let src_in = src_tok + src_pos;
        let src_norm = layer_norm(src_in);
        let enc = multi_head_attention(src_norm, heads = 2, lengths = src_len);
        let memory = layer_norm(src_in + enc);
        let tgt_tok = embedding(tgt, 8);
        let tgt_pos = position_embedding(tgt, 8, max_len = 12);
        let tgt_in = tgt_tok + tgt_pos;
        let dec = Decoder(tgt_in, memory, src_len, repeat = 2);
        let ln_f = layer_norm(dec);
        let logits = linear(ln_f, 13);
        output logits;

        block Decoder(x, memory, len) {
            let ln_1 = layer_norm(x);
            let a = multi_head_attention(ln_1, heads = 2, causal = true);
            let x1 = x + a;
            let ln_2 = layer_norm(x1);
            let cross = multi_head_attention(ln_2, memory, heads = 2, lengths = len);
            let x2 = x1 + cross;
            let ln_3 = layer_norm(x2);
            let up = gelu(linear(ln_3, 16));
            let down = linear(up, 8);
            let out = x2 + down;
            output out;
        }
    }
}

#[test]
fn a_decoder_started_by_given_states_continues_from_them() {
    let mut rng = StdRng::seed_from_u64(31);
    let model = StartedDecoder::<f64>::new(&mut rng);
    let ids = tokens(&mut rng, 3, 9);
    let mut states = |shape: (usize, usize, usize)| {
        Array3::from_shape_fn(shape, |_| rng.random_range(-1.0..1.0))
    };
    let (h, c) = (states((2, 3, 5)), states((2, 3, 5)));
    let summary = Array2::from_shape_fn((3, 6), |(b, i)| (b as f64 - i as f64) * 0.3);
    let whole = model
        .forward(ids.view(), h.view(), c.view(), summary.view())
        .unwrap();
    let mut cache = model.decoder_cache(3, 9).unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| {
        model.forward_cached(x, h.view(), c.view(), summary.view(), &mut cache)
    };
    check_pieces(&mut run, &ids, &whole, &[3, 1, 1, 4], "StartedDecoder");

    // Cleared, the cache starts new sequences from the states given then.
    cache.clear();
    let (h2, c2) = (h.mapv(|v| -v), c.mapv(|v| 0.5 * v));
    let whole = model
        .forward(ids.view(), h2.view(), c2.view(), summary.view())
        .unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| {
        model.forward_cached(x, h2.view(), c2.view(), summary.view(), &mut cache)
    };
    check_pieces(
        &mut run,
        &ids,
        &whole,
        &[1, 8],
        "StartedDecoder after clear",
    );
}

#[test]
fn an_encoder_decoder_decodes_the_target_against_the_whole_source() {
    let mut rng = StdRng::seed_from_u64(41);
    let model = Seq2Seq::<f64>::new(&mut rng);
    let tgt = tokens(&mut rng, 3, 10);
    let src = Array2::from_shape_fn((3, 7), |_| rng.random_range(1..11));
    let src_len = kiln::ndarray::Array1::from(vec![7usize, 3, 5]);
    let whole = model
        .forward(tgt.view(), src.view(), src_len.view())
        .unwrap();
    let mut cache = model.decoder_cache(3, 10).unwrap();
    let mut run = |x: kiln::ndarray::ArrayView2<usize>| {
        model.forward_cached(x, src.view(), src_len.view(), &mut cache)
    };
    check_pieces(&mut run, &tgt, &whole, &[4, 1, 1, 2, 2], "Seq2Seq");
    assert_eq!(cache.len(), 10);

    // The encoder runs at the first position only, and later calls read what the cache kept
    // of it: a source other than the first call's (other tokens, other lengths, another
    // length of source) is an error that leaves the cache as it was.
    let mut cache = model.decoder_cache(3, 10).unwrap();
    model
        .forward_cached(
            tgt.slice(s![.., ..3]),
            src.view(),
            src_len.view(),
            &mut cache,
        )
        .unwrap();
    let kept = model
        .forward_cached(
            tgt.slice(s![.., 3..5]),
            src.view(),
            src_len.view(),
            &mut cache,
        )
        .unwrap();
    assert_close(
        &kept,
        &whole.slice(s![.., 3..5, ..]).to_owned(),
        "kept encoder",
    );
    let mut other = src.clone();
    other[[1, 2]] = 1 + other[[1, 2]] % 10;
    let short = src.slice(s![.., ..5]).to_owned();
    let shorter = src_len.mapv(|l| l.min(5));
    let wrong_sources = [
        (
            other.view(),
            src_len.view(),
            "`src` differs",
            "at element 9",
        ),
        (
            src.view(),
            shorter.view(),
            "`src_len` differs",
            "at element 0",
        ),
        (
            short.view(),
            shorter.view(),
            "`src` has 15 elements",
            "had 21",
        ),
    ];
    for (source, lengths, what, detail) in wrong_sources {
        let err = model
            .forward_cached(tgt.slice(s![.., 5..6]), source, lengths, &mut cache)
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(what) && message.contains(detail),
            "{message}"
        );
        assert!(message.contains("`clear()`"), "{message}");
        assert_eq!(cache.len(), 5);
    }
    let rest = model
        .forward_cached(
            tgt.slice(s![.., 5..]),
            src.view(),
            src_len.view(),
            &mut cache,
        )
        .unwrap();
    assert_close(
        &rest,
        &whole.slice(s![.., 5.., ..]).to_owned(),
        "after the error",
    );
    // The capacity counts target positions only: the source's position table is not the
    // decoder's limit.
    assert!(model.decoder_cache(3, 12).is_ok());
    assert!(model.decoder_cache(3, 13).is_err());
}
