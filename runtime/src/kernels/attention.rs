//! Multi-head attention, fused: PyTorch's `nn.MultiheadAttention(embed_dim = D, num_heads = H,
//! batch_first = True, dropout = p)` called as `attn(query, kv, kv, need_weights = False)`,
//! with an optional causal mask and key lengths, and its vector-Jacobian products.
//!
//! With `kv` the query itself (self-attention) or a separate memory (cross-attention):
//!
//! - `Q = query · Wqᵀ + bq`, `K = kv · Wkᵀ + bk`, `V = kv · Wvᵀ + bv`, where `Wq`, `Wk`, `Wv`
//!   are the row blocks `[0, D)`, `[D, 2D)`, `[2D, 3D)` of `in_proj_weight` (`[3D, D]`), and
//!   `bq`, `bk`, `bv` those of `in_proj_bias` (`[3D]`);
//! - per head `h` (columns `[h·hd, (h+1)·hd)`, `hd = D / H`) and sequence:
//!   `P = softmax(Q_h K_hᵀ / √hd)` over the keys, masked keys at probability exactly 0, and
//!   `O_h = P V_h` (in training with dropout, `O_h = (M ∘ P) V_h` with `M` the mask, each
//!   weight kept with probability `1 − p` at `1 / (1 − p)`; the backward takes the softmax's
//!   gradient with the undropped `P`);
//! - `out = O · Woᵀ + bo`, `O` the heads' outputs side by side (`[B, T, D]`).
//!
//! `query` and `out` are `[B, T, D]` and the memory `[B, S, D]`, row-major. The projections
//! are GEMMs over all `B·T` (or `B·S`) rows at once; the per-(sequence, head) products read
//! `Q`, `K`, `V` and write `O` and the gradients in place inside those row-major buffers,
//! through strides, so no head is ever copied out. The (sequence, head) pairs are cut into
//! fixed chunks that the two threads share when the work is large enough; each pair is
//! computed the same way whichever thread runs it, and the sums across pairs (the parameter
//! gradients) are GEMMs over all rows afterwards, so results do not depend on the thread count.

use super::dropout::draw_seeded_mask;
use super::gemm;
use super::lanes::{lane_dot, lane_max, lane_sum, LANES};
use super::linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward,
};
use super::parallel;
use crate::kernels::dispatch::{run_fast, ElementLoop};
use crate::Float;
use std::any::TypeId;
use std::marker::PhantomData;

/// The sizes of one attention call.
///
/// ```
/// use kiln_runtime::kernels::attention::AttentionDims;
/// let d = AttentionDims {
///     batch: 2, q_len: 3, kv_len: 5, embed: 8, heads: 2, rotary: None, dropout: false,
/// };
/// assert_eq!(d.head_dim(), 4);
/// // Q, K and V, the probabilities, the heads' outputs, their gradients, and two tiles.
/// let proj = 2 * 3 * 8 + 2 * 5 * 16;
/// assert_eq!(d.scratch_len(), 2 * proj + 2 * 2 * 3 * 5 + 2 * (2 * 3 * 8) + 2 * 3 * 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionDims {
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Queries per sequence (`T`).
    pub q_len: usize,
    /// Keys (and values) per sequence (`S`); equal to `q_len` in self-attention.
    pub kv_len: usize,
    /// The embedding size (`D`), a multiple of `heads`.
    pub embed: usize,
    /// The number of heads (`H`, at least 1).
    pub heads: usize,
    /// Rotary position embeddings on each head's queries and keys after their projections,
    /// with this base (see [`rotary`](super::rotary); self-attention only, an even head size);
    /// `None`: none.
    pub rotary: Option<u32>,
    /// Whether a training forward drops attention weights (PyTorch's `dropout` argument of
    /// `nn.MultiheadAttention`, see [`multi_head_attention_forward`]): the scratch then also
    /// holds the mask, `[B, H, T, S]`, for the backward.
    pub dropout: bool,
}

impl AttentionDims {
    /// The size of one head, `embed / heads` (0 when `heads` is 0, which the kernels reject).
    pub fn head_dim(&self) -> usize {
        self.embed.checked_div(self.heads).unwrap_or(0)
    }

    /// The scratch the kernels need, in elements:
    /// `2·(B·T·D + 2·B·S·D) + B·H·T·S + 2·B·T·D + 2·T·S`, and `B·H·T·S` more with
    /// [`dropout`](Self::dropout). In order: the projections `Q`, `K`, `V` (`B·T·D + 2·B·S·D`),
    /// the probabilities `P` (`[B, H, T, S]`) and the heads' outputs `O` (`[B, T, D]`), which
    /// the forward writes for the backward; then the backward's own buffers: the gradients of
    /// the projections and of `O`, and one `T × S` tile per thread (the forward's kept
    /// probabilities with dropout); then the dropout mask.
    pub fn scratch_len(&self) -> usize {
        let l = Layout::of(self);
        l.total
    }

    /// `B·T`: the rows of `query` and `out`.
    fn q_rows(&self) -> usize {
        self.batch * self.q_len
    }

    /// `B·S`: the rows of the memory.
    fn kv_rows(&self) -> usize {
        self.batch * self.kv_len
    }

    /// The multiply-adds of the attention products proper (`Q Kᵀ` and `P V`), per pass.
    fn core_work(&self) -> usize {
        2 * self.q_rows() * self.kv_len * self.embed
    }

    /// The (sequence, head) pairs.
    fn units(&self) -> usize {
        self.batch * self.heads
    }

    #[track_caller]
    fn check(&self, what: &str) {
        assert!(self.heads > 0, "{what}: heads must be at least 1");
        assert!(
            self.embed.is_multiple_of(self.heads),
            "{what}: embed {} is not a multiple of heads {}",
            self.embed,
            self.heads
        );
        assert!(
            self.kv_len > 0 || self.q_rows() == 0,
            "{what}: queries need at least one key"
        );
        assert!(
            self.rotary.is_none() || self.head_dim().is_multiple_of(2),
            "{what}: rotary position embeddings need an even head size, not {}",
            self.head_dim()
        );
    }

    /// Where the rotary embeddings turn the queries (columns from 0) and the keys (from `D`)
    /// of self-attention's projections, `[B·T, 3D]`.
    fn rotary_layout(&self, base: u32) -> super::rotary::RotaryLayout {
        super::rotary::RotaryLayout {
            rows: self.q_rows(),
            stride: 3 * self.embed,
            column: 0,
            sets: 2,
            set_stride: self.embed,
            heads: self.heads,
            head_dim: self.head_dim(),
            seq: self.q_len,
            first: 0,
            base,
        }
    }
}

/// The lengths of the parts of the scratch, in order (see [`AttentionDims::scratch_len`]).
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// The projections (and, in the backward's part, their gradients): `[B·T, 3D]`, each row
    /// `Q | K | V`, for self-attention; `Q` as `[B·T, D]` then `K | V` as `[B·S, 2D]` for
    /// cross-attention (see [`Proj`]). Both take `B·T·D + 2·B·S·D` elements.
    proj_len: usize,
    /// `P`, `[B, H, T, S]`.
    probs_len: usize,
    /// `O` (and its gradient), `[B·T, D]`.
    heads_len: usize,
    /// One thread's `T × S` tile.
    tile_len: usize,
    /// The dropout mask, `[B, H, T, S]` (none without dropout).
    mask_len: usize,
    /// The whole scratch.
    total: usize,
}

impl Layout {
    fn of(d: &AttentionDims) -> Self {
        let proj_len = d.q_rows() * d.embed + 2 * d.kv_rows() * d.embed;
        let probs_len = d.units() * d.q_len * d.kv_len;
        let heads_len = d.q_rows() * d.embed;
        let tile_len = d.q_len * d.kv_len;
        let mask_len = if d.dropout { probs_len } else { 0 };
        Self {
            proj_len,
            probs_len,
            heads_len,
            tile_len,
            mask_len,
            total: 2 * proj_len + probs_len + 2 * heads_len + 2 * tile_len + mask_len,
        }
    }

    /// The forward's part of the scratch: projections, probabilities, heads' outputs, the
    /// per-thread tiles (which hold the dropped probabilities with dropout) and the mask.
    fn forward_parts<'a, F>(&self, scratch: &'a mut [F]) -> ForwardParts<'a, F> {
        let (proj, rest) = scratch.split_at_mut(self.proj_len);
        let (probs, rest) = rest.split_at_mut(self.probs_len);
        let (heads, rest) = rest.split_at_mut(self.heads_len);
        let rest = &mut rest[self.proj_len + self.heads_len..];
        let (tiles, rest) = rest.split_at_mut(2 * self.tile_len);
        ForwardParts {
            proj,
            probs,
            heads,
            tiles,
            mask: &mut rest[..self.mask_len],
        }
    }
}

/// The scratch split for the forward (see [`Layout::forward_parts`]).
struct ForwardParts<'a, F> {
    proj: &'a mut [F],
    probs: &'a mut [F],
    heads: &'a mut [F],
    tiles: &'a mut [F],
    mask: &'a mut [F],
}

/// The scratch split for the backward: what the forward left, then the backward's buffers.
struct BackwardParts<'a, F> {
    proj: &'a [F],
    probs: &'a [F],
    heads: &'a [F],
    d_proj: &'a mut [F],
    d_heads: &'a mut [F],
    tiles: &'a mut [F],
    /// The dropout mask the forward drew (empty without dropout).
    mask: &'a [F],
}

impl<'a, F> BackwardParts<'a, F> {
    fn new(l: &Layout, scratch: &'a mut [F]) -> Self {
        let (proj, rest) = scratch.split_at_mut(l.proj_len);
        let (probs, rest) = rest.split_at_mut(l.probs_len);
        let (heads, rest) = rest.split_at_mut(l.heads_len);
        let (d_proj, rest) = rest.split_at_mut(l.proj_len);
        let (d_heads, rest) = rest.split_at_mut(l.heads_len);
        let (tiles, rest) = rest.split_at_mut(2 * l.tile_len);
        Self {
            proj,
            probs,
            heads,
            d_proj,
            d_heads,
            tiles,
            mask: &rest[..l.mask_len],
        }
    }
}

