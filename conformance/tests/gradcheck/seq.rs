//! Sequence models' generated backward passes against central finite differences, in f64:
//! rank-3 values through the dense ops, blocks applied as a chain (with batch norm inside
//! them, in training mode), token embeddings, tied
//! heads, attention and recurrence.

use super::{check, random};
use kiln::ndarray::Array2;
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::Model;

fn ids(rng: &mut StdRng, shape: (usize, usize), below: usize) -> Array2<usize> {
    Array2::from_shape_simple_fn(shape, || rng.random_range(0..below))
}

kiln::model! {
    /// LLaMA-style blocks (the README's, with LLaMA 3's rotary base): RMS-normed causal
    /// attention with rotary position embeddings and no biases, a SwiGLU MLP, residuals; a
    /// final RMS norm without a weight (and PyTorch's default eps, the float type's).
    struct RmsBlocks {
        input x: [B, T, 8];
        target y: [B, T, 3];
        let h = Block(x, repeat = 2);
        let norm = rms_norm(h, elementwise_affine = false);
        let pred = linear(norm, 3);
        output pred;
        loss mse(pred, y);

        block Block(x) {
            let attn_norm = rms_norm(x, eps = 1e-6);
            let a = multi_head_attention(
                attn_norm, heads = 2, causal = true, bias = false, rotary = true, rotary_base = 500000
            );
            let x1 = x + a;
            let mlp_norm = rms_norm(x1);
            let gate = linear(mlp_norm, 12, bias = false);
            let up = linear(mlp_norm, 12, bias = false);
            let down = linear(silu(gate) * up, 8, bias = false);
            let out = x1 + down;
            output out;
        }
    }
}

#[test]
fn llama_style_blocks_rms_norms_and_rotary_attention() {
    let mut rng = StdRng::seed_from_u64(31);
    let mut model = RmsBlocks::<f64>::new(&mut rng);
    // Weights away from 1, so that their gradients are checked off the starting point.
    model.visit_params_mut(&mut |name, mut p| {
        if name.contains("norm") {
            p.iter_mut()
                .enumerate()
                .for_each(|(i, w)| *w = 0.6 + 0.1 * i as f64);
        }
    });
    let x = random(&mut rng, (2, 4, 8), -1.0, 1.0);
    let y = random(&mut rng, (2, 4, 3), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    let names: Vec<&str> = {
        let mut v = Vec::new();
        model.visit_params(&mut |n, _| v.push(n));
        v
    };
    assert!(names.contains(&"h.1.mlp_norm.weight"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("norm")), "{names:?}");
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// Two residual blocks with batch norm: training mode uses the batch's statistics and
    /// updates each block's running statistics, which are saved under the blocks' names.
    struct NormedStack {
        input x: [B, 6];
        target y: [B, 2];
        let h = Stage(x, repeat = 2);
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, y);

        block Stage(x) {
            let z = linear(x, 6);
            let n = batch_norm(z);
            let out = x + tanh(n);
            output out;
        }
    }
}

#[test]
fn blocks_with_batch_norm_in_training_mode() {
    let mut rng = StdRng::seed_from_u64(12);
    let model = NormedStack::<f64>::new(&mut rng);
    let x = random(&mut rng, (5, 6), -1.0, 1.0);
    let y = random(&mut rng, (5, 2), -1.0, 1.0);
    let after = super::check_training_mode(&model, &[super::floats(&x), super::floats(&y)]);
    let mut buffers = Vec::new();
    after.visit_buffers(&mut |name, v| buffers.push((name, v.to_owned())));
    let names: Vec<&str> = buffers.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "h.0.n.running_mean",
            "h.0.n.running_var",
            "h.1.n.running_mean",
            "h.1.n.running_var"
        ]
    );
    let mut before = Vec::new();
    model.visit_buffers(&mut |_, v| before.push(v.to_owned()));
    for ((name, v), old) in buffers.iter().zip(&before) {
        assert_ne!(v, old, "training updates `{name}`");
    }
    // The blocks' statistics are saved and loaded with the weights.
    let path = std::env::temp_dir().join(format!(
        "kiln-normed-stack-{}.safetensors",
        std::process::id()
    ));
    kiln::io::save(&after, &path).expect("save");
    let mut loaded = NormedStack::<f64>::new(&mut rng);
    kiln::io::load(&mut loaded, &path).expect("load");
    std::fs::remove_file(&path).ok();
    let mut reloaded = Vec::new();
    loaded.visit_buffers(&mut |_, v| reloaded.push(v.to_owned()));
    assert!(buffers.iter().map(|(_, v)| v).eq(reloaded.iter()));
}

