//! PyTorch parity for the sequence fixture cases (`tests/fixtures/<case>/`, written by
//! `tests/fixtures/gen_sequence.py`, see the README): token embeddings with a padding row,
//! linear over [B, T, F], cross-entropy with `ignore_index`, causal self-attention,
//! cross-attention with padded keys, stacked / bidirectional / packed LSTMs, GRUs with final
//! states, plain RNNs (tanh, and relu over packed sequences), and a small GPT with a tied
//! head, in f64 and f32.
//!
//! As in `dense.rs`: each model is declared with `model!` with its bindings named after
//! the fixture's modules (so that its parameters carry the `state_dict` names), loaded from
//! `param.*`, and checked against PyTorch: the forward values `output.*` that the model exposes
//! (after `loss_and_grad`, from the workspace, and from `forward`), the `loss`, every parameter
//! gradient `grad.*`, three steps of Adam and AdamW (`after.<opt>.step<k>.*`), and loading the
//! PyTorch `state_dict` file with `kiln::io::load`. `grad.input.*` is not compared (kiln
//! computes no gradient with respect to the input data).
//!
//! Forward values that are intermediate inside one kiln op are not exposed, and are listed per
//! case as `not_exposed` (the report notes them): the padded sequence `output.seq` of an
//! RNN declared with `final_state = true` (the binding is the final state), and `output.block0`,
//! the first of the two chained transformer blocks (the chain is one binding).
//!
//! Run with `--nocapture` to see the largest errors per category.

use crate::common::Fixture;
use kiln::ndarray::{Array1, Array2, Ix3};
use kiln::Float;