/// Offsets and row strides of `Q`, `K`, `V` inside the projection buffer (and of their
/// gradients inside its twin).
#[derive(Clone, Copy, Debug)]
struct Proj {
    q: usize,
    q_stride: usize,
    k: usize,
    v: usize,
    kv_stride: usize,
}

impl Proj {
    fn of(d: &AttentionDims, self_attention: bool) -> Self {
        let e = d.embed;
        if self_attention {
            Self {
                q: 0,
                q_stride: 3 * e,
                k: e,
                v: 2 * e,
                kv_stride: 3 * e,
            }
        } else {
            let q_len = d.q_rows() * e;
            Self {
                q: 0,
                q_stride: e,
                k: q_len,
                v: q_len + e,
                kv_stride: 2 * e,
            }
        }
    }

    /// The offset of head `h`'s columns of `Q` in sequence `b`.
    fn q_at(&self, d: &AttentionDims, b: usize, h: usize) -> usize {
        self.q + b * d.q_len * self.q_stride + h * d.head_dim()
    }

    /// The offset of head `h`'s columns of `K` in sequence `b` (those of `V` are `v − k`
    /// further).
    fn k_at(&self, d: &AttentionDims, b: usize, h: usize) -> usize {
        self.k + b * d.kv_len * self.kv_stride + h * d.head_dim()
    }
}

/// Multi-head attention: writes `out` (`[B, T, D]`) from `query` (`[B, T, D]`) and, for
/// cross-attention, `memory` (`[B, S, D]`; `None` is self-attention, where the keys and values
/// are the query's own and `S = T`).
///
/// - `causal`: query `i` sees key `j` only if `j ≤ i` (top-left aligned when `T ≠ S`, as
///   PyTorch's `tril(ones(T, S))`).
/// - `key_lengths` (`[B]`, each in `1..=S`): keys `j ≥ key_lengths[b]` are masked for every
///   query of sequence `b` (a key padding mask). Masked keys are skipped, not just weighted
///   by zero, so padding values never reach the result.
/// - `dropout` (with `d.dropout`; training only): each attention weight is kept with
///   probability `1 − p` and scaled by `1 / (1 − p)`, or dropped, before the weighted sum of
///   the values, as `nn.MultiheadAttention(dropout = p)` in training. The call takes one draw
///   from `rng`, which seeds each (sequence, head) pair's mask (so the mask does not depend
///   on the thread count), and keeps the mask in the scratch for the backward. `None` with
///   `d.dropout` keeps every weight (inference).
/// - `scratch` (at least [`d.scratch_len()`](AttentionDims::scratch_len) elements; its
///   contents on entry do not matter) receives what [`multi_head_attention_backward`] needs:
///   give the backward the same scratch, unchanged, with the same inputs.
///
/// # Panics
/// If a slice's length disagrees with `d`, `d.heads` is 0 or does not divide `d.embed`, a key
/// length is out of range, `memory` is `None` while `d.kv_len ≠ d.q_len`, or `dropout` is given
/// without `d.dropout` or with a probability outside `[0, 1]` (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::attention::{
///     multi_head_attention_forward, AttentionDims, AttentionParams,
/// };
/// // One head of size 1 over two tokens; identity projections, no biases.
/// let d = AttentionDims {
///     batch: 1, q_len: 2, kv_len: 2, embed: 1, heads: 1, rotary: None, dropout: false,
/// };
/// let p = AttentionParams {
///     in_proj_weight: &[1.0f64, 1.0, 1.0],
///     in_proj_bias: None,
///     out_proj_weight: &[1.0],
///     out_proj_bias: None,
/// };
/// let mut scratch = vec![0.0; d.scratch_len()];
/// let mut out = [0.0; 2];
/// // Causal: the first token sees only itself.
/// multi_head_attention_forward(&d, &[3.0, 5.0], None, true, None, &p, None, &mut scratch, &mut out);
/// assert_eq!(out[0], 3.0);
/// let w = 1.0 / (1.0 + (-10.0f64).exp()); // softmax([15, 25]) on the second row
/// assert!((out[1] - (3.0 * (1.0 - w) + 5.0 * w)).abs() < 1e-12);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn multi_head_attention_forward<F: Float>(
    d: &AttentionDims,
    query: &[F],
    memory: Option<&[F]>,
    causal: bool,
    key_lengths: Option<&[usize]>,
    p: &AttentionParams<'_, F>,
    dropout: Option<AttentionDropout<'_>>,
    scratch: &mut [F],
    out: &mut [F],
) {
    const WHAT: &str = "multi_head_attention_forward";
    check_inputs(WHAT, d, query, memory, key_lengths, p);
    check_len(WHAT, "out", out.len(), d.q_rows() * d.embed);
    let l = Layout::of(d);
    check_scratch(WHAT, scratch.len(), &l);
    let ForwardParts {
        proj,
        probs,
        heads,
        tiles,
        mask,
    } = l.forward_parts(scratch);
    // One draw from the caller's generator per call; each (sequence, head) pair then draws
    // its weights' mask from a generator of its own seeded from it (see `draw_seeded_mask`).
    let drop = match dropout {
        Some(AttentionDropout { p, rng }) => {
            assert!(d.dropout, "{WHAT}: dropout given, but d.dropout is false");
            assert!(
                (0.0..=1.0).contains(&p),
                "{WHAT}: the dropout probability must be in [0, 1], got {p}"
            );
            Some((p, rand::Rng::next_u64(rng)))
        }
        None => None,
    };
    let (mask, tiles) = (Shared::new(mask), Shared::new(tiles));
    let e = d.embed;
    match memory {
        None => linear_forward(
            query,
            p.in_proj_weight,
            p.in_proj_bias,
            d.q_rows(),
            e,
            3 * e,
            proj,
        ),
        Some(memory) => {
            let (w_q, w_kv) = p.in_proj_weight.split_at(e * e);
            let (b_q, b_kv) = match p.in_proj_bias {
                Some(b) => {
                    let (q, kv) = b.split_at(e);
                    (Some(q), Some(kv))
                }
                None => (None, None),
            };
            let (p_q, p_kv) = proj.split_at_mut(d.q_rows() * e);
            linear_forward(query, w_q, b_q, d.q_rows(), e, e, p_q);
            linear_forward(memory, w_kv, b_kv, d.kv_rows(), e, 2 * e, p_kv);
        }
    }
    if let Some(base) = d.rotary {
        assert!(
            memory.is_none(),
            "{WHAT}: rotary embeddings are for self-attention"
        );
        super::rotary::rotate(proj, &d.rotary_layout(base), false);
    }
    let lay = Proj::of(d, memory.is_none());
    let proj: &[F] = proj;
    let (t, s, hd) = (d.q_len, d.kv_len, d.head_dim());
    let scale = F::from_f64(1.0 / (hd as f64).sqrt());
    let probs = Shared::new(probs);
    let heads_out = Shared::new(heads);
    for_each_unit(d, |b, h, thread| {
        let len = key_length(key_lengths, b, s);
        let unit = b * d.heads + h;
        // SAFETY: each (sequence, head) pair is visited once, and owns its block of `P` and
        // its head's columns of its sequence's rows of `O`.
        let (probs, mut o) = unsafe {
            (
                probs.range(unit * t * s..(unit + 1) * t * s),
                heads_out.mat(b * t * e + h * hd, t, hd, e),
            )
        };
        let q = Mat::new(proj, lay.q_at(d, b, h), t, hd, lay.q_stride);
        let k = Mat::new(proj, lay.k_at(d, b, h), len, hd, lay.kv_stride);
        let v = Mat::new(
            proj,
            lay.k_at(d, b, h) + lay.v - lay.k,
            len,
            hd,
            lay.kv_stride,
        );
        // The scores of the keys each block of queries may see, then their probabilities
        // row by row, then the weighted values.
        let mut scores = MatMut::new(probs, 0, t, s, s);
        for rows in query_blocks(causal, t) {
            let keys = visible(causal, rows.end - 1, len);
            product(
                scale,
                q.block(rows.clone(), 0..hd),
                k.block(0..keys, 0..hd).t(),
                F::ZERO,
                scores.block(rows, 0..keys),
            );
        }
        run_fast(SoftmaxRows {
            scores: &mut *probs,
            kv_len: s,
            len,
            causal,
            first_query: 0,
        });
        // With dropout, the values are weighted by the kept probabilities, in this thread's
        // tile (`P` itself stays for the backward's softmax).
        let probs: &[F] = if d.dropout {
            // SAFETY: each thread has its own tile, and each pair its block of the mask.
            let (tile, mask) = unsafe {
                (
                    tiles.range(thread * t * s..(thread + 1) * t * s),
                    mask.range(unit * t * s..(unit + 1) * t * s),
                )
            };
            match drop {
                Some((p, seed)) => draw_seeded_mask(p, seed, unit, mask),
                None => mask.fill(F::ONE),
            }
            drop_weights(probs, mask, tile);
            tile
        } else {
            probs
        };
        let probs = Mat::new(probs, 0, t, s, s);
        for rows in query_blocks(causal, t) {
            let keys = visible(causal, rows.end - 1, len);
            product(
                F::ONE,
                probs.block(rows.clone(), 0..keys),
                v.block(0..keys, 0..hd),
                F::ZERO,
                o.block(rows, 0..hd),
            );
        }
    });
    linear_forward(
        heads,
        p.out_proj_weight,
        p.out_proj_bias,
        d.q_rows(),
        e,
        e,
        out,
    );
}