kiln::model! {
    /// Two pre-norm residual blocks over [B, T, 8].
    struct Stack {
        input x: [B, T, 8];
        target y: [B, T, 3];
        let h = Mlp(x, repeat = 2);
        let pred = linear(h, 3);
        output pred;
        loss mse(pred, y);

        block Mlp(x) {
            let ln = layer_norm(x);
            let up = gelu(linear(ln, 16));
            let down = linear(up, 8);
            let out = x + down;
            output out;
        }
    }
}

#[test]
fn a_chain_of_two_blocks() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Stack::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 3, 8), -1.0, 1.0);
    let y = random(&mut rng, (2, 3, 3), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    let names: Vec<&str> = {
        let mut v = Vec::new();
        model.visit_params(&mut |n, _| v.push(n));
        v
    };
    assert_eq!(names[0], "h.0.ln.weight");
    assert!(names.contains(&"h.1.down.bias"));
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// Token and position embeddings, a 2-block stack and a head tied to the token table,
    /// trained on next tokens with the padding id ignored.
    struct TinyLm {
        input tokens: [B, T] tokens 11;
        target next: [B, T] classes 11;
        let wte = embedding(tokens, 6, padding_idx = 0);
        let wpe = position_embedding(tokens, 6, max_len = 8);
        let x = wte + wpe;
        let h = Mlp(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 11, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next, ignore_index = 0);

        block Mlp(x) {
            let ln = layer_norm(x);
            let up = tanh(linear(ln, 12));
            let down = linear(up, 6);
            let out = x + down;
            output out;
        }
    }
}

#[test]
fn embeddings_blocks_and_a_tied_head() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = TinyLm::<f64>::new(&mut rng);
    assert!(
        model.wte.weight.row(0).iter().all(|&v| v == 0.0),
        "padding row starts at zero"
    );
    let tokens = ids(&mut rng, (2, 5), 11);
    let mut next = ids(&mut rng, (2, 5), 11);
    next[[0, 1]] = 0;
    next[[1, 4]] = 0;
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .unwrap();
    // Row 0 still has a gradient here: the tied head scores class 0 with it (only the
    // lookup of padding positions gives it none, as in PyTorch).
    check(&model, &grads, |m| {
        m.loss(tokens.view(), next.view(), &mut m.workspace())
            .unwrap()
    });
    // The head owns no weight: the model's parameters are the embedding tables and blocks.
    let mut names = Vec::new();
    model.visit_params(&mut |n, _| names.push(n));
    assert!(!names.iter().any(|n| n.starts_with("logits")), "{names:?}");
    assert_eq!(model.tied_names(), &[("logits.weight", "wte.weight")]);
}

#[test]
fn token_ids_out_of_the_vocabulary_are_an_error() {
    let mut rng = StdRng::seed_from_u64(6);
    let model = TinyLm::<f32>::new(&mut rng);
    let mut tokens = ids(&mut rng, (2, 5), 11);
    tokens[[1, 3]] = 11;
    let err = model.forward(tokens.view()).unwrap_err().to_string();
    assert!(
        err.contains("`tokens`") && err.contains("token id 11 at position [1, 3]"),
        "{err}"
    );
    let long = ids(&mut rng, (1, 9), 11);
    let err = model.forward(long.view()).unwrap_err().to_string();
    assert!(err.contains("max_len = 8"), "{err}");
}

kiln::model! {
    /// Causal self-attention, then cross-attention to a memory with padded keys.
    struct Attend {
        input x: [B, T, 8];
        input memory: [B, S, 8];
        input memory_len: [B] lengths S;
        target y: [B, T, 8];
        let self_attn = multi_head_attention(x, heads = 2, causal = true);
        let h = x + self_attn;
        let cross = multi_head_attention(h, memory, heads = 4, lengths = memory_len);
        let pred = linear(cross, 8);
        output pred;
        loss mse(pred, y);
    }
}

