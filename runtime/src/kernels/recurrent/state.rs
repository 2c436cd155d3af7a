//! Incremental decoding through a recurrence: the states a one-direction stack reached after
//! the positions seen so far are kept in an [`RnnState`], and each call runs the time loop over
//! the new positions only, from those states.
//!
//! This is what a generated model's `forward_cached` calls for each `lstm`, `gru` or `rnn`
//! that runs forward in time over whole sequences (not bidirectional, no `lengths`): sampling
//! from a character-level LSTM then costs one step per layer and token, as PyTorch users get
//! by passing `(h, c)` back into `nn.LSTM`. The outputs are [`rnn_forward`]'s on the whole
//! sequence, restricted to the new positions (up to rounding: the input projections are cut
//! differently).
//!
//! [`rnn_forward`]: super::rnn_forward

use super::forward::forward;
use super::{RnnCell, RnnDims, RnnInitial, RnnOutput};
use crate::Float;

/// The hidden (and, for the LSTM, cell) states of every layer of a one-direction recurrent
/// stack for a batch of sequences, after the positions seen so far.
///
/// It keeps two copies: a call reads the states for the positions before it and writes the
/// other copy, so a decoding pass that fails after the recurrence (leaving the model's cache
/// where it was) can be run again from the same states. Like a
/// [`KvCache`](crate::kernels::kv_cache::KvCache), it does not decide how many positions the
/// model has seen: the caller passes that count (`offset`) to [`rnn_forward_cached`], and an
/// `offset` of 0 starts new sequences from zero states.
///
/// ```
/// use kiln_runtime::kernels::recurrent::{RnnCell, RnnState};
/// let state = RnnState::<f32>::new(RnnCell::Lstm, 2, 128, 1);
/// assert_eq!(state.batch(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct RnnState<F> {
    cell: RnnCell,
    batch: usize,
    hidden: usize,
    layers: usize,
    /// Each `[L, B, H]` hidden states, then for the LSTM `[L, B, H]` cell states.
    copies: [Vec<F>; 2],
    /// How many positions each copy's states have seen (`None`: stale).
    seen: [Option<usize>; 2],
}

impl<F: Float> RnnState<F> {
    /// States for `batch` sequences through `layers` layers of `hidden` units of `cell`.
    pub fn new(cell: RnnCell, batch: usize, hidden: usize, layers: usize) -> Self {
        let per_layer = batch * hidden * if cell == RnnCell::Lstm { 2 } else { 1 };
        let len = per_layer * layers;
        Self {
            cell,
            batch,
            hidden,
            layers,
            copies: [vec![F::ZERO; len], vec![F::ZERO; len]],
            seen: [None, None],
        }
    }