/// The VJPs of [`multi_head_attention_forward`] given the output adjoint `d_out`
/// (`[B, T, D]`), from the forward's `scratch` (unchanged since, with the same `query`,
/// `memory`, masks and parameters):
///
/// - the parameter gradients in `g` are OVERWRITTEN (a layer's gradients are written by one
///   backward call); a bias gradient is written only when given. A frozen layer passes
///   `None`: its four weight and bias products are skipped, and only the input gradients
///   below are computed;
/// - `d_query = Some((buffer, accumulate))` gets the query's gradient (`[B, T, D]`), written
///   or (`accumulate`) added; in self-attention this is the sum of the three paths, through
///   `Q`, `K` and `V`;
/// - `d_memory` likewise gets the memory's gradient (`[B, S, D]`, cross-attention only).
///   Masked keys get exactly zero.
///
/// # Panics
/// As for the forward, and if `d_memory` is given for self-attention (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn multi_head_attention_backward<F: Float>(
    d: &AttentionDims,
    query: &[F],
    memory: Option<&[F]>,
    causal: bool,
    key_lengths: Option<&[usize]>,
    p: &AttentionParams<'_, F>,
    scratch: &mut [F],
    d_out: &[F],
    d_query: Option<(&mut [F], bool)>,
    d_memory: Option<(&mut [F], bool)>,
    g: Option<AttentionGrads<'_, F>>,
) {
    const WHAT: &str = "multi_head_attention_backward";
    check_inputs(WHAT, d, query, memory, key_lengths, p);
    let e = d.embed;
    check_len(WHAT, "d_out", d_out.len(), d.q_rows() * e);
    if let Some(g) = &g {
        check_len(
            WHAT,
            "in_proj_weight grad",
            g.in_proj_weight.len(),
            3 * e * e,
        );
        check_len(WHAT, "out_proj_weight grad", g.out_proj_weight.len(), e * e);
        if let Some(db) = g.in_proj_bias.as_deref() {
            check_len(WHAT, "in_proj_bias grad", db.len(), 3 * e);
        }
        if let Some(db) = g.out_proj_bias.as_deref() {
            check_len(WHAT, "out_proj_bias grad", db.len(), e);
        }
    }
    if let Some((dq, _)) = d_query.as_ref() {
        check_len(WHAT, "d_query", dq.len(), d.q_rows() * e);
    }
    match (memory, d_memory.as_ref()) {
        (None, Some(_)) => panic!("{WHAT}: d_memory given for self-attention"),
        (Some(_), Some((dm, _))) => check_len(WHAT, "d_memory", dm.len(), d.kv_rows() * e),
        _ => {}
    }
    let l = Layout::of(d);
    check_scratch(WHAT, scratch.len(), &l);
    let parts = BackwardParts::new(&l, scratch);

    // The output projection: dWo = dOutᵀ O, dbo = Σ dOut, dO = dOut Wo.
    let rows = d.q_rows();
    let (mut in_proj_weight, mut in_proj_bias) = (None, None);
    if let Some(g) = g {
        linear_backward_weight(parts.heads, d_out, rows, e, e, g.out_proj_weight, false);
        if let Some(db) = g.out_proj_bias {
            linear_backward_bias(d_out, rows, e, db, false);
        }
        (in_proj_weight, in_proj_bias) = (Some(g.in_proj_weight), g.in_proj_bias);
    }
    gemm(
        rows,
        e,
        e,
        F::ONE,
        d_out,
        false,
        p.out_proj_weight,
        false,
        F::ZERO,
        parts.d_heads,
    );

    // The attention proper, per (sequence, head), into the gradients of Q, K and V.
    let lay = Proj::of(d, memory.is_none());
    let (proj, probs, d_heads, mask) = (parts.proj, parts.probs, &*parts.d_heads, parts.mask);
    let (t, s, hd) = (d.q_len, d.kv_len, d.head_dim());
    let scale = F::from_f64(1.0 / (hd as f64).sqrt());
    let d_proj = Shared::new(&mut *parts.d_proj);
    let tiles = Shared::new(parts.tiles);
    for_each_unit(d, |b, h, thread| {
        let len = key_length(key_lengths, b, s);
        let unit = b * d.heads + h;
        let (q_at, k_at) = (lay.q_at(d, b, h), lay.k_at(d, b, h));
        let v_at = k_at + lay.v - lay.k;
        // SAFETY: each thread has its own tile; each (sequence, head) pair is visited once
        // and owns its head's columns of its sequence's rows of dQ, dK and dV.
        let (tile, mut dq, mut dk, mut dv) = unsafe {
            (
                tiles.range(thread * t * s..(thread + 1) * t * s),
                d_proj.mat(q_at, t, hd, lay.q_stride),
                d_proj.mat(k_at, s, hd, lay.kv_stride),
                d_proj.mat(v_at, s, hd, lay.kv_stride),
            )
        };
        let probs = &probs[unit * t * s..(unit + 1) * t * s];
        let mask = if d.dropout {
            &mask[unit * t * s..(unit + 1) * t * s]
        } else {
            &[]
        };
        let d_o = Mat::new(d_heads, b * t * e + h * hd, t, hd, e);
        let q = Mat::new(proj, q_at, t, hd, lay.q_stride);
        let k = Mat::new(proj, k_at, len, hd, lay.kv_stride);
        let v = Mat::new(proj, v_at, len, hd, lay.kv_stride);

        // dV = Pᵀ dO (the kept probabilities with dropout, in the tile until dP takes it),
        // by blocks of keys over the queries that see them; masked keys get none.
        let weights: &[F] = if d.dropout {
            drop_weights(probs, mask, tile);
            tile
        } else {
            probs
        };
        let p = Mat::new(weights, 0, t, s, s);
        for keys in query_blocks(causal, len) {
            let seen_by = first_query(causal, keys.start, t)..t;
            product(
                F::ONE,
                p.block(seen_by.clone(), keys.clone()).t(),
                d_o.block(seen_by, 0..hd),
                F::ZERO,
                dv.block(keys, 0..hd),
            );
        }
        dv.block(len..s, 0..hd).fill_zero();
        // dP = dO Vᵀ (through the mask with dropout), then dS = P ∘ (dP − Σ dP ∘ P) / √hd
        // in place, row by row.
        // SAFETY: as above: this thread's tile, which `p` no longer reads.
        let tile = unsafe { tiles.range(thread * t * s..(thread + 1) * t * s) };
        let mut grads = MatMut::new(tile, 0, t, s, s);
        for rows in query_blocks(causal, t) {
            let keys = visible(causal, rows.end - 1, len);
            product(
                F::ONE,
                d_o.block(rows.clone(), 0..hd),
                v.block(0..keys, 0..hd).t(),
                F::ZERO,
                grads.block(rows, 0..keys),
            );
        }
        if d.dropout {
            for (g, &m) in tile.iter_mut().zip(mask) {
                *g *= m;
            }
        }
        run_fast(SoftmaxGradRows {
            grads: &mut *tile,
            probs,
            kv_len: s,
            len,
            causal,
            scale,
        });
        let ds = Mat::new(tile, 0, t, s, s);
        // dQ = dS K by blocks of queries, dK = dSᵀ Q by blocks of keys.
        for rows in query_blocks(causal, t) {
            let keys = visible(causal, rows.end - 1, len);
            product(
                F::ONE,
                ds.block(rows.clone(), 0..keys),
                k.block(0..keys, 0..hd),
                F::ZERO,
                dq.block(rows, 0..hd),
            );
        }
        for keys in query_blocks(causal, len) {
            let seen_by = first_query(causal, keys.start, t)..t;
            product(
                F::ONE,
                ds.block(seen_by.clone(), keys.clone()).t(),
                q.block(seen_by, 0..hd),
                F::ZERO,
                dk.block(keys, 0..hd),
            );
        }
        dk.block(len..s, 0..hd).fill_zero();
    });

    // Back through the rotary embeddings: the gradients of the projections before them.
    if let Some(base) = d.rotary {
        super::rotary::rotate(&mut *parts.d_proj, &d.rotary_layout(base), true);
    }
    // The input projections, over all rows at once.
    let d_proj: &[F] = parts.d_proj;
    match memory {
        None => {
            if let Some(dw) = in_proj_weight {
                linear_backward_weight(query, d_proj, rows, e, 3 * e, dw, false);
            }
            if let Some(db) = in_proj_bias {
                linear_backward_bias(d_proj, rows, 3 * e, db, false);
                // Rotated by its key's position, the key bias no longer adds the same to every
                // score of a query: its gradient is not zero.
                if d.rotary.is_none() {
                    zero_key_bias(db, e);
                }
            }
            if let Some((dq, accumulate)) = d_query {
                linear_backward_input(d_proj, p.in_proj_weight, rows, e, 3 * e, dq, accumulate);
            }
        }
        Some(memory) => {
            let (dp_q, dp_kv) = d_proj.split_at(rows * e);
            if let Some(dw) = in_proj_weight {
                let (gw_q, gw_kv) = dw.split_at_mut(e * e);
                linear_backward_weight(query, dp_q, rows, e, e, gw_q, false);
                linear_backward_weight(memory, dp_kv, d.kv_rows(), e, 2 * e, gw_kv, false);
            }
            if let Some(db) = in_proj_bias {
                let (db_q, db_kv) = db.split_at_mut(e);
                linear_backward_bias(dp_q, rows, e, db_q, false);
                linear_backward_bias(dp_kv, d.kv_rows(), 2 * e, db_kv, false);
                zero_key_bias(db, e);
            }
            let (w_q, w_kv) = p.in_proj_weight.split_at(e * e);
            if let Some((dq, accumulate)) = d_query {
                linear_backward_input(dp_q, w_q, rows, e, e, dq, accumulate);
            }
            if let Some((dm, accumulate)) = d_memory {
                linear_backward_input(dp_kv, w_kv, d.kv_rows(), e, 2 * e, dm, accumulate);
            }
        }
    }
}

/// Attention-weight dropout for a training forward (see [`multi_head_attention_forward`]).
pub struct AttentionDropout<'a> {
    /// The probability of dropping each weight, in `[0, 1]`.
    pub p: f64,
    /// The generator the mask is drawn from.
    pub rng: &'a mut dyn rand::Rng,
}