#[test]
fn self_and_cross_attention() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Attend::<f64>::new(&mut rng);
    for b in [
        &mut model.self_attn.in_proj_bias,
        &mut model.cross.in_proj_bias,
    ] {
        // Non-zero biases, so that their gradients are tested too.
        if let Some(b) = b.as_mut() {
            b.mapv_inplace(|_| rng.random_range(-0.5..0.5));
        }
    }
    let x = random(&mut rng, (2, 4, 8), -1.0, 1.0);
    let memory = random(&mut rng, (2, 5, 8), -1.0, 1.0);
    let lengths = kiln::ndarray::array![5usize, 2];
    let y = random(&mut rng, (2, 4, 8), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(
            x.view(),
            memory.view(),
            lengths.view(),
            y.view(),
            &mut ws,
            &mut grads,
        )
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(
            x.view(),
            memory.view(),
            lengths.view(),
            y.view(),
            &mut m.workspace(),
        )
        .unwrap()
    });
}

kiln::model! {
    /// An encoder–decoder: blocks with extra inputs (the encoder's key lengths; the decoder's
    /// memory and its lengths), repeated, the memory's length `S` declared before the
    /// decoder's `T`.
    struct EncDec {
        input src: [B, S, 8];
        input src_len: [B] lengths S;
        input tgt: [B, T, 8];
        target y: [B, T, 8];
        let enc = Enc(src, src_len, repeat = 2);
        let dec = Dec(tgt, enc, src_len, repeat = 2);
        let pred = linear(dec, 8);
        output pred;
        loss mse(pred, y);

        block Enc(x, len) {
            let attn = multi_head_attention(x, heads = 2, lengths = len);
            let out = x + attn;
            output out;
        }

        block Dec(x, memory, len) {
            let self_attn = multi_head_attention(x, heads = 2, causal = true);
            let x1 = x + self_attn;
            let cross = multi_head_attention(x1, memory, heads = 2, lengths = len);
            let out = x1 + cross;
            output out;
        }
    }
}

#[test]
fn blocks_with_extra_inputs_over_two_sequence_lengths() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut model = EncDec::<f64>::new(&mut rng);
    let src = random(&mut rng, (2, 5, 8), -1.0, 1.0);
    let src_len = kiln::ndarray::array![5usize, 2];
    let tgt = random(&mut rng, (2, 3, 8), -1.0, 1.0);
    let y = random(&mut rng, (2, 3, 8), -1.0, 1.0);
    let pred = model
        .forward(src.view(), src_len.view(), tgt.view())
        .unwrap();
    assert_eq!(pred.shape(), [2, 3, 8]);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(
            src.view(),
            src_len.view(),
            tgt.view(),
            y.view(),
            &mut ws,
            &mut grads,
        )
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(
            src.view(),
            src_len.view(),
            tgt.view(),
            y.view(),
            &mut m.workspace(),
        )
        .unwrap()
    });
    // Past position 2: the first source changes, the second only in its padding, which
    // no query sees.
    let mut other = src.clone();
    other
        .slice_mut(kiln::ndarray::s![.., 2.., ..])
        .mapv_inplace(|v| v + 1.0);
    let again = model
        .forward(other.view(), src_len.view(), tgt.view())
        .unwrap();
    let diff = (&again - &pred).mapv(f64::abs);
    assert!(diff
        .slice(kiln::ndarray::s![1, .., ..])
        .iter()
        .all(|&d| d < 1e-12));
    assert!(diff
        .slice(kiln::ndarray::s![0, .., ..])
        .iter()
        .any(|&d| d > 1e-6));
}