kiln::model! {
    /// `embedding_pad`: emb = Embedding(11, 6, padding_idx = 0); pred = fc(emb) 6 -> 4; MSE.
    pub struct EmbeddingPad {
        input tokens: [B, T] tokens 11;
        target y: [B, T, 4];
        let emb = embedding(tokens, 6, padding_idx = 0);
        let fc = linear(emb, 4);
        output emb, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `causal_attn`: causal self-attention 8 / 2 heads; pred = fc(a) 8 -> 3; MSE.
    pub struct CausalAttn {
        input x: [B, T, 8];
        target y: [B, T, 3];
        let attn = multi_head_attention(x, heads = 2, causal = true);
        let fc = linear(attn, 3);
        output attn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `rotary_attn`: causal self-attention 8 / 2 heads with rotary position embeddings;
    /// pred = fc(a) 8 -> 3; MSE.
    pub struct RotaryAttn {
        input x: [B, T, 8];
        target y: [B, T, 3];
        let attn = multi_head_attention(x, heads = 2, causal = true, rotary = true);
        let fc = linear(attn, 3);
        output attn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `cross_attn`: attention of q to mem with a key padding mask; pred = fc(a) 8 -> 3; MSE.
    pub struct CrossAttn {
        input q: [B, T, 8];
        input mem: [B, S, 8];
        input mem_lengths: [B] lengths S;
        target y: [B, T, 3];
        let attn = multi_head_attention(q, mem, heads = 2, lengths = mem_lengths);
        let fc = linear(attn, 3);
        output attn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `lstm_bidir`: LSTM(4, 5, 2 layers, bidirectional) -> [B, T, 10]; fc 10 -> 2; MSE.
    pub struct LstmBidir {
        input x: [B, T, 4];
        target y: [B, T, 2];
        let rnn = lstm(x, 5, layers = 2, bidirectional = true);
        let fc = linear(rnn, 2);
        output rnn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `lstm_packed`: bidirectional LSTM(4, 5) over lengths; final states [B, 10]; fc 10 -> 3; CE.
    pub struct LstmPacked {
        input x: [B, T, 4];
        input lengths: [B] lengths T;
        target label: [B] classes 3;
        let rnn = lstm(x, 5, bidirectional = true, lengths = lengths, final_state = true);
        let fc = linear(rnn, 3);
        output rnn, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `gru_seq2seq`: an encoder GRU's final state starts the decoder GRU, and (with its tanh
    /// as the cells) an LSTM over the decoder's outputs; fc 6 -> 2; MSE.
    pub struct GruSeq2Seq {
        input src: [B, S, 4];
        input tgt: [B, T, 3];
        target y: [B, T, 2];
        let enc = gru(src, 6, final_state = true);
        let dec = gru(tgt, 6, h0 = enc);
        let cells = tanh(enc);
        let post = lstm(dec, 6, h0 = enc, c0 = cells);
        let fc = linear(post, 2);
        output enc, dec, post, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `lstm_seq2seq`: an encoder LSTM's final `(h_n, c_n)`, cut apart by `chunk`, start the
    /// decoder LSTM; fc 5 -> 2; MSE.
    pub struct LstmSeq2Seq {
        input src: [B, S, 4];
        input tgt: [B, T, 3];
        target y: [B, T, 2];
        let enc = lstm(src, 5, final_state = true, final_cells = true);
        let (h, c) = chunk(enc, 2, axis = 1);
        let dec = lstm(tgt, 5, h0 = h, c0 = c);
        let fc = linear(dec, 2);
        output enc, dec, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `lstm_seq2seq_deep`: a two-layer encoder LSTM's final states of both layers
    /// (`all_layers`, `[2, B, 10]` with the cells) start a two-layer decoder; fc 5 -> 2; MSE.
    pub struct LstmSeq2SeqDeep {
        input src: [B, S, 4];
        input tgt: [B, T, 3];
        target y: [B, T, 2];
        let enc = lstm(src, 5, layers = 2, final_state = true, all_layers = true, final_cells = true);
        let (h, c) = chunk(enc, 2, axis = -1);
        let dec = lstm(tgt, 5, layers = 2, h0 = h, c0 = c);
        let fc = linear(dec, 2);
        output enc, dec, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `rnn_bidir`: tanh RNN(4, 5, 2 layers, bidirectional) -> [B, T, 10]; fc 10 -> 2; MSE.
    pub struct RnnBidir {
        input x: [B, T, 4];
        target y: [B, T, 2];
        let rnn = rnn(x, 5, layers = 2, bidirectional = true);
        let fc = linear(rnn, 2);
        output rnn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `rnn_relu_packed`: relu RNN(4, 5, 2 layers, bidirectional) over lengths; the last
    /// layer's final states [B, 10]; fc 10 -> 3; CE.
    pub struct RnnReluPacked {
        input x: [B, T, 4];
        input lengths: [B] lengths T;
        target label: [B] classes 3;
        let rnn = rnn(x, 5, layers = 2, bidirectional = true, nonlinearity = relu, lengths = lengths, final_state = true);
        let fc = linear(rnn, 3);
        output rnn, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `gru`: GRU(4, 5, 2 layers) -> [B, T, 5]; fc 5 -> 2; MSE.
    pub struct Gru {
        input x: [B, T, 4];
        target y: [B, T, 2];
        let rnn = gru(x, 5, layers = 2);
        let fc = linear(rnn, 2);
        output rnn, fc;
        loss mse(fc, y);
    }
}

kiln::model! {
    /// `gru_bidir_final`: bidirectional GRU(4, 3); final states [B, 6]; fc 6 -> 2; CE.
    pub struct GruBidirFinal {
        input x: [B, T, 4];
        target label: [B] classes 2;
        let rnn = gru(x, 3, bidirectional = true, final_state = true);
        let fc = linear(rnn, 2);
        output rnn, fc;
        loss cross_entropy(fc, label);
    }
}

// The generated code spells gelu's 1/sqrt(2) as a literal, which clippy's `approx_constant`
// (deny by default) rejects (see dense.rs).
#[allow(clippy::approx_constant)]
mod gpt_model {
    kiln::model! {
        /// `gpt_tied`: token + position embeddings, 2 pre-norm causal blocks, ln_f, a head
        /// tied to the token table; CE with ignore_index 0.
        pub struct GptTied {
            input tokens: [B, T] tokens 13;
            target next: [B, T] classes 13;
            let wte = embedding(tokens, 8);
            let wpe = position_embedding(tokens, 8, max_len = 8);
            let x0 = wte + wpe;
            let blocks = Block(x0, repeat = 2);
            let ln_f = layer_norm(blocks);
            let head = linear(ln_f, 13, bias = false, tied = wte);
            output x0, blocks, head;
            loss cross_entropy(head, next, ignore_index = 0);

            block Block(x) {
                let ln_1 = layer_norm(x);
                let attn = multi_head_attention(ln_1, heads = 2, causal = true);
                let x1 = x + attn;
                let ln_2 = layer_norm(x1);
                let c_fc = linear(ln_2, 32);
                let act = gelu(c_fc);
                let mlp_proj = linear(act, 8);
                let out = x1 + mlp_proj;
                output out;
            }
        }
    }
}
use gpt_model::GptTied;

/// Integer tensor `name` (int64 in the file) as a `[B, T]` matrix of `usize`, with the shape
/// the manifest gives under `inputs` or `targets`.
fn ids(fixture: &Fixture, section: &str, name: &str) -> Array2<usize> {
    let key = name.split_once('.').map_or(name, |(_, n)| n);
    let entry = &fixture.manifest[section][key];
    let shape = entry
        .get("shape")
        .unwrap_or(entry)
        .as_array()
        .unwrap_or_else(|| panic!("{}: no shape for `{name}`", fixture.title()))
        .iter()
        .map(|d| d.as_u64().expect("a dimension") as usize)
        .collect::<Vec<_>>();
    assert_eq!(shape.len(), 2, "`{name}` is not a matrix");
    let flat: Array1<usize> = fixture.labels(name);
    Array2::from_shape_vec((shape[0], shape[1]), flat.to_vec())
        .unwrap_or_else(|e| panic!("{}: `{name}`: {e}", fixture.title()))
}

/// How to read one input or target from the core file.
macro_rules! load {
    (f3, $fixture:ident, $section:literal, $name:expr) => {
        $fixture.array::<F, Ix3>($name)
    };
    (ids, $fixture:ident, $section:literal, $name:expr) => {
        ids(&$fixture, $section, $name)
    };
    (int, $fixture:ident, $section:literal, $name:expr) => {
        $fixture.labels($name)
    };
}

/// One module per case with an `f64` and an `f32` test (see `dense.rs`). Inputs and
/// targets are `f3` (float [B, T, F]), `ids` (int64 [B, T]) or `int` (int64 [B]); `outputs`
/// maps each model output to the fixture's step name; `not_exposed` lists the fixture's forward
/// steps that the kiln model has no value for.
macro_rules! parity_case {
    (
        $case:ident, $Model:ident,
        inputs { $($in:ident: $ikind:ident),+ $(,)? },
        target $target:ident: $tkind:ident,
        outputs { $($out:ident => $step:ident),+ $(,)? },
        not_exposed [ $($hidden:ident),* $(,)? ] $(,)?
    ) => {
        mod $case {
            use super::*;

            fn run<F: Float>() {
                open_case!($case, $Model => fixture, report, fresh);
                let mut model = fresh();
                $(
                    let $in = load!($ikind, fixture, "inputs", concat!("input.", stringify!($in)));
                )+
                let target = load!($tkind, fixture, "targets", concat!("target.", stringify!($target)));

                check_training_step!(fixture, report, model: $Model, ($($in.view(),)+ target.view()), ws, { $($out => $step),+ });

                // Inference returns the same values.
                {
                    #[allow(unused_parens)]
                    let ($($out),+) = model.forward($($in.view()),+).expect("forward");
                    $(
                        fixture.check_output(&mut report, "output (forward)", stringify!($step), $out.view().into_dyn());
                    )+
                }
                let hidden: &[&str] = &[$(concat!("output.", stringify!($hidden))),*];
                for name in hidden {
                    report.waive(name, "the kiln model does not expose it");
                }
                let steps = fixture
                    .names_with("output.")
                    .into_iter()
                    .filter(|n| !hidden.contains(n));
                report.require_checked("forward values", steps);

                fixture.check_state_dict(&mut report, $Model::<F>::zeros());

                check_trajectories!(fixture, report, fresh, ($($in.view(),)+ target.view()), ws);
                report.finish();
            }

            in_f64_and_f32!();
        }
    };
}

parity_case! {
    embedding_pad, EmbeddingPad,
    inputs { tokens: ids },
    target y: f3,
    outputs { emb => e, fc => pred },
    not_exposed [],
}

parity_case! {
    causal_attn, CausalAttn,
    inputs { x: f3 },
    target y: f3,
    outputs { attn => a, fc => pred },
    not_exposed [],
}

parity_case! {
    rotary_attn, RotaryAttn,
    inputs { x: f3 },
    target y: f3,
    outputs { attn => a, fc => pred },
    not_exposed [],
}

parity_case! {
    cross_attn, CrossAttn,
    inputs { q: f3, mem: f3, mem_lengths: int },
    target y: f3,
    outputs { attn => a, fc => pred },
    not_exposed [],
}

parity_case! {
    lstm_bidir, LstmBidir,
    inputs { x: f3 },
    target y: f3,
    outputs { rnn => seq, fc => pred },
    not_exposed [],
}

parity_case! {
    lstm_packed, LstmPacked,
    inputs { x: f3, lengths: int },
    target label: int,
    outputs { rnn => final, fc => logits },
    not_exposed [seq],
}

parity_case! {
    gru, Gru,
    inputs { x: f3 },
    target y: f3,
    outputs { rnn => seq, fc => pred },
    not_exposed [],
}

parity_case! {
    gru_bidir_final, GruBidirFinal,
    inputs { x: f3 },
    target label: int,
    outputs { rnn => final, fc => logits },
    not_exposed [seq],
}

parity_case! {
    gru_seq2seq, GruSeq2Seq,
    inputs { src: f3, tgt: f3 },
    target y: f3,
    outputs { enc => enc, dec => dec, post => post, fc => pred },
    not_exposed [],
}

parity_case! {
    lstm_seq2seq, LstmSeq2Seq,
    inputs { src: f3, tgt: f3 },
    target y: f3,
    outputs { enc => enc, dec => dec, fc => pred },
    not_exposed [],
}

parity_case! {
    lstm_seq2seq_deep, LstmSeq2SeqDeep,
    inputs { src: f3, tgt: f3 },
    target y: f3,
    outputs { enc => enc, dec => dec, fc => pred },
    not_exposed [],
}

parity_case! {
    rnn_bidir, RnnBidir,
    inputs { x: f3 },
    target y: f3,
    outputs { rnn => seq, fc => pred },
    not_exposed [],
}

parity_case! {
    rnn_relu_packed, RnnReluPacked,
    inputs { x: f3, lengths: int },
    target label: int,
    outputs { rnn => final, fc => logits },
    not_exposed [],
}

parity_case! {
    gpt_tied, GptTied,
    inputs { tokens: ids },
    target next: ids,
    outputs { x0 => x0, blocks => block1, head => logits },
    not_exposed [block0],
}

// `layernorm_options`: layer norms without a bias and without the affine map.
mod layernorm_options {
    use super::*;

    kiln::model! {
        /// `layernorm_options`: fc1 5 -> 6, LayerNorm(6, bias=False), tanh,
        /// LayerNorm(6, elementwise_affine=False), fc2 6 -> 3 at every position; MSE.
        pub struct LayerNormOptions {
            input x: [B, T, 5];
            target y: [B, T, 3];
            let fc1 = linear(x, 6);
            let ln1 = layer_norm(fc1, bias = false);
            let t = tanh(ln1);
            let n2 = layer_norm(t, elementwise_affine = false);
            let fc2 = linear(n2, 3);
            output fc1, ln1, t, n2, fc2;
            loss mse(fc2, y);
        }
    }

    parity_case! {
        layernorm_options, LayerNormOptions,
        inputs { x: f3 },
        target y: f3,
        outputs { fc1 => h, ln1 => n1, t => t, n2 => n2, fc2 => pred },
        not_exposed [],
    }
}

// `rmsnorm`: RMS norms with PyTorch's default eps (the dtype's epsilon) and without a weight.
mod rmsnorm {
    use super::*;

    kiln::model! {
        /// `rmsnorm`: fc1 5 -> 6, RMSNorm(6), tanh, RMSNorm(6, eps=1e-6,
        /// elementwise_affine=False), fc2 6 -> 3 at every position; MSE.
        pub struct RmsNormModel {
            input x: [B, T, 5];
            target y: [B, T, 3];
            let fc1 = linear(x, 6);
            let rms1 = rms_norm(fc1);
            let t = tanh(rms1);
            let n2 = rms_norm(t, eps = 1e-6, elementwise_affine = false);
            let fc2 = linear(n2, 3);
            output fc1, rms1, t, n2, fc2;
            loss mse(fc2, y);
        }
    }

    parity_case! {
        rmsnorm, RmsNormModel,
        inputs { x: f3 },
        target y: f3,
        outputs { fc1 => h, rms1 => n1, t => t, n2 => n2, fc2 => pred },
        not_exposed [],
    }
}

// `seq_ce_ignore`: cross-entropy at every position, padding labels left out.
mod seq_ce_ignore {
    use super::*;

    kiln::model! {
        /// `seq_ce_ignore`: logits = fc(x) 5 -> 3 at every position; CE with ignore_index 0.
        pub struct SeqCeIgnore {
            input x: [B, T, 5];
            target label: [B, T] classes 3;
            let fc = linear(x, 3);
            output fc;
            loss cross_entropy(fc, label, ignore_index = 0);
        }
    }

    parity_case! {
        seq_ce_ignore, SeqCeIgnore,
        inputs { x: f3 },
        target label: ids,
        outputs { fc => logits },
        not_exposed [],
    }
}

/// A tied head's parameter loads from whichever of its two names a file has: PyTorch's
/// `state_dict` holds both (`head.weight` beside `wte.weight`), `safetensors.torch.save_model`
/// keeps one of them, and the one it keeps is not always the embedding's. Two copies that
/// differ are refused and leave the model alone.
#[test]
fn gpt_tied_loads_from_either_name_of_the_tied_weight() {
    use crate::common::{scratch_dir, write_safetensors, RawTensor};
    use kiln::io::TensorFile;
    use kiln::Model;

    let fixture = Fixture::open::<f64>("gpt_tied");
    let path = fixture.dir().join("f64.state_dict.safetensors");
    let file = TensorFile::open(&path).expect("the fixture's state_dict");
    let wte = file.get::<f64>("wte.weight").expect("wte.weight");
    let variant = |name: &str, keep: &dyn Fn(&str) -> bool, head: Option<f64>| {
        let mut tensors: Vec<RawTensor> = Vec::new();
        for key in file.names().into_iter().filter(|k| keep(k)) {
            let mut value = file.get::<f64>(key).expect("a float tensor");
            if key == "head.weight" {
                if let Some(shift) = head {
                    value.mapv_inplace(|v| v + shift);
                }
            }
            tensors.push(RawTensor::float(key, value.view()));
        }
        let path = scratch_dir().join(format!("gpt_tied.{name}.safetensors"));
        write_safetensors(&path, &tensors);
        path
    };

    for (name, dropped) in [("head_only", "wte.weight"), ("wte_only", "head.weight")] {
        let path = variant(name, &|k| k != dropped, None);
        let mut model = GptTied::<f64>::zeros();
        kiln::io::load(&mut model, &path)
            .unwrap_or_else(|e| panic!("a file without `{dropped}`: {e}"));
        let mut loaded = None;
        model.visit_params(&mut |n, v| {
            if n == "wte.weight" {
                loaded = Some(v.to_owned());
            }
        });
        assert_eq!(loaded.as_ref(), Some(&wte), "without `{dropped}`");
    }

    let path = variant("differing", &|_| true, Some(0.5));
    let mut model = GptTied::<f64>::zeros();
    let error = kiln::io::load(&mut model, &path).expect_err("two different copies");
    assert!(
        error
            .to_string()
            .contains("`head.weight` is tied to `wte.weight`"),
        "{error}"
    );
    model.visit_params(&mut |n, v| assert!(v.iter().all(|&x| x == 0.0), "{n} was written"));

    let path = variant(
        "neither",
        &|k| k != "head.weight" && k != "wte.weight",
        None,
    );
    let error = kiln::io::load(&mut GptTied::<f64>::zeros(), &path).expect_err("no copy");
    assert!(
        error.to_string().contains("missing `wte.weight`"),
        "{error}"
    );
}