/// `kept = probs ∘ mask`: the attention weights after dropout (the mask is `0` or
/// `1 / (1 − p)` per weight).
fn drop_weights<F: Float>(probs: &[F], mask: &[F], kept: &mut [F]) {
    for ((k, &p), &m) in kept.iter_mut().zip(probs).zip(mask) {
        *k = p * m;
    }
}

/// Writes the key bias's gradient as the exact 0 it is. The key bias adds `q · b_k` to every
/// score of a query, the same for all its keys, which the softmax removes; summed in floating
/// point, the gradient comes out as rounding noise instead, and an optimizer that normalises by
/// the gradient's size (Adam) would turn that noise into steps of the full learning rate.
fn zero_key_bias<F: Float>(d_in_proj_bias: &mut [F], e: usize) {
    d_in_proj_bias[e..2 * e].fill(F::ZERO);
}

/// The parameters of one attention layer, as flat row-major slices in PyTorch's layout.
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams<'a, F> {
    /// `[3D, D]`: the query, key and value projections' weights, stacked.
    pub in_proj_weight: &'a [F],
    /// `[3D]`, if the layer has biases.
    pub in_proj_bias: Option<&'a [F]>,
    /// `[D, D]`.
    pub out_proj_weight: &'a [F],
    /// `[D]`, if the layer has biases.
    pub out_proj_bias: Option<&'a [F]>,
}

/// The buffers [`multi_head_attention_backward`] OVERWRITES with the parameter gradients,
/// in the layouts of [`AttentionParams`].
#[derive(Debug)]
pub struct AttentionGrads<'a, F> {
    /// `[3D, D]`.
    pub in_proj_weight: &'a mut [F],
    /// `[3D]`, written if given.
    pub in_proj_bias: Option<&'a mut [F]>,
    /// `[D, D]`.
    pub out_proj_weight: &'a mut [F],
    /// `[D]`, written if given.
    pub out_proj_bias: Option<&'a mut [F]>,
}

#[track_caller]
fn check_len(what: &str, name: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "{what}: {name} has {got} elements, expected {want}"
    );
}

#[track_caller]
fn check_scratch(what: &str, got: usize, l: &Layout) {
    assert!(
        got >= l.total,
        "{what}: scratch has {got} elements, needs at least {} (AttentionDims::scratch_len)",
        l.total
    );
}

#[track_caller]
fn check_inputs<F>(
    what: &str,
    d: &AttentionDims,
    query: &[F],
    memory: Option<&[F]>,
    key_lengths: Option<&[usize]>,
    p: &AttentionParams<'_, F>,
) {
    d.check(what);
    let e = d.embed;
    check_len(what, "query", query.len(), d.q_rows() * e);
    match memory {
        Some(memory) => check_len(what, "memory", memory.len(), d.kv_rows() * e),
        None => assert_eq!(
            d.kv_len, d.q_len,
            "{what}: self-attention with kv_len {} ≠ q_len {}",
            d.kv_len, d.q_len
        ),
    }
    check_len(what, "in_proj_weight", p.in_proj_weight.len(), 3 * e * e);
    check_len(what, "out_proj_weight", p.out_proj_weight.len(), e * e);
    if let Some(b) = p.in_proj_bias {
        check_len(what, "in_proj_bias", b.len(), 3 * e);
    }
    if let Some(b) = p.out_proj_bias {
        check_len(what, "out_proj_bias", b.len(), e);
    }
    if let Some(lengths) = key_lengths {
        check_len(what, "key_lengths", lengths.len(), d.batch);
        for (b, &len) in lengths.iter().enumerate() {
            assert!(
                (1..=d.kv_len).contains(&len),
                "{what}: key_lengths[{b}] = {len} is outside 1..={}",
                d.kv_len
            );
        }
    }
}

/// The keys in range for sequence `b`: its length, or all `s`.
#[inline]
fn key_length(key_lengths: Option<&[usize]>, b: usize, s: usize) -> usize {
    key_lengths.map_or(s, |l| l[b])
}

/// How many keys query `i` sees among the first `len`: both masks keep a prefix of the keys,
/// and a causal row `i` keeps at least key 0.
#[inline]
fn visible(causal: bool, i: usize, len: usize) -> usize {
    if causal {
        (i + 1).min(len)
    } else {
        len
    }
}

/// The rows of a causal tile are taken in blocks of this many, so that each block's products
/// cover only the keys it may see (`keys < block end`): with `T = S = 64` a quarter of the
/// multiply-adds are skipped. Smaller blocks would skip more but run slower: the per-product
/// overhead (packing) outweighs the work saved.
const CAUSAL_BLOCK: usize = 32;

/// The blocks of `n` query rows (or keys) the products are cut in: blocks of
/// [`CAUSAL_BLOCK`] under a causal mask, else one block.
fn query_blocks(causal: bool, n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = if causal { CAUSAL_BLOCK } else { n.max(1) };
    (0..n)
        .step_by(step)
        .map(move |start| start..(start + step).min(n))
}

/// The end of the block of [`query_blocks`] holding row `i` of `rows`.
fn block_end(causal: bool, i: usize, rows: usize) -> usize {
    if causal {
        ((i / CAUSAL_BLOCK + 1) * CAUSAL_BLOCK).min(rows)
    } else {
        rows
    }
}

/// The first of `t` queries that sees key `key`: the key's own row under a causal mask (none,
/// `t`, past the last query), else the first.
fn first_query(causal: bool, key: usize, t: usize) -> usize {
    if causal {
        key.min(t)
    } else {
        0
    }
}

/// The softmax of a tile's score rows (`[T, S]`, computed for the keys each block of queries
/// sees, see [`query_blocks`]), in place:
/// each row's visible prefix becomes its probabilities, the rest exact zeros. Run through
/// [`run_fast`] so that the row loops use the CPU's vector units. Also the decoding cache's
/// softmax (`kernels::kv_cache`), whose rows are queries `first_query ..` of their sequence.
pub(super) struct SoftmaxRows<'a, F> {
    /// The scores, `kv_len` to a row.
    pub scores: &'a mut [F],
    /// The row stride of `scores`: the keys a row has room for.
    pub kv_len: usize,
    /// The keys there are (a row sees at most these).
    pub len: usize,
    /// Whether a query sees only the keys up to its own position.
    pub causal: bool,
    /// The position of the first row's query in its sequence (with `causal`, query `q` sees
    /// keys `0 ..= q`).
    pub first_query: usize,
}

impl<F: Float> ElementLoop for SoftmaxRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let minus_infinity = F::from_f64(f64::NEG_INFINITY);
        for (i, row) in self.scores.chunks_exact_mut(self.kv_len).enumerate() {
            // The row is worked on in whole vectors where it has room: the masked keys up to
            // the next multiple of LANES are set to −∞, whose exponential is 0, so that no
            // row has a tail of its own (causal rows are all of different lengths).
            let live = visible(self.causal, self.first_query + i, self.len);
            let padded = live.next_multiple_of(LANES).min(row.len());
            let (row, masked) = row.split_at_mut(padded);
            row[live..].fill(minus_infinity);
            let max = lane_max(row);
            exp_shifted(row, max);
            let inv = F::ONE / lane_sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
            masked.fill(F::ZERO);
        }
    }
}

/// The softmax's VJP over a tile, in place: `grads` (`[T, S]`, computed for the keys each
/// block of queries sees, see [`query_blocks`]) holds `dP` and becomes `dS = P ∘ (dP − Σ dP ∘ P) · scale`, exact zeros where a key
/// is masked. Run through [`run_fast`].
struct SoftmaxGradRows<'a, F> {
    grads: &'a mut [F],
    probs: &'a [F],
    kv_len: usize,
    len: usize,
    causal: bool,
    scale: F,
}

impl<F: Float> ElementLoop for SoftmaxGradRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let rows = self.grads.len() / self.kv_len;
        let pairs = self
            .grads
            .chunks_exact_mut(self.kv_len)
            .zip(self.probs.chunks_exact(self.kv_len));
        for (i, (g, p)) in pairs.enumerate() {
            // Whole vectors as in `SoftmaxRows`: up to the next multiple of LANES the masked
            // probabilities are 0 and dP finite (where computed: for the keys the row's
            // block of queries sees), so the extra elements add 0 to the sum and get 0. The
            // rest of the `len` keys are zeroed, for the products that read whole blocks.
            let seen = visible(self.causal, i, self.len);
            let computed = visible(self.causal, block_end(self.causal, i, rows) - 1, self.len);
            let padded = seen.next_multiple_of(LANES).min(computed);
            let (g, masked) = g[..self.len].split_at_mut(padded);
            let p = &p[..padded];
            let dot = lane_dot(p, g);
            for (g, &p) in g.iter_mut().zip(p) {
                *g = p * (*g - dot) * self.scale;
            }
            masked.fill(F::ZERO);
        }
    }
}

/// `v ← exp(v − shift)` (meant for `v ≤ shift`; other elements get unspecified values). f32 takes [`exp_nonpositive_f32`], which vectorises
/// (the library's `expf` is a call per element and was a fifth of the forward); f64 keeps
/// the library's `exp`.
#[inline(always)]
fn exp_shifted<F: Float>(v: &mut [F], shift: F) {
    if TypeId::of::<F>() == TypeId::of::<f32>() {
        // SAFETY: `F` is `f32`: the same slice, with its own type.
        let v = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) };
        // Exact: `F` is f32.
        let shift = shift.to_f64() as f32;
        for x in v.iter_mut() {
            *x = exp_nonpositive_f32(*x - shift);
        }
    } else {
        for x in v.iter_mut() {
            *x = (*x - shift).exp();
        }
    }
}