kiln::model! {
    /// A 2-layer bidirectional LSTM over padded sequences, a GRU over its outputs, and a
    /// classifier on the GRU's final state.
    struct Recur {
        input x: [B, T, 3];
        input len: [B] lengths T;
        target y: [B] classes 2;
        let seq = lstm(x, 2, layers = 2, bidirectional = true, lengths = len);
        let last = gru(seq, 3, bidirectional = true, lengths = len, final_state = true);
        let logits = linear(last, 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// A training step of a classifier over padded sequences `x`, `len` with labels `y`, whose
/// first layer `seq` is a bidirectional recurrence: its parameters carry PyTorch's names, in
/// `state_dict` order, and every gradient matches central differences of the loss.
macro_rules! check_padded_classifier {
    ($model:expr, $x:expr, $len:expr, $y:expr) => {{
        let (model, x, len, y) = (&mut $model, &$x, &$len, &$y);
        let mut grads = model.zero_grads();
        let mut ws = model.workspace();
        model
            .loss_and_grad(x.view(), len.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        let mut names = Vec::new();
        model.visit_params(&mut |n, _| names.push(n));
        assert_eq!(
            &names[..5],
            [
                "seq.weight_ih_l0",
                "seq.weight_hh_l0",
                "seq.bias_ih_l0",
                "seq.bias_hh_l0",
                "seq.weight_ih_l0_reverse"
            ]
        );
        check(&*model, &grads, |m| {
            m.loss(x.view(), len.view(), y.view(), &mut m.workspace())
                .unwrap()
        });
    }};
}

#[test]
fn lstm_and_gru_over_padded_sequences() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut model = Recur::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 4, 3), -1.0, 1.0);
    let len = kiln::ndarray::array![4usize, 1, 3];
    let y = kiln::ndarray::array![1usize, 0, 1];
    check_padded_classifier!(model, x, len, y);
    let bad = kiln::ndarray::array![4usize, 0, 3];
    let err = model.forward(x.view(), bad.view()).unwrap_err().to_string();
    assert!(
        err.contains("`len`") && err.contains("length 0 at position 1"),
        "{err}"
    );
}

kiln::model! {
    /// A 2-layer bidirectional relu RNN over padded sequences, a tanh RNN over its outputs,
    /// and a classifier on the tanh RNN's final state.
    struct PlainRecur {
        input x: [B, T, 3];
        input len: [B] lengths T;
        target y: [B] classes 2;
        let seq = rnn(x, 4, layers = 2, bidirectional = true, nonlinearity = relu, lengths = len);
        let last = rnn(seq, 3, lengths = len, final_state = true);
        let logits = linear(last, 2);
        output logits, seq;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn plain_rnns_over_padded_sequences() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut model = PlainRecur::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 5, 3), -1.0, 1.0);
    let len = kiln::ndarray::array![5usize, 2, 4];
    let y = kiln::ndarray::array![1usize, 0, 1];
    check_padded_classifier!(model, x, len, y);
    // The relu layer has units at zero (where its gradient is cut) within the full-length
    // sequence, not only positive ones.
    let (_, seq) = model.forward(x.view(), len.view()).unwrap();
    let full = seq.slice(kiln::ndarray::s![0, .., ..]);
    assert!(full.iter().any(|&v| v == 0.0) && full.iter().any(|&v| v > 0.0));
}

kiln::model! {
    /// PyTorch's seq2seq tutorial's shape: an encoder GRU's final state starts the decoder
    /// GRU (`decoder(tgt, h_0 = encoder_hidden)`), and a two-layer bidirectional LSTM with
    /// dropout between its layers starts from given states `[L·D, B, H]` over padded
    /// sequences.
    struct Seq2Seq {
        input src: [B, S, 3];
        input tgt: [B, T, 2];
        input len: [B] lengths T;
        input h: [4, B, 3];
        input c: [4, B, 3];
        target y: [B, T, 2];
        let enc = gru(src, 4, final_state = true);
        let dec = gru(tgt, 4, h0 = enc);
        let h_start = linear(h, 3);
        let c_start = linear(c, 3);
        let deep = lstm(dec, 3, layers = 2, bidirectional = true, lengths = len, h0 = h_start, c0 = c_start, dropout = 0.3);
        let pred = linear(deep, 2);
        output pred;
        loss mse(pred, y);
    }
}