    /// The number of sequences it holds states for.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// The forward pass over new positions of sequences whose earlier `offset` positions `state`
/// has seen: `x` is `[B, T, F]` with only the new positions, `out` receives their outputs
/// (`[B, T, H]`), and `state` then holds the states after `offset + T` positions. With
/// `offset` 0 the sequences start from zero states, as in [`rnn_forward`](super::rnn_forward),
/// whose outputs for the whole sequence these are, position for position.
///
/// `scratch` is as [`rnn_forward`](super::rnn_forward)'s for `d` (whose `seq` is `T`).
///
/// # Panics
/// If `d` is bidirectional or asks for final states only, if `state` was made for another
/// cell, batch, width or depth, if `offset` is neither 0 nor the number of positions `state`
/// has seen (after the last call, or the one before it), or as
/// [`rnn_forward`](super::rnn_forward) does (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::recurrent::{
///     rnn_forward, rnn_forward_cached, RnnCell, RnnDims, RnnOutput, RnnState,
/// };
/// let whole = RnnDims {
///     cell: RnnCell::RnnTanh, batch: 1, seq: 3, input: 1, hidden: 1, layers: 1,
///     bidirectional: false, output: RnnOutput::Sequence, dropout: 0.0,
/// };
/// let (w, one) = ([0.5f64], [0.1f64]);
/// let params: Vec<&[f64]> = vec![&w, &w, &one, &one];
/// let x = [1.0, -2.0, 3.0];
/// let mut all = [0.0; 3];
/// rnn_forward(&whole, &x, None, &params, &mut vec![0.0; whole.scratch_len()], &mut all);
///
/// // The same sequence one position at a time.
/// let step = RnnDims { seq: 1, ..whole };
/// let mut scratch = vec![0.0; step.scratch_len()];
/// let mut state = RnnState::new(RnnCell::RnnTanh, 1, 1, 1);
/// for (t, x_t) in x.iter().enumerate() {
///     let mut y = [0.0];
///     rnn_forward_cached(&step, &[*x_t], &params, &mut scratch, &mut state, t, &mut y);
///     assert!((y[0] - all[t]).abs() < 1e-15);
/// }
/// ```
pub fn rnn_forward_cached<F: Float>(
    d: &RnnDims,
    x: &[F],
    params: &[&[F]],
    scratch: &mut [F],
    state: &mut RnnState<F>,
    offset: usize,
    out: &mut [F],
) {
    cached(
        "rnn_forward_cached",
        d,
        x,
        params,
        None,
        scratch,
        state,
        offset,
        out,
    );
}

/// [`rnn_forward_cached`] for sequences that start from given states rather than zero ones (a
/// decoder started by its encoder's final states, as [`rnn_forward_from`](super::rnn_forward_from)
/// starts the whole sequence): at `offset` 0 the first new position starts from `initial`
/// (`[L, B, H]` hidden states, and the LSTM's cells or `None` for zero ones); later calls
/// continue from the states `state` keeps, and `initial` is only checked.
///
/// # Panics
/// As [`rnn_forward_cached`], and if `initial`'s states are not `[L, B, H]` (or cells are
/// given to a cell without them).
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward_cached_from<F: Float>(
    d: &RnnDims,
    x: &[F],
    params: &[&[F]],
    initial: RnnInitial<'_, F>,
    scratch: &mut [F],
    state: &mut RnnState<F>,
    offset: usize,
    out: &mut [F],
) {
    const WHAT: &str = "rnn_forward_cached_from";
    d.check_initial(WHAT, &initial);
    cached(
        WHAT,
        d,
        x,
        params,
        Some(initial),
        scratch,
        state,
        offset,
        out,
    );
}

/// The two functions above: `start` is where new sequences (`offset` 0) start, zero states
/// when `None`.
#[allow(clippy::too_many_arguments)]
fn cached<F: Float>(
    what: &'static str,
    d: &RnnDims,
    x: &[F],
    params: &[&[F]],
    start: Option<RnnInitial<'_, F>>,
    scratch: &mut [F],
    state: &mut RnnState<F>,
    offset: usize,
    out: &mut [F],
) {
    assert!(
        !d.bidirectional && d.output == RnnOutput::Sequence,
        "{what}: only one direction's outputs at every step continue a sequence"
    );
    assert!(
        (state.cell, state.batch, state.hidden, state.layers)
            == (d.cell, d.batch, d.hidden, d.layers),
        "{what}: the state was made for another stack or batch"
    );
    let read = if offset == 0 {
        // New sequences: whatever the copies hold is from earlier ones.
        state.seen = [None, None];
        None
    } else {
        let found = state.seen.iter().position(|&s| s == Some(offset));
        assert!(
            found.is_some(),
            "{what}: the state has not seen {offset} positions (it has seen {:?})",
            state.seen
        );
        found
    };
    let write = read.map_or(0, |r| 1 - r);
    let [first, second] = &mut state.copies;
    let (to, from) = if write == 0 {
        (first, second)
    } else {
        (second, first)
    };
    // The copy read is `[L, B, H]` hidden states then (LSTM) cells: `RnnInitial`'s layout
    // for one direction.
    let hidden = d.layers * d.batch * d.hidden;
    let initial = match read {
        Some(_) => Some(RnnInitial {
            h: &from[..hidden],
            c: (d.cell == RnnCell::Lstm).then(|| &from[hidden..]),
        }),
        None => start,
    };
    let inference: Option<&mut rand::rngs::StdRng> = None;
    forward(
        what,
        d,
        x,
        None,
        params,
        inference,
        scratch,
        out,
        initial,
        Some(&mut to[..]),
    );
    state.seen[write] = Some(offset + d.seq);
}