/// `eˣ` for `x ≤ 0`, branch-free so that loops over it vectorise, with a relative error under
/// `0.7 · f32::EPSILON` on `[−87, 0]`: Cephes' `expf` (`x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a
/// degree-5 polynomial for `(eʳ − 1 − r) / r²`, then `2ⁿ` built in the exponent bits). Below
/// −87, where `eˣ` leaves the normal range, the result is 0 (a probability under 10⁻³⁸ of the
/// largest).
#[inline(always)]
fn exp_nonpositive_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for |n| ≤ 2⁹.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 · 2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    let underflow = x < -87.0;
    let x = if underflow { -87.0 } else { x };
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let poly = P[1..].iter().fold(P[0], |acc, &c| acc * r + c);
    let er = poly * (r * r) + r + 1.0;
    // `shifted`'s low mantissa bits hold n ∈ [−126, 0] (its bits are those of 1.5 · 2²³ plus
    // n), so 2ⁿ, a normal number with biased exponent n + 127, is built from them without a
    // float-to-integer conversion (whose saturating semantics do not vectorise).
    let two_n = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    if underflow {
        0.0
    } else {
        er * two_n
    }
}

/// The fewest multiply-adds of attention products worth handing half of to the helper
/// thread: below that the hand-over costs about what it saves.
const MIN_SPLIT_WORK: usize = 1 << 18;

/// Runs `work(b, h, thread)` for every (sequence `b`, head `h`) pair. The pairs are cut into
/// [`parallel::chunk_count`] fixed chunks, shared by the two threads when the work is large
/// enough; `thread` (0 or 1) selects per-thread scratch.
fn for_each_unit(d: &AttentionDims, work: impl Fn(usize, usize, usize) + Sync) {
    let units = d.units();
    let chunks = parallel::chunk_count(units);
    let run = |chunk: usize, thread: usize| {
        for unit in parallel::chunk_range(units, chunks, chunk) {
            work(unit / d.heads, unit % d.heads, thread);
        }
    };
    if d.core_work() >= MIN_SPLIT_WORK && parallel::threads() >= 2 {
        parallel::for_each_chunk(chunks, run);
    } else {
        (0..chunks).for_each(|chunk| run(chunk, 0));
    }
}

/// A buffer whose disjoint parts the (sequence, head) pairs write from either thread: a
/// pair's block of `P`, or a head's columns of a sequence's rows (interleaved with the other
/// heads' columns, hence raw pointers rather than sub-slices).
struct Shared<'a, F> {
    ptr: *mut F,
    len: usize,
    _borrow: PhantomData<&'a mut [F]>,
}

// SAFETY: a `Shared` only hands out views of elements that one thread at a time owns (by the
// contract of its methods), which is what sending `&mut [F]` to another thread allows.
unsafe impl<F: Send> Send for Shared<'_, F> {}
// SAFETY: as above.
unsafe impl<F: Send> Sync for Shared<'_, F> {}

impl<'a, F> Shared<'a, F> {
    fn new(data: &'a mut [F]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// The elements `range`.
    ///
    /// # Safety
    /// No other live view from this `Shared` may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, range: std::ops::Range<usize>) -> &'a mut [F] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: inside the buffer (checked), unaliased by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// The `rows × cols` matrix at `offset` with row stride `rs`.
    ///
    /// # Safety
    /// No other live view from this `Shared` may share an element with it.
    unsafe fn mat(&self, offset: usize, rows: usize, cols: usize, rs: usize) -> MatMut<'a, F> {
        check_view(self.len, offset, rows, cols, rs, 1);
        assert!(rows <= 1 || rs >= cols, "overlapping rows");
        MatMut {
            ptr: self.ptr.wrapping_add(offset),
            rows,
            cols,
            rs,
            _borrow: PhantomData,
        }
    }
}

/// Asserts that every element of a strided `rows × cols` view at `offset` lies inside a
/// buffer of `len` elements.
#[track_caller]
fn check_view(len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        let last = offset + (rows - 1) * rs + (cols - 1) * cs;
        assert!(last < len, "view ends at {last}, past a buffer of {len}");
    }
}

/// A read-only strided `rows × cols` matrix inside a slice: element `(i, j)` at
/// `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct Mat<'a, F> {
    ptr: *const F,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _borrow: PhantomData<&'a [F]>,
}

impl<'a, F> Mat<'a, F> {
    /// The `rows × cols` matrix at `offset` of `data` with row stride `rs`.
    #[track_caller]
    fn new(data: &'a [F], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        check_view(data.len(), offset, rows, cols, rs, 1);
        Self {
            ptr: data.as_ptr().wrapping_add(offset),
            rows,
            cols,
            rs,
            cs: 1,
            _borrow: PhantomData,
        }
    }

    /// The sub-matrix of rows `rows` and columns `cols`.
    #[track_caller]
    fn block(self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Self {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "rows out of the view"
        );
        assert!(
            cols.start <= cols.end && cols.end <= self.cols,
            "columns out of the view"
        );
        Self {
            ptr: self
                .ptr
                .wrapping_add(rows.start * self.rs + cols.start * self.cs),
            rows: rows.len(),
            cols: cols.len(),
            ..self
        }
    }

    /// The transpose: the same elements with the strides swapped.
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable strided `rows × cols` matrix (unit column stride, no two elements at one
/// address) whose elements nothing else accesses while it lives.
struct MatMut<'a, F> {
    ptr: *mut F,
    rows: usize,
    cols: usize,
    rs: usize,
    _borrow: PhantomData<&'a mut [F]>,
}

impl<'a, F> MatMut<'a, F> {
    /// The `rows × cols` matrix at `offset` of `data` with row stride `rs`.
    #[track_caller]
    fn new(data: &'a mut [F], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        // SAFETY: `data` is borrowed exclusively for the view's lifetime.
        unsafe { Shared::new(data).mat(offset, rows, cols, rs) }
    }

    /// The sub-matrix of rows `rows` and columns `cols`, borrowed from this one.
    #[track_caller]
    fn block(
        &mut self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> MatMut<'_, F> {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "rows out of the view"
        );
        assert!(
            cols.start <= cols.end && cols.end <= self.cols,
            "columns out of the view"
        );
        MatMut {
            ptr: self.ptr.wrapping_add(rows.start * self.rs + cols.start),
            rows: rows.len(),
            cols: cols.len(),
            rs: self.rs,
            _borrow: PhantomData,
        }
    }

    /// Sets every element to zero.
    fn fill_zero(self)
    where
        F: Float,
    {
        for i in 0..self.rows {
            // SAFETY: row `i` of the view: `cols` elements inside the buffer, owned by it.
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.rs), self.cols) };
            row.fill(F::ZERO);
        }
    }
}