/// Gradients reach the encoder through the decoder's initial state, and the layers that
/// make the LSTM's initial states through them, every one matching central differences.
#[test]
fn initial_states_carry_gradients_back_to_the_encoder() {
    let mut rng = StdRng::seed_from_u64(12);
    let model = Seq2Seq::<f64>::new(&mut rng);
    let src = random(&mut rng, (2, 5, 3), -1.0, 1.0);
    let tgt = random(&mut rng, (2, 4, 2), -1.0, 1.0);
    let len = kiln::ndarray::array![4usize, 2];
    let h = random(&mut rng, (4, 2, 3), -1.0, 1.0);
    let c = random(&mut rng, (4, 2, 3), -1.0, 1.0);
    let y = random(&mut rng, (2, 4, 2), -1.0, 1.0);
    // A training step with the dropout masks of a fixed seed: a deterministic function of
    // the parameters and the given states.
    let train = |m: &Seq2Seq<f64>, h: &kiln::ndarray::Array3<f64>| {
        let mut m = m.clone();
        let mut ws = m.workspace();
        ws.seed(7);
        let mut grads = m.zero_grads();
        let views = (
            src.view(),
            tgt.view(),
            len.view(),
            h.view(),
            c.view(),
            y.view(),
        );
        let (src, tgt, len, h, c, y) = views;
        let l = m
            .loss_and_grad(src, tgt, len, h, c, y, &mut ws, &mut grads)
            .unwrap();
        (l, grads)
    };
    let loss = |m: &Seq2Seq<f64>, h: &kiln::ndarray::Array3<f64>| train(m, h).0;
    let (l, grads) = train(&model, &h);
    assert_eq!(l, loss(&model, &h));
    let inference = model.loss(
        src.view(),
        tgt.view(),
        len.view(),
        h.view(),
        c.view(),
        y.view(),
        &mut model.workspace(),
    );
    assert_ne!(
        inference.unwrap(),
        l,
        "the dropout is active in training only"
    );
    // The encoder's weights get gradients only through the decoder's initial state, the
    // start layers' only through the LSTM's.
    let mut through_states = [0.0; 3];
    <Seq2Seq<f64> as Model<f64>>::visit_grads(&grads, &mut |name, g| {
        let at = ["enc.", "h_start.", "c_start."]
            .iter()
            .position(|p| name.starts_with(p));
        if let Some(at) = at {
            through_states[at] += g.iter().map(|v| v.abs()).sum::<f64>();
        }
    });
    assert!(
        through_states.iter().all(|&g| g > 1e-3),
        "{through_states:?}"
    );
    check(&model, &grads, |m| loss(m, &h));
    // Other given states, another loss.
    let h2 = h.mapv(|v| v * 0.5);
    assert_ne!(loss(&model, &h2), loss(&model, &h));
}

kiln::model! {
    /// Dropout between the layers of a bidirectional LSTM over padded sequences and of a
    /// three-layer GRU, as PyTorch's `dropout` argument.
    struct DroppedRecur {
        input x: [B, T, 3];
        input len: [B] lengths T;
        target y: [B] classes 2;
        let seq = lstm(x, 3, layers = 2, bidirectional = true, lengths = len, dropout = 0.5);
        let last = gru(seq, 3, layers = 3, dropout = 0.3, final_state = true);
        let logits = linear(last, 2);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// In training, the masks are drawn from the workspace's seed: the same seed gives the same
/// loss, so the gradients are those of a deterministic function; inference has no dropout.
#[test]
fn dropout_between_recurrent_layers_follows_the_seed() {
    let mut rng = StdRng::seed_from_u64(10);
    let model = DroppedRecur::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 4, 3), -1.0, 1.0);
    let len = kiln::ndarray::array![4usize, 2, 3];
    let y = kiln::ndarray::array![1usize, 0, 1];
    let train = |m: &DroppedRecur<f64>, seed: u64| {
        let mut m = m.clone();
        let mut ws = m.workspace();
        ws.seed(seed);
        let mut grads = m.zero_grads();
        let loss = m
            .loss_and_grad(x.view(), len.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        (loss, grads)
    };
    let (loss, grads) = train(&model, 42);
    assert_eq!(train(&model, 42).0, loss);
    assert_ne!(
        train(&model, 43).0,
        loss,
        "another seed drops other outputs"
    );
    let inference = model.loss(x.view(), len.view(), y.view(), &mut model.workspace());
    assert_ne!(
        inference.unwrap(),
        loss,
        "dropout is active in training only"
    );
    check(&model, &grads, |m| train(m, 42).0);
}

kiln::model! {
    /// Attention written out with the tensor ops, pooled three ways.
    struct Explicit {
        input x: [B, T, 4];
        input len: [B] lengths T;
        target y: [B, 3];
        let q = linear(x, 4);
        let k = linear(x, 4);
        let v = linear(x, 4);
        let kt = transpose(k, -2, -1);
        let scores = matmul(q, kt) * 0.5;
        let p = softmax(causal_mask(scores));
        let o = matmul(p, v);
        let pooled = mean(o, axis = 1, lengths = len);
        let peak = max(o, axis = 1);
        let time_first = permute(o, (1, 0, 2));
        let total = sum(time_first, axis = 0);
        let pred = linear(pooled + peak + 0.1 * total, 3);
        output pred;
        loss mse(pred, y);
    }
}

#[test]
fn matmul_transpose_masks_and_reductions_along_an_axis() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut model = Explicit::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 5, 4), -1.0, 1.0);
    let len = kiln::ndarray::array![5usize, 2, 4];
    let y = random(&mut rng, (3, 3), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(x.view(), len.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), len.view(), y.view(), &mut m.workspace())
            .unwrap()
    });
}

