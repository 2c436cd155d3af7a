//! Incremental decoding for causal self-attention: the keys and values of the positions seen
//! so far are kept in a [`KvCache`], and each call projects only the new positions, appends
//! their keys and values, and attends from the new queries to every cached key they may see.
//!
//! This is what a generated model's `forward_cached` calls for each
//! `multi_head_attention(x, heads = h, causal = true)`: sampling a sequence token by token then
//! costs one position's work per layer and step, instead of the whole context's. The result is
//! the causal forward of [`multi_head_attention_forward`] on the whole sequence, restricted to
//! the new positions (up to rounding: the products are cut differently).
//!
//! [`multi_head_attention_forward`]: super::attention::multi_head_attention_forward

use super::attention::{AttentionParams, SoftmaxRows};
use super::dispatch::run_fast;
use super::gemm::gemm;
use super::linear::linear_forward;
use super::rotary::{rotate, RotaryLayout};
use crate::Float;

/// The keys and values of one attention layer for up to `capacity` positions of `batch`
/// sequences, laid out `[batch, heads, capacity, head_dim]` so that each head's keys are one
/// row-major block; plus the scratch a call needs.
///
/// It does not know how many positions it holds: the model's cache keeps that count for all
/// its layers and passes it to [`multi_head_attention_cached`].
///
/// ```
/// use kiln_runtime::kernels::kv_cache::KvCache;
/// let cache = KvCache::<f32>::new(2, 64, 128, 4);
/// assert_eq!((cache.batch(), cache.capacity()), (2, 64));
/// ```
#[derive(Clone, Debug)]
pub struct KvCache<F> {
    batch: usize,
    capacity: usize,
    embed: usize,
    heads: usize,
    keys: Vec<F>,
    values: Vec<F>,
    /// The projections of the new positions, one head's queries, scores and output, and the
    /// heads' outputs side by side; grown on demand.
    scratch: Vec<F>,
    /// Rotary position embeddings on the queries and keys, by absolute position, with this
    /// base.
    rotary: Option<u32>,
}

