//! Rotary position embeddings (RoPE, the position encoding of LLaMA-style transformers), as
//! Hugging Face's LLaMA applies them to each head's queries and keys: with `hd` the head size
//! and `half = hd / 2`, the pair of columns `(i, i + half)` of a row at position `t` is turned
//! by the angle `t · θ_i`, `θ_i = base^(−2i / hd)` (`base` 10000 as LLaMA's, or the model's
//! `rope_theta`):
//! `(a, b) ← (a cos − b sin, b cos + a sin)`. The inverse rotation (the transpose, by `−t θ_i`)
//! takes a gradient back through it.
//!
//! The angles' cosines and sines are computed in f64 once per call for the positions the rows
//! hold, into a buffer each thread keeps (grown, never shrunk: a warm call allocates
//! nothing), and rounded to `F`.

use crate::Float;
use std::cell::RefCell;

/// The usual base of the angles, LLaMA's (and Hugging Face's default `rope_theta`).
pub const ROTARY_BASE: u32 = 10_000;

thread_local! {
    /// The cosines then the sines of the current call's angles, `[positions, half]` each.
    static TABLE: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Where the heads to rotate sit in a row-major matrix: `rows` rows `stride` apart, each a
/// sequence position (row `r` is position `first + r % seq`), and in each row `sets` groups
/// (the queries', then the keys') of `heads` blocks of `head_dim` columns, the first from
/// column `column`, each `set_stride` after the one before. One table of angles serves all
/// the groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotaryLayout {
    /// The rows.
    pub rows: usize,
    /// Elements from one row to the next.
    pub stride: usize,
    /// The first column of the first group's first head.
    pub column: usize,
    /// The groups of heads in a row.
    pub sets: usize,
    /// Columns from one group to the next.
    pub set_stride: usize,
    /// The heads, side by side.
    pub heads: usize,
    /// Each head's size (even).
    pub head_dim: usize,
    /// Positions per sequence: the rows are sequences of `seq` positions, one after another.
    pub seq: usize,
    /// The position of each sequence's first row (the cached positions before them, when
    /// decoding).
    pub first: usize,
    /// The base of the angles ([`ROTARY_BASE`] for LLaMA's).
    pub base: u32,
}

/// Rotates the heads of `x` laid out as `l` says, in place, by their rows' positions; with
/// `inverse`, by the opposite angles (the VJP of the rotation).
///
/// # Panics
/// If `head_dim` is odd, `seq` is 0 while there are rows, or a head reaches past `x` (caller
/// bugs).
///
/// ```
/// use kiln_runtime::kernels::rotary::{rotate, RotaryLayout};
/// // One head of two columns (one pair, θ = 1): position 0 is left alone, position 1 is
/// // turned by one radian.
/// let mut x = [1.0f64, 0.0, 1.0, 0.0];
/// let l = RotaryLayout {
///     rows: 2, stride: 2, column: 0, sets: 1, set_stride: 0, heads: 1, head_dim: 2, seq: 2,
///     first: 0, base: 10_000,
/// };
/// rotate(&mut x, &l, false);
/// assert_eq!(&x[..2], &[1.0, 0.0]);
/// assert!((x[2] - 1f64.cos()).abs() < 1e-15 && (x[3] - 1f64.sin()).abs() < 1e-15);
/// rotate(&mut x, &l, true);
/// assert!((x[2] - 1.0).abs() < 1e-15 && x[3].abs() < 1e-15);
/// ```
pub fn rotate<F: Float>(x: &mut [F], l: &RotaryLayout, inverse: bool) {
    assert!(
        l.head_dim.is_multiple_of(2),
        "rotate: head_dim {} is odd",
        l.head_dim
    );
    if l.rows == 0 || l.head_dim == 0 {
        return;
    }
    assert!(l.seq > 0, "rotate: rows of sequences of no positions");
    let half = l.head_dim / 2;
    let positions = l.seq.min(l.rows);
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        table.clear();
        table.resize(2 * positions * half, 0.0);
        let (cos, sin) = table.split_at_mut(positions * half);
        for p in 0..positions {
            let t = (l.first + p) as f64;
            for i in 0..half {
                let theta = 1.0 / f64::from(l.base).powf((2 * i) as f64 / l.head_dim as f64);
                let (s, c) = (t * theta).sin_cos();
                cos[p * half + i] = c;
                sin[p * half + i] = s;
            }
        }
        for r in 0..l.rows {
            let p = r % l.seq;
            let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
            let heads = (0..l.sets).flat_map(|set| (0..l.heads).map(move |h| (set, h)));
            for (set, h) in heads {
                let at = r * l.stride + l.column + set * l.set_stride + h * l.head_dim;
                let (a, b) = x[at..at + l.head_dim].split_at_mut(half);
                for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(c).zip(s) {
                    let (c, s) = (F::from_f64(c), F::from_f64(s));
                    let s = if inverse { -s } else { s };
                    let (x0, x1) = (*a, *b);
                    *a = x0 * c - x1 * s;
                    *b = x1 * c + x0 * s;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hugging Face's `apply_rotary_pos_emb` written out: `x · cos + rotate_half(x) · sin`.
    fn reference(x: &[f64], head_dim: usize, t: usize, base: f64) -> Vec<f64> {
        let half = head_dim / 2;
        (0..head_dim)
            .map(|j| {
                let i = j % half;
                let theta = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
                let (s, c) = (t as f64 * theta).sin_cos();
                let rotated_half = if j < half { -x[j + half] } else { x[j - half] };
                x[j] * c + rotated_half * s
            })
            .collect()
    }

    #[test]
    fn matches_the_rotate_half_formula_and_its_inverse_undoes_it() {
        let (heads, hd, seq, first) = (2, 8, 3, 5);
        let stride = 3 * heads * hd;
        let rows = 2 * seq;
        let x: Vec<f64> = (0..rows * stride)
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let l = RotaryLayout {
            rows,
            stride,
            column: heads * hd,
            sets: 1,
            set_stride: 0,
            heads,
            head_dim: hd,
            seq,
            first,
            base: 500_000,
        };
        let mut y = x.clone();
        rotate(&mut y, &l, false);
        for r in 0..rows {
            for h in 0..heads {
                let at = r * stride + l.column + h * hd;
                let want = reference(&x[at..at + hd], hd, first + r % seq, 500_000.0);
                for (g, w) in y[at..at + hd].iter().zip(&want) {
                    assert!((g - w).abs() < 1e-15, "row {r} head {h}: {g} against {w}");
                }
            }
            // Columns outside the heads are untouched.
            let row = r * stride;
            assert_eq!(&y[row..row + l.column], &x[row..row + l.column]);
        }
        rotate(&mut y, &l, true);
        for (g, w) in y.iter().zip(&x) {
            assert!((g - w).abs() < 1e-15);
        }
    }
}