kiln::model! {
    /// Sums and means over several adjacent axes (PyTorch's `dim=(2, 3)`), with the axes
    /// written in any order and from either end.
    struct SeveralAxes {
        input x: [B, 3, 4, 5];
        target y: [B, 2];
        let h = tanh(conv2d(x, 2, kernel = 1));
        let spatial = mean(h, axis = (2, 3));
        let back = sum(h * h, axis = (-1, -2));
        let middle = mean(h, axis = (2, 1));
        let across = linear(middle, 2);
        let pred = linear(spatial + 0.1 * back, 2) + across;
        output pred, h, spatial, middle;
        loss mse(pred, y);
    }
}

#[test]
fn sums_and_means_over_several_axes() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut model = SeveralAxes::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 3, 4, 5), -1.0, 1.0);
    let y = random(&mut rng, (2, 2), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let mut ws = model.workspace();
    model
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap();
    // The forward against the reductions written out.
    let h = ws.h().unwrap().to_owned();
    let spatial = ws.spatial().unwrap();
    let middle = ws.middle().unwrap();
    for b in 0..2 {
        for c in 0..2 {
            let plane = h.slice(kiln::ndarray::s![b, c, .., ..]);
            assert!((spatial[[b, c]] - plane.sum() / 20.0).abs() < 1e-14);
        }
        for j in 0..5 {
            let column = h.slice(kiln::ndarray::s![b, .., .., j]);
            assert!((middle[[b, j]] - column.sum() / 8.0).abs() < 1e-14);
        }
    }
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// Dropout inside a chain of blocks.
    struct Dropped {
        input x: [B, 16];
        target y: [B, 16];
        let h = Noisy(x, repeat = 2);
        output h;
        loss mse(h, y);

        block Noisy(x) {
            let p = linear(x, 16);
            let d = dropout(x, 0.5);
            let out = x + d + p;
            output out;
        }
    }
}

#[test]
fn dropout_in_blocks_is_active_in_training_differs_per_block_and_follows_the_seed() {
    let mut rng = StdRng::seed_from_u64(10);
    let mut model = Dropped::<f64>::new(&mut rng);
    // The layer is zero, so that each block's output is its input plus its dropout alone.
    for block in model.h.iter_mut() {
        block.p.weight.fill(0.0);
        if let Some(b) = block.p.bias.as_mut() {
            b.fill(0.0);
        }
    }
    let x = random(&mut rng, (4, 16), 0.5, 1.0);
    let y = random(&mut rng, (4, 16), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let run = |model: &mut Dropped<f64>, grads: &mut DroppedGrads<f64>, seed: u64| {
        let mut ws = model.workspace();
        ws.seed(seed);
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, grads)
            .unwrap();
        ws.h().unwrap().to_owned()
    };
    let a = run(&mut model, &mut grads, 1);
    let b = run(&mut model, &mut grads, 1);
    let c = run(&mut model, &mut grads, 2);
    assert_eq!(a, b, "the same seed gives the same masks");
    assert_ne!(a, c, "another seed gives other masks");
    // In training each block keeps or drops: x + dropout(x) is x or 3x per block, so the
    // output is x times 1, 3 or 9; without dropout it would be 4x.
    let ratios: Vec<f64> = a.iter().zip(x.iter()).map(|(o, i)| o / i).collect();
    assert!(ratios
        .iter()
        .all(|r| [1.0, 3.0, 9.0].iter().any(|k| (r - k).abs() < 1e-9)));
    // The two blocks draw different masks: some element is kept by one and dropped by the
    // other (a ratio of 3), which one shared mask stream could not give.
    assert!(ratios.iter().any(|r| (r - 3.0).abs() < 1e-9), "{ratios:?}");
    let inference = model.forward(x.view()).unwrap();
    assert!(inference
        .iter()
        .zip(x.iter())
        .all(|(o, i)| (o / i - 4.0).abs() < 1e-9));
}