impl<F: Float> KvCache<F> {
    /// An empty cache for `batch` sequences of up to `capacity` positions, for an attention
    /// layer of width `embed` split into `heads` heads (`heads` divides `embed`).
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `embed` (the model's compiler has checked both).
    pub fn new(batch: usize, capacity: usize, embed: usize, heads: usize) -> Self {
        assert!(
            heads > 0 && embed.is_multiple_of(heads),
            "KvCache: {heads} heads do not divide the width {embed}"
        );
        let len = batch * capacity * embed;
        Self {
            batch,
            capacity,
            embed,
            heads,
            keys: vec![F::ZERO; len],
            values: vec![F::ZERO; len],
            scratch: Vec::new(),
            rotary: None,
        }
    }

    /// For a layer with rotary position embeddings of `base` (`multi_head_attention(..,
    /// rotary = true)`): the new positions' queries and keys are turned by their absolute
    /// positions, the keys before they join the cache.
    pub fn rotary(mut self, base: u32) -> Self {
        self.rotary = Some(base);
        self
    }

    /// The number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The most positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Element offset of position `pos` of head `h` of sequence `b` in `keys` and `values`.
    fn at(&self, b: usize, h: usize, pos: usize) -> usize {
        let hd = self.embed / self.heads;
        ((b * self.heads + h) * self.capacity + pos) * hd
    }
}

/// Causal self-attention over `q_len` new positions per sequence that follow the `len`
/// positions already in `cache`: `query` and `out` are `[batch, q_len, embed]`. Projects the
/// new positions (PyTorch's `nn.MultiheadAttention` parameters, as
/// [`multi_head_attention_forward`](super::attention::multi_head_attention_forward)), stores
/// their keys and values at positions `len .. len + q_len`, and lets new position `i` attend
/// to cached positions `0 ..= len + i`.
///
/// # Panics
/// If `len + q_len` exceeds the cache's capacity or a slice's length disagrees with the cache
/// (the generated `forward_cached` checks both and returns an error first).
///
/// ```
/// use kiln_runtime::kernels::attention::AttentionParams;
/// use kiln_runtime::kernels::kv_cache::{multi_head_attention_cached, KvCache};
/// // One head of size 1, identity projections: the output is the attention-weighted inputs.
/// let p = AttentionParams {
///     in_proj_weight: &[1.0f64, 1.0, 1.0],
///     in_proj_bias: None,
///     out_proj_weight: &[1.0],
///     out_proj_bias: None,
/// };
/// let mut cache = KvCache::new(1, 4, 1, 1);
/// let mut out = [0.0];
/// multi_head_attention_cached(&mut cache, 0, 1, &[3.0], &p, &mut out);
/// assert_eq!(out[0], 3.0); // the first position sees only itself
/// multi_head_attention_cached(&mut cache, 1, 1, &[5.0], &p, &mut out);
/// let w = 1.0 / (1.0 + (-10.0f64).exp()); // softmax([15, 25])
/// assert!((out[0] - (3.0 * (1.0 - w) + 5.0 * w)).abs() < 1e-12);
/// ```
pub fn multi_head_attention_cached<F: Float>(
    cache: &mut KvCache<F>,
    len: usize,
    q_len: usize,
    query: &[F],
    p: &AttentionParams<'_, F>,
    out: &mut [F],
) {
    let (batch, e, heads) = (cache.batch, cache.embed, cache.heads);
    let (hd, total, rows) = (e / heads, len + q_len, batch * q_len);
    assert!(
        total <= cache.capacity,
        "multi_head_attention_cached: {len} cached and {q_len} new positions exceed the capacity {}",
        cache.capacity
    );
    assert_eq!(query.len(), rows * e, "multi_head_attention_cached: query");
    assert_eq!(out.len(), rows * e, "multi_head_attention_cached: out");
    assert_eq!(p.in_proj_weight.len(), 3 * e * e, "in_proj_weight");
    assert_eq!(p.out_proj_weight.len(), e * e, "out_proj_weight");

    let sizes = [
        rows * 3 * e,
        q_len * hd,
        q_len * total,
        q_len * hd,
        rows * e,
    ];
    let need: usize = sizes.iter().sum();
    if cache.scratch.len() < need {
        cache.scratch.resize(need, F::ZERO);
    }
    let mut scratch = std::mem::take(&mut cache.scratch);
    let (proj, rest) = scratch.split_at_mut(sizes[0]);
    let (q_head, rest) = rest.split_at_mut(sizes[1]);
    let (scores, rest) = rest.split_at_mut(sizes[2]);
    let (o_head, rest) = rest.split_at_mut(sizes[3]);
    let heads_out = &mut rest[..sizes[4]];

    linear_forward(
        query,
        p.in_proj_weight,
        p.in_proj_bias,
        rows,
        e,
        3 * e,
        proj,
    );
    if let Some(base) = cache.rotary {
        // The new queries and keys, by their absolute positions.
        let layout = RotaryLayout {
            rows,
            stride: 3 * e,
            column: 0,
            sets: 2,
            set_stride: e,
            heads,
            head_dim: hd,
            seq: q_len,
            first: len,
            base,
        };
        rotate(proj, &layout, false);
    }
    // The new keys and values join the cache, head by head.
    for b in 0..batch {
        for r in 0..q_len {
            let row = &proj[(b * q_len + r) * 3 * e..][..3 * e];
            for h in 0..heads {
                let at = cache.at(b, h, len + r);
                cache.keys[at..at + hd].copy_from_slice(&row[e + h * hd..][..hd]);
                cache.values[at..at + hd].copy_from_slice(&row[2 * e + h * hd..][..hd]);
            }
        }
    }
    let scale = F::from_f64(1.0 / (hd as f64).sqrt());
    for b in 0..batch {
        for h in 0..heads {
            for r in 0..q_len {
                q_head[r * hd..][..hd]
                    .copy_from_slice(&proj[(b * q_len + r) * 3 * e + h * hd..][..hd]);
            }
            let start = cache.at(b, h, 0);
            let keys = &cache.keys[start..start + total * hd];
            let values = &cache.values[start..start + total * hd];
            gemm(
                q_len,
                hd,
                total,
                scale,
                q_head,
                false,
                keys,
                true,
                F::ZERO,
                scores,
            );
            // New position `r` is position `len + r`: it sees the keys up to its own.
            run_fast(SoftmaxRows {
                scores: &mut *scores,
                kv_len: total,
                len: total,
                causal: true,
                first_query: len,
            });
            gemm(
                q_len,
                total,
                hd,
                F::ONE,
                scores,
                false,
                values,
                false,
                F::ZERO,
                o_head,
            );
            for r in 0..q_len {
                heads_out[(b * q_len + r) * e + h * hd..][..hd]
                    .copy_from_slice(&o_head[r * hd..][..hd]);
            }
        }
    }
    linear_forward(
        heads_out,
        p.out_proj_weight,
        p.out_proj_bias,
        rows,
        e,
        e,
        out,
    );
    cache.scratch = scratch;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::{multi_head_attention_forward, AttentionDims};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Decoding a sequence in pieces (a prompt, then one position at a time, then several)
    /// gives the causal forward over the whole sequence, for every batch row and position,
    /// with and without rotary embeddings.
    #[test]
    fn pieces_match_the_whole_sequence() {
        pieces_match(None);
        pieces_match(Some(10_000));
    }

    fn pieces_match(rotary: Option<u32>) {
        let (batch, t, e, heads) = (2, 9, 12, 3);
        let mut rng = StdRng::seed_from_u64(3);
        let mut draw =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (w, bias, ow, ob) = (draw(3 * e * e), draw(3 * e), draw(e * e), draw(e));
        let x = draw(batch * t * e);
        let p = AttentionParams {
            in_proj_weight: &w,
            in_proj_bias: Some(&bias),
            out_proj_weight: &ow,
            out_proj_bias: Some(&ob),
        };
        let d = AttentionDims {
            batch,
            q_len: t,
            kv_len: t,
            embed: e,
            heads,
            rotary,
            dropout: false,
        };
        let mut scratch = vec![0.0; d.scratch_len()];
        let mut whole = vec![0.0; batch * t * e];
        multi_head_attention_forward(&d, &x, None, true, None, &p, None, &mut scratch, &mut whole);

        let mut cache = KvCache::new(batch, t, e, heads);
        if let Some(base) = rotary {
            cache = cache.rotary(base);
        }
        let mut len = 0;
        for piece in [4, 1, 1, 3] {
            let rows = |v: &[f64]| -> Vec<f64> {
                (0..batch)
                    .flat_map(|b| v[(b * t + len) * e..(b * t + len + piece) * e].to_vec())
                    .collect()
            };
            let mut out = vec![0.0; batch * piece * e];
            multi_head_attention_cached(&mut cache, len, piece, &rows(&x), &p, &mut out);
            for (i, (got, want)) in out.iter().zip(rows(&whole)).enumerate() {
                assert!(
                    (got - want).abs() < 1e-12,
                    "positions {len}..{}: element {i}: {got} against {want}",
                    len + piece
                );
            }
            len += piece;
        }
    }

    #[test]
    #[should_panic(expected = "exceed the capacity")]
    fn a_full_cache_is_a_caller_bug() {
        let p = AttentionParams {
            in_proj_weight: &[1.0f32, 1.0, 1.0],
            in_proj_bias: None,
            out_proj_weight: &[1.0],
            out_proj_bias: None,
        };
        let mut cache = KvCache::new(1, 2, 1, 1);
        multi_head_attention_cached(&mut cache, 2, 1, &[1.0], &p, &mut [0.0]);
    }
}