/// `C = alpha · A · B + beta · C` on strided views, by kiln's GEMM.
#[track_caller]
fn product<F: Float>(alpha: F, a: Mat<'_, F>, b: Mat<'_, F>, beta: F, c: MatMut<'_, F>) {
    assert!(
        a.rows == c.rows && a.cols == b.rows && b.cols == c.cols,
        "product: {}×{} · {}×{} into {}×{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    // SAFETY: the views' constructors checked that every element of A, B and C lies inside
    // its buffer; C's elements are distinct and accessed by nothing else while it lives, and
    // A and B are shared borrows, so they cannot overlap C.
    unsafe {
        F::gemm_raw(
            c.rows,
            a.cols,
            c.cols,
            alpha,
            a.ptr,
            a.rs as isize,
            a.cs as isize,
            b.ptr,
            b.rs as isize,
            b.cs as isize,
            beta,
            c.ptr,
            c.rs as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    /// One configuration to check.
    #[derive(Clone, Debug)]
    struct Case {
        d: AttentionDims,
        cross: bool,
        causal: bool,
        lengths: Option<Vec<usize>>,
        bias: bool,
        /// Attention-weight dropout with this probability, the mask drawn from
        /// [`DROPOUT_SEED`] (`c.d.dropout` is then set).
        dropout: Option<f64>,
    }

    /// The seed of the dropout cases' masks, for the kernel and for [`naive`] alike.
    const DROPOUT_SEED: u64 = 23;

    /// The mask case `c`'s forward draws, `[B, H, T, S]` (all ones without dropout).
    fn dropout_mask(c: &Case) -> Vec<f64> {
        let d = c.d;
        let mut mask = vec![1.0; d.batch * d.heads * d.q_len * d.kv_len];
        if let Some(p) = c.dropout {
            use rand::{Rng, SeedableRng};
            let seed = rand::rngs::StdRng::seed_from_u64(DROPOUT_SEED).next_u64();
            for (unit, mask) in mask.chunks_exact_mut(d.q_len * d.kv_len).enumerate() {
                draw_seeded_mask(p, seed, unit, mask);
            }
        }
        mask
    }

    /// Case `c` with attention-weight dropout `p`.
    fn with_dropout(c: Case, p: f64) -> Case {
        Case {
            d: AttentionDims {
                dropout: true,
                ..c.d
            },
            dropout: Some(p),
            ..c
        }
    }

    fn dims(
        batch: usize,
        q_len: usize,
        kv_len: usize,
        embed: usize,
        heads: usize,
    ) -> AttentionDims {
        AttentionDims {
            batch,
            q_len,
            kv_len,
            embed,
            heads,
            rotary: None,
            dropout: false,
        }
    }

    /// [`dims`] of self-attention with rotary position embeddings of `base`.
    fn rotary(batch: usize, len: usize, embed: usize, heads: usize, base: u32) -> AttentionDims {
        AttentionDims {
            rotary: Some(base),
            ..dims(batch, len, len, embed, heads)
        }
    }

    fn cases() -> Vec<Case> {
        let case = |d, cross, causal, lengths: Option<&[usize]>, bias| Case {
            d,
            cross,
            causal,
            lengths: lengths.map(<[usize]>::to_vec),
            bias,
            dropout: None,
        };
        vec![
            case(dims(2, 4, 4, 6, 2), false, false, None, true),
            case(dims(2, 4, 4, 6, 1), false, true, None, true),
            case(dims(2, 5, 5, 6, 3), false, true, Some(&[3, 5]), true),
            case(dims(2, 4, 4, 4, 2), false, false, Some(&[4, 1]), false),
            // Rotary embeddings: the key bias then has a gradient.
            case(rotary(2, 5, 8, 2, 10_000), false, true, None, true),
            case(
                rotary(2, 4, 12, 3, 500_000),
                false,
                false,
                Some(&[4, 2]),
                true,
            ),
            case(dims(2, 3, 5, 4, 1), true, false, Some(&[2, 5]), true),
            case(dims(2, 3, 5, 6, 2), true, true, None, true),
            case(dims(1, 5, 3, 4, 2), true, true, Some(&[2]), false),
            // Causal tiles of more than one block of queries and keys.
            case(dims(2, 37, 37, 4, 2), false, true, Some(&[37, 33]), true),
            case(dims(2, 35, 40, 4, 2), true, true, Some(&[40, 34]), true),
            case(dims(1, 45, 36, 4, 1), true, true, None, true),
            // Attention-weight dropout: self- and cross-attention, causal, padded, rotary,
            // over more than one block.
            with_dropout(
                case(dims(2, 5, 5, 6, 3), false, true, Some(&[3, 5]), true),
                0.3,
            ),
            with_dropout(case(dims(2, 4, 4, 6, 2), false, false, None, true), 0.5),
            with_dropout(case(dims(2, 3, 5, 6, 2), true, true, None, true), 0.4),
            with_dropout(
                case(rotary(2, 5, 8, 2, 10_000), false, true, None, true),
                0.2,
            ),
            with_dropout(
                case(dims(2, 35, 40, 4, 2), true, true, Some(&[40, 34]), true),
                0.1,
            ),
        ]
    }

    /// The inputs and parameters of a case, in f64: (query, memory, w_in, b_in, w_out, b_out).
    #[allow(clippy::type_complexity)]
    fn inputs(
        c: &Case,
    ) -> (
        Vec<f64>,
        Option<Vec<f64>>,
        Vec<f64>,
        Option<Vec<f64>>,
        Vec<f64>,
        Option<Vec<f64>>,
    ) {
        let (d, e) = (c.d, c.d.embed);
        let scaled =
            |len, seed, k: f64| -> Vec<f64> { values(len, seed).iter().map(|v| v * k).collect() };
        (
            values(d.batch * d.q_len * e, 1.0),
            c.cross.then(|| values(d.batch * d.kv_len * e, 2.0)),
            scaled(3 * e * e, 3.0, 0.6),
            c.bias.then(|| scaled(3 * e, 4.0, 0.5)),
            scaled(e * e, 5.0, 0.7),
            c.bias.then(|| scaled(e, 6.0, 0.5)),
        )
    }

    /// The definition, element by element: projections, masked scores at −∞, softmax,
    /// weighted values, output projection.
    fn naive(
        c: &Case,
        query: &[f64],
        memory: Option<&[f64]>,
        w_in: &[f64],
        b_in: Option<&[f64]>,
        w_out: &[f64],
        b_out: Option<&[f64]>,
    ) -> Vec<f64> {
        let d = c.d;
        let (t, s, e, hd) = (d.q_len, d.kv_len, d.embed, d.head_dim());
        let kv = memory.unwrap_or(query);
        let project = |x: &[f64], rows: usize, block: usize| -> Vec<f64> {
            let mut y = vec![0.0; rows * e];
            for r in 0..rows {
                for o in 0..e {
                    let row = block * e + o;
                    let mut acc = b_in.map_or(0.0, |b| b[row]);
                    for j in 0..e {
                        acc += x[r * e + j] * w_in[row * e + j];
                    }
                    y[r * e + o] = acc;
                }
            }
            y
        };
        let (mut q, mut k) = (project(query, d.batch * t, 0), project(kv, d.batch * s, 1));
        let v = project(kv, d.batch * s, 2);
        if let Some(base) = d.rotary {
            // Hugging Face's `x · cos + rotate_half(x) · sin` on each head, by position.
            let half = hd / 2;
            for x in [&mut q, &mut k] {
                let before = x.clone();
                for (r, row) in x.chunks_exact_mut(e).enumerate() {
                    let pos = (r % t) as f64;
                    for (j, value) in row.iter_mut().enumerate() {
                        let (h, c) = (j / hd, j % hd);
                        let theta = 1.0 / f64::from(base).powf((2 * (c % half)) as f64 / hd as f64);
                        let (sin, cos) = (pos * theta).sin_cos();
                        let at = r * e + h * hd;
                        let rotated_half = if c < half {
                            -before[at + c + half]
                        } else {
                            before[at + c - half]
                        };
                        *value = before[at + c] * cos + rotated_half * sin;
                    }
                }
            }
        }
        let mask = dropout_mask(c);
        let mut o = vec![0.0; d.batch * t * e];
        for b in 0..d.batch {
            let len = c.lengths.as_ref().map_or(s, |l| l[b]);
            for h in 0..d.heads {
                for i in 0..t {
                    let kept = &mask[((b * d.heads + h) * t + i) * s..][..s];
                    let scores: Vec<f64> = (0..s)
                        .map(|j| {
                            if (c.causal && j > i) || j >= len {
                                return f64::NEG_INFINITY;
                            }
                            let dot: f64 = (0..hd)
                                .map(|x| {
                                    q[(b * t + i) * e + h * hd + x]
                                        * k[(b * s + j) * e + h * hd + x]
                                })
                                .sum();
                            dot / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for x in 0..hd {
                        o[(b * t + i) * e + h * hd + x] = (0..s)
                            .map(|j| exps[j] / total * kept[j] * v[(b * s + j) * e + h * hd + x])
                            .sum();
                    }
                }
            }
        }
        let mut out = vec![0.0; d.batch * t * e];
        for r in 0..d.batch * t {
            for n in 0..e {
                let mut acc = b_out.map_or(0.0, |b| b[n]);
                for j in 0..e {
                    acc += o[r * e + j] * w_out[n * e + j];
                }
                out[r * e + n] = acc;
            }
        }
        out
    }

    fn params<'a>(
        w_in: &'a [f64],
        b_in: &'a Option<Vec<f64>>,
        w_out: &'a [f64],
        b_out: &'a Option<Vec<f64>>,
    ) -> AttentionParams<'a, f64> {
        AttentionParams {
            in_proj_weight: w_in,
            in_proj_bias: b_in.as_deref(),
            out_proj_weight: w_out,
            out_proj_bias: b_out.as_deref(),
        }
    }

    /// L = Σ r ⊙ y, whose gradient with respect to y is r.
    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn dropout_masks_keep_the_right_share_at_the_right_scale() {
        let mut mask = vec![0.0f32; 100_000];
        draw_seeded_mask(0.3, 5, 0, &mut mask);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
        // 100,000 draws: the share is within 0.3 ± 0.006 (four standard deviations).
        assert!((dropped - 0.3).abs() < 0.006, "{dropped}");
        let scale = (1.0 / 0.7f64) as f32;
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        // The same seed and pair: the same mask; another pair or seed: another one.
        let mut again = vec![0.0f32; 100_000];
        draw_seeded_mask(0.3, 5, 0, &mut again);
        assert_eq!(mask, again);
        draw_seeded_mask(0.3, 5, 1, &mut again);
        assert_ne!(mask, again);
        draw_seeded_mask(0.3, 6, 0, &mut again);
        assert_ne!(mask, again);
        draw_seeded_mask(0.0, 5, 0, &mut again);
        assert!(again.iter().all(|&m| m == 1.0));
        draw_seeded_mask(1.0, 5, 0, &mut again);
        assert!(again.iter().all(|&m| m == 0.0));
    }

    #[test]
    fn forward_matches_naive() {
        for c in cases() {
            let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
            // Garbage in the scratch must not leak into the result.
            let p = params(&w_in, &b_in, &w_out, &b_out);
            let (out, _) = run_forward(&c, &query, memory.as_deref(), &p);
            let want = naive(
                &c,
                &query,
                memory.as_deref(),
                &w_in,
                b_in.as_deref(),
                &w_out,
                b_out.as_deref(),
            );
            assert_close(&out, &want, 1e-12, 1e-12, &format!("out {c:?}"));
        }
    }

    #[test]
    fn padding_never_reaches_the_output() {
        let c = Case {
            d: dims(2, 3, 5, 4, 2),
            cross: true,
            causal: false,
            lengths: Some(vec![2, 4]),
            bias: true,
            dropout: None,
        };
        let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
        let d = c.d;
        let mut padded = memory.clone().expect("a memory");
        for (b, &len) in [2usize, 4].iter().enumerate() {
            padded[(b * d.kv_len + len) * d.embed..(b + 1) * d.kv_len * d.embed].fill(f64::NAN);
        }
        let p = params(&w_in, &b_in, &w_out, &b_out);
        let run = |memory: &[f64]| {
            let mut scratch = vec![0.0; d.scratch_len()];
            let mut out = vec![0.0; d.batch * d.q_len * d.embed];
            multi_head_attention_forward(
                &d,
                &query,
                Some(memory),
                false,
                c.lengths.as_deref(),
                &p,
                None,
                &mut scratch,
                &mut out,
            );
            out
        };
        assert_eq!(run(&padded), run(memory.as_deref().expect("a memory")));
    }

    /// The forward pass of case `c` from NaN buffers: `(out, scratch)`.
    fn run_forward(
        c: &Case,
        query: &[f64],
        memory: Option<&[f64]>,
        p: &AttentionParams<'_, f64>,
    ) -> (Vec<f64>, Vec<f64>) {
        let d = c.d;
        let mut scratch = vec![f64::NAN; d.scratch_len()];
        let mut out = vec![f64::NAN; d.batch * d.q_len * d.embed];
        let lengths = c.lengths.as_deref();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(DROPOUT_SEED);
        let dropout = c.dropout.map(|p| AttentionDropout { p, rng: &mut rng });
        multi_head_attention_forward(
            &d,
            query,
            memory,
            c.causal,
            lengths,
            p,
            dropout,
            &mut scratch,
            &mut out,
        );
        (out, scratch)
    }

    /// A frozen layer (no parameter gradients) gives its inputs the same gradients, to the
    /// bit, as one that also takes its own: self- and cross-attention, causal, padded, with
    /// and without biases.
    #[test]
    fn frozen_layers_pass_the_same_input_gradients() {
        for c in cases() {
            let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
            let (d, e) = (c.d, c.d.embed);
            let p = params(&w_in, &b_in, &w_out, &b_out);
            let (mem, lengths) = (memory.as_deref(), c.lengths.as_deref());
            let (out, scratch) = run_forward(&c, &query, mem, &p);
            let d_out = values(out.len(), 5.0);
            let run = |trained: bool| {
                let mut dq = vec![f64::NAN; query.len()];
                let mut dm = memory.as_ref().map(|m| vec![f64::NAN; m.len()]);
                let (mut gw_in, mut gw_out) = (vec![0.0; 3 * e * e], vec![0.0; e * e]);
                let (mut gb_in, mut gb_out) = (vec![0.0; 3 * e], vec![0.0; e]);
                let g = trained.then(|| AttentionGrads {
                    in_proj_weight: &mut gw_in,
                    in_proj_bias: c.bias.then_some(&mut gb_in[..]),
                    out_proj_weight: &mut gw_out,
                    out_proj_bias: c.bias.then_some(&mut gb_out[..]),
                });
                multi_head_attention_backward(
                    &d,
                    &query,
                    mem,
                    c.causal,
                    lengths,
                    &p,
                    &mut scratch.clone(),
                    &d_out,
                    Some((&mut dq, false)),
                    dm.as_deref_mut().map(|dm| (dm, false)),
                    g,
                );
                let untouched = [&gw_in, &gw_out, &gb_in, &gb_out]
                    .iter()
                    .all(|g| g.iter().all(|&v| v == 0.0));
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                (bits(&dq), dm.as_deref().map(bits), untouched)
            };
            let (trained, frozen) = (run(true), run(false));
            assert!(!trained.2, "{c:?}: the parameter gradients were written");
            assert!(
                frozen.2,
                "{c:?}: a frozen layer wrote its parameter gradients"
            );
            assert_eq!(trained.0, frozen.0, "{c:?}: d_query");
            assert_eq!(trained.1, frozen.1, "{c:?}: d_memory");
        }
    }

    /// The analytic gradients of every parameter and input against central differences of
    /// the naive forward, both accumulate modes for the inputs.
    #[test]
    fn backward_matches_finite_differences() {
        // Steps of 1e-5: at 1e-6 the differences' rounding (about 1e-14 of the loss over the
        // step) already reached 3e-7 on the rotary cases, whose truncation error at 1e-5 is
        // still below 1e-10.
        let (rtol, atol, step) = (1e-6, 1e-7, 1e-5);
        for c in cases() {
            let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
            let d = c.d;
            let e = d.embed;
            let r = values(d.batch * d.q_len * e, 7.0);
            let loss = |query: &[f64],
                        memory: Option<&[f64]>,
                        w_in: &[f64],
                        b_in: Option<&[f64]>,
                        w_out: &[f64],
                        b_out: Option<&[f64]>| {
                weighted(&naive(&c, query, memory, w_in, b_in, w_out, b_out), &r)
            };
            let (mem, bi, bo) = (memory.as_deref(), b_in.as_deref(), b_out.as_deref());
            let num_w_in = numeric_gradient(
                |w| loss(&query, mem, w, bi, &w_out, bo),
                &mut w_in.clone(),
                step,
            );
            let num_w_out = numeric_gradient(
                |w| loss(&query, mem, &w_in, bi, w, bo),
                &mut w_out.clone(),
                step,
            );
            let num_query = numeric_gradient(
                |x| loss(x, mem, &w_in, bi, &w_out, bo),
                &mut query.clone(),
                step,
            );
            let num_b_in = b_in.as_ref().map(|b| {
                numeric_gradient(
                    |b| loss(&query, mem, &w_in, Some(b), &w_out, bo),
                    &mut b.clone(),
                    step,
                )
            });
            let num_b_out = b_out.as_ref().map(|b| {
                numeric_gradient(
                    |b| loss(&query, mem, &w_in, bi, &w_out, Some(b)),
                    &mut b.clone(),
                    step,
                )
            });
            let num_memory = memory.as_ref().map(|m| {
                numeric_gradient(
                    |m| loss(&query, Some(m), &w_in, bi, &w_out, bo),
                    &mut m.clone(),
                    step,
                )
            });

            let p = params(&w_in, &b_in, &w_out, &b_out);
            let lengths = c.lengths.as_deref();
            let (_, mut scratch) = run_forward(&c, &query, mem, &p);
            // Runs the backward with fresh NaN parameter gradients (they are overwritten) and
            // checks them.
            let mut backward = |dq: Option<(&mut [f64], bool)>, dm: Option<(&mut [f64], bool)>| {
                let mut gw_in = vec![f64::NAN; 3 * e * e];
                let mut gw_out = vec![f64::NAN; e * e];
                let mut gb_in = c.bias.then(|| vec![f64::NAN; 3 * e]);
                let mut gb_out = c.bias.then(|| vec![f64::NAN; e]);
                let g = AttentionGrads {
                    in_proj_weight: &mut gw_in,
                    in_proj_bias: gb_in.as_deref_mut(),
                    out_proj_weight: &mut gw_out,
                    out_proj_bias: gb_out.as_deref_mut(),
                };
                multi_head_attention_backward(
                    &d,
                    &query,
                    mem,
                    c.causal,
                    lengths,
                    &p,
                    &mut scratch,
                    &r,
                    dq,
                    dm,
                    Some(g),
                );
                assert_close(&gw_in, &num_w_in, rtol, atol, &format!("dW_in {c:?}"));
                assert_close(&gw_out, &num_w_out, rtol, atol, &format!("dW_out {c:?}"));
                if let (Some(g), Some(n)) = (&gb_in, &num_b_in) {
                    assert_close(g, n, rtol, atol, &format!("db_in {c:?}"));
                }
                if let (Some(g), Some(n)) = (&gb_out, &num_b_out) {
                    assert_close(g, n, rtol, atol, &format!("db_out {c:?}"));
                }
            };
            // In self-attention, d_query is the sum of the Q, K and V paths.
            check_both_modes(
                &num_query,
                rtol,
                atol,
                &format!("d_query {c:?}"),
                |dq, acc| backward(Some((dq, acc)), None),
            );
            if let Some(num_memory) = &num_memory {
                check_both_modes(
                    num_memory,
                    rtol,
                    atol,
                    &format!("d_memory {c:?}"),
                    |dm, acc| backward(None, Some((dm, acc))),
                );
            }
            // No input gradient at all: the parameter gradients alone.
            backward(None, None);
        }
    }

    #[test]
    fn masked_keys_get_no_gradient() {
        for causal in [false, true] {
            let c = Case {
                d: dims(2, 4, 6, 4, 2),
                cross: true,
                causal,
                lengths: Some(vec![3, 5]),
                bias: true,
                dropout: None,
            };
            let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
            let d = c.d;
            let e = d.embed;
            let p = params(&w_in, &b_in, &w_out, &b_out);
            let mut scratch = vec![f64::NAN; d.scratch_len()];
            let mut out = vec![0.0; d.batch * d.q_len * e];
            let (mem, lengths) = (memory.as_deref(), c.lengths.as_deref());
            multi_head_attention_forward(
                &d,
                &query,
                mem,
                causal,
                lengths,
                &p,
                None,
                &mut scratch,
                &mut out,
            );
            let r = values(out.len(), 8.0);
            let mut dm = vec![f64::NAN; d.batch * d.kv_len * e];
            let (mut gw_in, mut gw_out) = (vec![0.0; 3 * e * e], vec![0.0; e * e]);
            let g = AttentionGrads {
                in_proj_weight: &mut gw_in,
                in_proj_bias: None,
                out_proj_weight: &mut gw_out,
                out_proj_bias: None,
            };
            multi_head_attention_backward(
                &d,
                &query,
                mem,
                causal,
                lengths,
                &p,
                &mut scratch,
                &r,
                None,
                Some((&mut dm, false)),
                Some(g),
            );
            for b in 0..d.batch {
                for j in 0..d.kv_len {
                    let row = &dm[(b * d.kv_len + j) * e..(b * d.kv_len + j + 1) * e];
                    // Causally, no query (i < T = 4) sees a key j ≥ 4 either.
                    let masked =
                        j >= c.lengths.as_ref().expect("lengths")[b] || (causal && j >= d.q_len);
                    assert_eq!(
                        row.iter().all(|&v| v == 0.0),
                        masked,
                        "causal {causal}, key {b}/{j}: {row:?}"
                    );
                }
            }
        }
    }

    /// f32 through the same kernels agrees with f64 to f32's precision, on a causal, padded
    /// self-attention large enough to be split across the threads.
    #[test]
    fn f32_matches_f64() {
        let c = Case {
            d: dims(4, 32, 32, 32, 4),
            cross: false,
            causal: true,
            lengths: Some(vec![32, 7, 20, 1]),
            bias: true,
            dropout: None,
        };
        let d = c.d;
        assert!(
            d.core_work() >= MIN_SPLIT_WORK,
            "the case must be large enough to split"
        );
        let (query, _, w_in, b_in, w_out, b_out) = inputs(&c);
        let (w_in, w_out): (Vec<f64>, Vec<f64>) = (
            w_in.iter().map(|v| v * 0.3).collect(),
            w_out.iter().map(|v| v * 0.3).collect(),
        );
        let r = values(query.len(), 9.0);
        let e = d.embed;

        fn run<F: Float>(
            c: &Case,
            query: &[f64],
            w_in: &[f64],
            b_in: &[f64],
            w_out: &[f64],
            b_out: &[f64],
            r: &[f64],
        ) -> Vec<Vec<f64>> {
            let f = |v: &[f64]| v.iter().map(|&x| F::from_f64(x)).collect::<Vec<F>>();
            let (query, w_in, b_in, w_out, b_out, r) =
                (f(query), f(w_in), f(b_in), f(w_out), f(b_out), f(r));
            let (d, e) = (c.d, c.d.embed);
            let p = AttentionParams {
                in_proj_weight: &w_in,
                in_proj_bias: Some(&b_in),
                out_proj_weight: &w_out,
                out_proj_bias: Some(&b_out),
            };
            let mut scratch = vec![F::ZERO; d.scratch_len()];
            let mut out = vec![F::ZERO; query.len()];
            let lengths = c.lengths.as_deref();
            multi_head_attention_forward(
                &d,
                &query,
                None,
                true,
                lengths,
                &p,
                None,
                &mut scratch,
                &mut out,
            );
            let mut dq = vec![F::ZERO; query.len()];
            let (mut gw_in, mut gb_in) = (vec![F::ZERO; 3 * e * e], vec![F::ZERO; 3 * e]);
            let (mut gw_out, mut gb_out) = (vec![F::ZERO; e * e], vec![F::ZERO; e]);
            let g = AttentionGrads {
                in_proj_weight: &mut gw_in,
                in_proj_bias: Some(&mut gb_in),
                out_proj_weight: &mut gw_out,
                out_proj_bias: Some(&mut gb_out),
            };
            multi_head_attention_backward(
                &d,
                &query,
                None,
                true,
                lengths,
                &p,
                &mut scratch,
                &r,
                Some((&mut dq, false)),
                None,
                Some(g),
            );
            [out, dq, gw_in, gb_in, gw_out, gb_out]
                .iter()
                .map(|v| v.iter().map(|x| x.to_f64()).collect())
                .collect()
        }

        let b_in = b_in.expect("bias");
        let b_out = b_out.expect("bias");
        let wide = run::<f64>(&c, &query, &w_in, &b_in, &w_out, &b_out, &r);
        let narrow = run::<f32>(&c, &query, &w_in, &b_in, &w_out, &b_out, &r);
        let names = ["out", "d_query", "dW_in", "db_in", "dW_out", "db_out"];
        for ((name, want), got) in names.iter().zip(&wide).zip(&narrow) {
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_close(
                got,
                want,
                0.0,
                1e-5 * scale,
                &format!("{name} f32, scale {scale}"),
            );
        }
        // The f64 forward against the definition, at this size too.
        let want = naive(&c, &query, None, &w_in, Some(&b_in), &w_out, Some(&b_out));
        assert_close(&wide[0], &want, 1e-12, 1e-12, "out f64");
        let _ = e;
    }

    /// Large enough to be shared by the threads: the same bits on every run.
    #[test]
    fn repeated_runs_are_bit_identical() {
        let c = Case {
            d: dims(4, 32, 48, 32, 4),
            cross: true,
            causal: true,
            lengths: Some(vec![48, 5, 17, 33]),
            bias: true,
            dropout: None,
        };
        let d = c.d;
        assert!(d.core_work() >= MIN_SPLIT_WORK);
        let (query, memory, w_in, b_in, w_out, b_out) = inputs(&c);
        let p = params(&w_in, &b_in, &w_out, &b_out);
        let e = d.embed;
        let r = values(query.len(), 10.0);
        let run = || {
            let mut scratch = vec![f64::NAN; d.scratch_len()];
            let mut out = vec![0.0; query.len()];
            let (mem, lengths) = (memory.as_deref(), c.lengths.as_deref());
            multi_head_attention_forward(
                &d,
                &query,
                mem,
                true,
                lengths,
                &p,
                None,
                &mut scratch,
                &mut out,
            );
            let (mut dq, mut dm) = (vec![0.0; query.len()], vec![0.0; d.batch * d.kv_len * e]);
            let (mut gw_in, mut gw_out) = (vec![0.0; 3 * e * e], vec![0.0; e * e]);
            let g = AttentionGrads {
                in_proj_weight: &mut gw_in,
                in_proj_bias: None,
                out_proj_weight: &mut gw_out,
                out_proj_bias: None,
            };
            multi_head_attention_backward(
                &d,
                &query,
                mem,
                true,
                lengths,
                &p,
                &mut scratch,
                &r,
                Some((&mut dq, false)),
                Some((&mut dm, false)),
                Some(g),
            );
            (out, dq, dm, gw_in, gw_out)
        };
        let first = run();
        for _ in 0..3 {
            assert!(first == run());
        }
        let want = naive(
            &c,
            &query,
            memory.as_deref(),
            &w_in,
            b_in.as_deref(),
            &w_out,
            b_out.as_deref(),
        );
        assert_close(&first.0, &want, 1e-12, 1e-12, "out");
    }

    #[test]
    fn fast_exp_error_is_below_epsilon() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 * i as f32 / 2_000_000.0;
            let (got, want) = (exp_nonpositive_f32(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < f32::EPSILON as f64, "relative error {worst:e}");
        assert_eq!(exp_nonpositive_f32(0.0), 1.0);
        assert_eq!(exp_nonpositive_f32(-87.5), 0.0);
        assert_eq!(exp_nonpositive_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive_f32(f32::NAN).is_nan());
        // The slice form takes it for f32 only.
        let mut v = [0.5f32, -1.0, 2.0];
        exp_shifted(&mut v, 2.0);
        assert_eq!(v, [-1.5f32, -3.0, 0.0].map(exp_nonpositive_f32));
    }

    #[test]
    #[should_panic(expected = "multi_head_attention_forward: scratch has 3 elements")]
    fn short_scratch_panics() {
        let d = dims(1, 2, 2, 2, 1);
        let p = AttentionParams {
            in_proj_weight: &[0.0f64; 12],
            in_proj_bias: None,
            out_proj_weight: &[0.0; 4],
            out_proj_bias: None,
        };
        multi_head_attention_forward(
            &d,
            &[0.0; 4],
            None,
            false,
            None,
            &p,
            None,
            &mut [0.0; 3],
            &mut [0.0; 4],
        );
    }

    #[test]
    #[should_panic(expected = "key_lengths[1] = 0 is outside 1..=2")]
    fn empty_key_length_panics() {
        let d = dims(2, 2, 2, 2, 1);
        let p = AttentionParams {
            in_proj_weight: &[0.0f64; 12],
            in_proj_bias: None,
            out_proj_weight: &[0.0; 4],
            out_proj_bias: None,
        };
        let mut scratch = vec![0.0; d.scratch_len()];
        multi_head_attention_forward(
            &d,
            &[0.0; 8],
            None,
            false,
            Some(&[2, 0]),
            &p,
            None,
            &mut scratch,
            &mut [0.0; 8],
        );
    }

    /// W6's shape (B = 12, T = S = 64, D = 128, H = 4, causal, f32): forward + backward, on
    /// unit-variance inputs and weights at PyTorch's initial scale (diffuse attention, as in
    /// training; near one-hot attention leaves subnormal gradients that slow the GEMMs).
    /// `cargo test --release -p kiln-runtime --lib attention -- --ignored --nocapture`, with
    /// `KILN_THREADS=1` or `2`.
    #[test]
    #[ignore]
    fn timing_w6_shape() {
        use rand::{RngExt, SeedableRng};
        let d = dims(12, 64, 64, 128, 4);
        let e = d.embed;
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut f = |len: usize, bound: f64| -> Vec<f32> {
            (0..len)
                .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
                .collect()
        };
        let query = f(d.batch * d.q_len * e, 3f64.sqrt());
        let (w_in, b_in) = (f(3 * e * e, (6.0 / (4 * e) as f64).sqrt()), f(3 * e, 0.0));
        let (w_out, b_out) = (f(e * e, 1.0 / (e as f64).sqrt()), f(e, 0.0));
        let d_out = f(query.len(), 1e-3);
        let p = AttentionParams {
            in_proj_weight: &w_in,
            in_proj_bias: Some(&b_in),
            out_proj_weight: &w_out,
            out_proj_bias: Some(&b_out),
        };
        let mut scratch = vec![0.0f32; d.scratch_len()];
        let mut out = vec![0.0f32; query.len()];
        let mut dq = vec![0.0f32; query.len()];
        let (mut gw_in, mut gb_in) = (vec![0.0f32; 3 * e * e], vec![0.0f32; 3 * e]);
        let (mut gw_out, mut gb_out) = (vec![0.0f32; e * e], vec![0.0f32; e]);
        let mut forward = |scratch: &mut [f32]| {
            multi_head_attention_forward(&d, &query, None, true, None, &p, None, scratch, &mut out);
        };
        let mut backward = |scratch: &mut [f32]| {
            let g = AttentionGrads {
                in_proj_weight: &mut gw_in,
                in_proj_bias: Some(&mut gb_in),
                out_proj_weight: &mut gw_out,
                out_proj_bias: Some(&mut gb_out),
            };
            multi_head_attention_backward(
                &d,
                &query,
                None,
                true,
                None,
                &p,
                scratch,
                &d_out,
                Some((&mut dq, false)),
                None,
                Some(g),
            );
        };
        for _ in 0..20 {
            forward(&mut scratch);
            backward(&mut scratch);
        }
        let time = |f: &mut dyn FnMut(&mut [f32]), scratch: &mut [f32]| {
            let mut times: Vec<f64> = (0..200)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f(scratch);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let fwd = time(&mut forward, &mut scratch);
        let bwd = time(&mut backward, &mut scratch);
        println!(
            "attention B=12 T=S=64 D=128 H=4 causal f32, {} thread(s): forward {fwd:.3} ms, \
             backward {bwd:.3} ms, total {:.3} ms (medians of 200)",
            parallel::threads(),
            fwd + bwd
        );
    }
}