kiln::model! {
    /// A block without parameters (its structs would not use `F` without a marker), and a
    /// whole model without parameters beside it.
    struct ParamFreeBlock {
        input x: [B, 4];
        target y: [B, 4];
        let h = linear(x, 4);
        let r = Act(h, repeat = 2);
        output r;
        loss mse(r, y);

        block Act(x) {
            let a = relu(x);
            let o = x + a;
            output o;
        }
    }
}

kiln::model! {
    struct ParamFree {
        input x: [B, 3];
        target y: [B, 3];
        let p = tanh(x) * 2.0;
        output p;
        loss mse(p, y);
    }
}

#[test]
fn blocks_and_models_without_parameters() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = ParamFreeBlock::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 4), -1.0, 1.0);
    let y = random(&mut rng, (3, 4), -1.0, 1.0);
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
        .unwrap();
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });

    let mut free = ParamFree::<f64>::new(&mut rng);
    assert_eq!(free.num_params(), 0);
    let x = random(&mut rng, (2, 3), -1.0, 1.0);
    let y = random(&mut rng, (2, 3), -1.0, 1.0);
    let want = x
        .iter()
        .zip(y.iter())
        .map(|(a, b)| (a.tanh() * 2.0 - b).powi(2))
        .sum::<f64>()
        / 6.0;
    let mut grads = free.zero_grads();
    let loss = free
        .loss_and_grad(x.view(), y.view(), &mut free.workspace(), &mut grads)
        .unwrap();
    assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    assert_eq!(free.forward(x.view()).unwrap(), x.mapv(|v| v.tanh() * 2.0));
}

/// A block whose value folds to a constant (`x + -x`) reads nothing, so the backward pass
/// only zeroes its input's gradient; that code must compile without a warning (`-D warnings`
/// users build it too).
#[deny(warnings)]
mod constant_block {
    kiln::model! {
        pub struct ConstantBlock {
            input x: [B, 4];
            target y: [B, 4];
            let h = linear(x, 4);
            let z = Zero(h, repeat = 2);
            let p = linear(z, 4);
            output p;
            loss mse(p, y);

            block Zero(x) {
                let u1 = -x;
                let u2 = x + u1;
                output u2;
            }
        }
    }
}

#[test]
fn a_block_that_folds_to_a_constant_compiles_cleanly_and_passes_no_gradient() {
    use constant_block::ConstantBlock;
    let mut rng = StdRng::seed_from_u64(12);
    let mut model = ConstantBlock::<f64>::new(&mut rng);
    let x = random(&mut rng, (3, 4), -1.0, 1.0);
    let y = random(&mut rng, (3, 4), -1.0, 1.0);
    let mut grads = model.zero_grads();
    model
        .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
        .unwrap();
    // Nothing reaches the first layer through a constant.
    assert!(grads.h.weight.iter().all(|&g| g == 0.0));
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// Causal self-attention written out by hand, as nanoGPT writes it: one projection to
    /// queries, keys and values, cut apart by `chunk`, split into heads, masked, and merged.
    struct HandAttention {
        input x: [B, T, 8];
        target y: [B, T, 8];
        let qkv = linear(x, 24);
        let (q, k, v) = chunk(qkv, 3, axis = -1);
        let qh = transpose(reshape(q, (B, T, 2, 4)), 1, 2);
        let kh = transpose(reshape(k, (B, T, 2, 4)), 1, 2);
        let vh = transpose(reshape(v, (B, T, 2, 4)), 1, 2);
        let att = softmax(causal_mask(matmul(qh, transpose(kh, -2, -1)) / 2.0), axis = -1);
        let heads = reshape(transpose(matmul(att, vh), 1, 2), (B, T, 8));
        let out = linear(heads, 8);
        output out;
        loss mse(out, y);
    }
}

