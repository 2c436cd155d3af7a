//! Helpers the training tests share.

use kiln::data::{self, BatchSource, ServedArg, ServedKind, TensorDataset};
use kiln::ndarray::{Array2, Axis};
use kiln::{BatchArray, Float, Model, Result};

/// Every parameter, flattened in visiting order (for bitwise comparisons).
pub fn params<F: Float, M: Model<F>>(model: &M) -> Vec<F> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, view| all.extend(view.iter().copied()));
    all
}

kiln::model! {
    /// Tags each token, leaving label 9 (padding) out of the loss.
    pub struct Tagger {
        input tokens: [B, T] tokens 20;
        target tags: [B, T] classes 3;
        let e = embedding(tokens, 8);
        let logits = linear(e, 3);
        output logits;
        loss cross_entropy(logits, tags, ignore_index = 9);
    }
}

kiln::model! {
    /// A tiny GPT: a tied head (two writes to `wte.weight`'s gradient), a repeated block
    /// (nested gradients) and linears without bias (absent optional parameters); the
    /// data-parallel and freezing tests share it.
    pub struct TinyGpt {
        input tokens: [B, T] tokens 11;
        target next: [B, T] classes 11;
        let wte = embedding(tokens, 8);
        let wpe = position_embedding(tokens, 8, max_len = 6);
        let x = wte + wpe;
        let h = Layer(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 11, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next);

        block Layer(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 2, causal = true);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let up = gelu(linear(ln_2, 16, bias = false));
            let y = x1 + linear(up, 8);
            output y;
        }
    }
}

/// The bundled digits with flattened samples, split 80/20 stratified with `seed`.
pub fn digits_split(seed: u64) -> (TensorDataset<f32>, TensorDataset<f32>) {
    let mut digits = data::digits::<f32>().expect("the bundled digits load");
    digits.reshape_samples(&[64]).expect("1×8×8 = 64");
    data::stratified_split(&digits, 0.2, seed)
}

/// Token sequences `[n, T]` below 20 and their tags `[n, T]` below 3 (or a padding label),
/// served whole for [`Tagger`].
pub struct Tagged {
    pub tokens: Array2<usize>,
    pub tags: Array2<usize>,
}

impl BatchSource<f32> for Tagged {
    fn len(&self) -> usize {
        self.tokens.nrows()
    }
    fn served(&self) -> Vec<ServedArg> {
        vec![
            ServedArg::new("tokens", ServedKind::Tokens { vocab: Some(20) }, 2),
            ServedArg::new("tags", ServedKind::Labels { classes: Some(3) }, 2),
        ]
    }
    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<f32>>) -> Result<()> {
        let rows = |a: &Array2<usize>| a.select(Axis(0), indices).into_dyn();
        *batch = vec![
            BatchArray::Ids(rows(&self.tokens)),
            BatchArray::Ids(rows(&self.tags)),
        ];
        Ok(())
    }
}