kiln::model! {
    /// [`HandAttention`] as the fused layer, whose `in_proj_weight` stacks the three
    /// projections in the order `chunk` takes them apart.
    struct FusedAttention {
        input x: [B, T, 8];
        target y: [B, T, 8];
        let attn = multi_head_attention(x, heads = 2, causal = true);
        output attn;
        loss mse(attn, y);
    }
}

#[test]
fn attention_written_with_chunk_matches_the_fused_layer() {
    use std::collections::HashMap;
    let mut rng = StdRng::seed_from_u64(53);
    let mut fused = FusedAttention::<f64>::new(&mut rng);
    let mut hand = HandAttention::<f64>::new(&mut rng);
    fused.visit_params_mut(&mut |_, mut p| p.mapv_inplace(|_| rng.random_range(-0.5..0.5)));
    let renamed = |name: &str| match name {
        "attn.in_proj_weight" => "qkv.weight",
        "attn.in_proj_bias" => "qkv.bias",
        "attn.out_proj.weight" => "out.weight",
        "attn.out_proj.bias" => "out.bias",
        other => panic!("unexpected parameter {other}"),
    };
    let mut weights = HashMap::new();
    fused.visit_params(&mut |name, p| {
        weights.insert(renamed(name), p.to_owned());
    });
    assert_eq!(weights.len(), 4);
    hand.visit_params_mut(&mut |name, mut p| p.assign(&weights[name]));

    let x = random(&mut rng, (3, 5, 8), -1.0, 1.0);
    let y = random(&mut rng, (3, 5, 8), -1.0, 1.0);
    let (by_hand, by_layer) = (
        hand.forward(x.view()).unwrap(),
        fused.forward(x.view()).unwrap(),
    );
    let worst = (&by_hand - &by_layer).fold(0.0f64, |m, d| m.max(d.abs()));
    assert!(worst < 1e-12, "outputs differ by {worst}");

    let (mut g_hand, mut g_fused) = (hand.zero_grads(), fused.zero_grads());
    hand.loss_and_grad(x.view(), y.view(), &mut hand.workspace(), &mut g_hand)
        .unwrap();
    fused
        .loss_and_grad(x.view(), y.view(), &mut fused.workspace(), &mut g_fused)
        .unwrap();
    let mut fused_grads = HashMap::new();
    FusedAttention::visit_grads(&g_fused, &mut |name, g| {
        fused_grads.insert(renamed(name), g.to_owned());
    });
    HandAttention::visit_grads(&g_hand, &mut |name, g| {
        let worst = (&g - &fused_grads[name]).fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < 1e-12, "{name}: gradients differ by {worst}");
    });
    check(&hand, &g_hand, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}

kiln::model! {
    /// `chunk` into uneven parts (7 into 3, 3, 1), `split` by a size and by sections, a part
    /// skipped with `_`, and a gated unit (GLU) inside a block.
    struct Parts {
        input x: [B, 4, 7];
        target y: [B, 2, 2];
        let (a, b, c) = chunk(x, 3, axis = 2);
        let (early, late) = split(x, 2, axis = 1);
        let (_, wide) = split(x, (3, 4), axis = -1);
        let gated = Glu(concat(a * b, c, wide, axis = 2), repeat = 2);
        let first = narrow(gated, axis = 1, start = 0, length = 2);
        let mixed = concat(early * late, first, axis = 2);
        let pred = linear(mixed, 2);
        output pred;
        loss mse(pred, y);

        block Glu(x) {
            let proj = linear(x, 16);
            let (value, gate) = chunk(proj, 2, axis = -1);
            let out = x + value * sigmoid(gate);
            output out;
        }
    }
}

#[test]
fn chunk_and_split_cut_as_pytorch_and_accumulate_their_gradients() {
    let mut rng = StdRng::seed_from_u64(59);
    let mut model = Parts::<f64>::new(&mut rng);
    let x = random(&mut rng, (2, 4, 7), -1.0, 1.0);
    let y = random(&mut rng, (2, 2, 2), -1.0, 1.0);
    let mut grads = model.zero_grads();
    let loss = model
        .loss_and_grad(x.view(), y.view(), &mut model.workspace(), &mut grads)
        .unwrap();
    assert!(loss.is_finite());
    check(&model, &grads, |m| {
        m.loss(x.view(), y.view(), &mut m.workspace()).unwrap()
    });
}
