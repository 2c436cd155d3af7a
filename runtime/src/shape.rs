//! Run-time checks at a model's call boundary, used by generated code.
//!
//! The macro proves every internal shape at compile time; what it cannot know is what the caller
//! passes. Each input is checked once against its declared shape, binding symbolic dims (`B`)
//! by name; a mismatch is an [`Error::Shape`] naming the input, the expected and actual shape.

use crate::{Error, Float, Result};
use ndarray::{ArrayBase, ArrayView, Data, DataMut, Dimension};

/// One declared dimension of an input: a literal size or a symbolic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A size fixed in the model source.
    Fixed(usize),
    /// A symbolic dimension: its name and its slot in the bound-dims array.
    Symbol(&'static str, usize),
    /// A formula of a symbolic dimension with a least value: the axis is `factor` times the
    /// symbol plus `offset` (`16 * H` for a model that halves the axis four times, `W - 2`
    /// for a target as wide as a valid 3×3 convolution's output), and the symbol at least
    /// `min` (so that sizes the model computes from it stay at least 1).
    Multiple {
        /// The symbol's name (`H`).
        symbol: &'static str,
        /// The symbol's slot in the bound-dims array.
        slot: usize,
        /// The multiple of the symbol the axis is (1 when the axis is the symbol itself).
        factor: usize,
        /// What is added to the multiple.
        offset: i64,
        /// The symbol's least value.
        min: usize,
    },
}

/// Checks `actual` against `expected`, binding symbolic dims into `bound` (slot `None` = not
/// yet bound). `kind` is `"input"` or `"target"`, `name` the declared name.
///
/// ```
/// use kiln_runtime::shape::{bind_shape, Dim};
/// let mut bound = [None];
/// let x = [Dim::Symbol("B", 0), Dim::Fixed(4)];
/// assert!(bind_shape("input", "x", &[32, 4], &x, &mut bound).is_ok());
/// assert_eq!(bound, [Some(32)]);
/// let err = bind_shape("input", "y", &[16, 4], &x, &mut bound).unwrap_err();
/// assert!(err.to_string().contains("B = 32"));
///
/// // An image whose height is 16 times `H`, with `H` at least 2.
/// let mut bound = [None];
/// let image = [Dim::Multiple { symbol: "H", slot: 0, factor: 16, offset: 0, min: 2 }];
/// assert!(bind_shape("input", "image", &[64], &image, &mut bound).is_ok());
/// assert_eq!(bound, [Some(4)]);
/// let mut fresh = [None];
/// let err = bind_shape("input", "image", &[40], &image, &mut fresh).unwrap_err();
/// assert!(err.to_string().contains("not a multiple of 16"));
/// let err = bind_shape("input", "image", &[16], &image, &mut fresh).unwrap_err();
/// assert!(err.to_string().contains("16 * H of at least 32"));
///
/// // A target two columns narrower than the input that bound `W` = 8.
/// let mut bound = [Some(8)];
/// let target = [Dim::Multiple { symbol: "W", slot: 0, factor: 1, offset: -2, min: 3 }];
/// assert!(bind_shape("target", "y", &[6], &target, &mut bound).is_ok());
/// let err = bind_shape("target", "y", &[8], &target, &mut bound).unwrap_err();
/// assert!(err.to_string().contains("W - 2 = 6"));
/// ```
pub fn bind_shape(
    kind: &'static str,
    name: &'static str,
    actual: &[usize],
    expected: &[Dim],
    bound: &mut [Option<usize>],
) -> Result<()> {
    let mismatch = |detail: String, bound: &[Option<usize>]| Error::Shape {
        kind,
        name,
        expected: describe(expected, bound),
        actual: actual.to_vec(),
        detail,
    };
    if actual.len() != expected.len() {
        return Err(mismatch(
            format!(" (rank {} instead of {})", actual.len(), expected.len()),
            bound,
        ));
    }
    for (axis, (&got, dim)) in actual.iter().zip(expected).enumerate() {
        match *dim {
            Dim::Fixed(want) if want != got => {
                return Err(mismatch(
                    format!(" (axis {axis} is {got}, the model declares {want})"),
                    bound,
                ));
            }
            Dim::Fixed(_) => {}
            Dim::Symbol(symbol, slot) => match bound[slot] {
                Some(value) if value != got => {
                    return Err(mismatch(
                        format!(
                            " (axis {axis} is {got}, but {symbol} = {value} from an earlier input)"
                        ),
                        bound,
                    ));
                }
                Some(_) => {}
                None if got == 0 => {
                    return Err(mismatch(
                        format!(" (axis {axis}: {symbol} cannot be 0)"),
                        bound,
                    ));
                }
                None => bound[slot] = Some(got),
            },
            Dim::Multiple {
                symbol,
                slot,
                factor,
                offset,
                min,
            } => {
                let factor = factor.max(1);
                // Only for messages: a bound shape allocates nothing.
                let written = || formula_text(symbol, factor, offset);
                let least = (factor.saturating_mul(min.max(1)) as i64).saturating_add(offset);
                let rest = (got as i64).saturating_sub(offset);
                if rest % factor as i64 != 0 {
                    let detail = if offset == 0 {
                        format!("not a multiple of {factor}")
                    } else {
                        format!("not {} for any {symbol}", written())
                    };
                    return Err(mismatch(
                        format!(
                            " (axis {axis} is {got}, {detail}: the model takes {})",
                            written()
                        ),
                        bound,
                    ));
                }
                let value = rest / factor as i64;
                match bound[slot] {
                    Some(earlier) if earlier as i64 != value => {
                        return Err(mismatch(
                            format!(" (axis {axis} is {got}, so {symbol} = {value}, but {symbol} = {earlier} from an earlier input)"),
                            bound,
                        ));
                    }
                    _ if value < min.max(1) as i64 => {
                        return Err(mismatch(
                            format!(" (axis {axis} is {got}, but the model needs {} of at least {least}: its layers shrink the axis, and {symbol} = {value} would leave nothing)", written()),
                            bound,
                        ));
                    }
                    _ => bound[slot] = Some(value as usize),
                }
            }
        }
    }
    Ok(())
}

fn describe(expected: &[Dim], bound: &[Option<usize>]) -> String {
    let parts: Vec<String> = expected
        .iter()
        .map(|d| match *d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s, slot) => match bound.get(slot).copied().flatten() {
                Some(v) => format!("{s} = {v}"),
                None => s.to_string(),
            },
            Dim::Multiple {
                symbol,
                slot,
                factor,
                offset,
                ..
            } => {
                let written = formula_text(symbol, factor, offset);
                match bound.get(slot).copied().flatten() {
                    Some(v) if factor > 1 || offset != 0 => {
                        let size = (v.saturating_mul(factor) as i64).saturating_add(offset);
                        format!("{written} = {size}")
                    }
                    Some(v) => format!("{written} = {v}"),
                    None => written,
                }
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// `16 * H`, `W - 2`, or `H` for a factor of 1 and no offset.
fn formula_text(symbol: &str, factor: usize, offset: i64) -> String {
    let multiple = if factor > 1 {
        format!("{factor} * {symbol}")
    } else {
        symbol.to_string()
    };
    match offset.cmp(&0) {
        std::cmp::Ordering::Equal => multiple,
        std::cmp::Ordering::Greater => format!("{multiple} + {offset}"),
        std::cmp::Ordering::Less => format!("{multiple} - {}", offset.unsigned_abs()),
    }
}

/// The elements of `view` in row-major order, borrowed when the view is already contiguous
/// and row-major, otherwise copied into `scratch` (which keeps its capacity between calls).
pub fn row_major<'a, T, S, D>(view: &'a ArrayBase<S, D>, scratch: &'a mut Vec<T>) -> &'a [T]
where
    T: Copy,
    S: Data<Elem = T>,
    D: Dimension,
{
    match view.as_slice() {
        Some(slice) => slice,
        None => {
            scratch.clear();
            scratch.extend(view.iter().copied());
            scratch
        }
    }
}

/// Checks that every class label is below `classes`; an error names the first bad label and
/// its position (one index per axis).
pub fn check_labels<S: Data<Elem = usize>, D: Dimension>(
    name: &'static str,
    labels: &ArrayBase<S, D>,
    classes: usize,
) -> Result<()> {
    check_labels_ignoring(name, labels, classes, None)
}

/// [`check_labels`] for the labels of a loss that leaves out `ignored` (`cross_entropy(..,
/// ignore_index = 255)`): that label is accepted whatever the class count, as PyTorch's
/// `ignore_index` is.
///
/// ```
/// use kiln_runtime::ndarray::array;
/// use kiln_runtime::shape::check_labels_ignoring;
/// let labels = array![[0usize, 255], [3, 1]];
/// assert!(check_labels_ignoring("mask", &labels, 4, Some(255)).is_ok());
/// assert!(check_labels_ignoring("mask", &labels, 4, None).is_err());
/// assert!(check_labels_ignoring("mask", &array![[0usize, 4]], 4, Some(255)).is_err());
/// ```
pub fn check_labels_ignoring<S: Data<Elem = usize>, D: Dimension>(
    name: &'static str,
    labels: &ArrayBase<S, D>,
    classes: usize,
    ignored: Option<usize>,
) -> Result<()> {
    match labels
        .iter()
        .position(|&l| l >= classes && Some(l) != ignored)
    {
        None => Ok(()),
        Some(flat) => Err(Error::Label {
            name,
            position: unravel(flat, labels.shape()),
            label: labels.iter().nth(flat).copied().unwrap_or(0),
            classes,
            ignored: ignored.filter(|&i| i >= classes),
        }),
    }
}

/// The index per axis of the element at row-major position `flat` in an array of `shape`.
fn unravel(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut position = vec![0; shape.len()];
    let mut rest = flat;
    for (axis, &len) in shape.iter().enumerate().rev() {
        position[axis] = rest % len.max(1);
        rest /= len.max(1);
    }
    position
}

/// Checks that every token id is below `vocab`; an error names the first bad id and its
/// position (`[batch, time]`).
///
/// ```
/// use kiln_runtime::ndarray::array;
/// let ids = array![[1usize, 2], [7, 0]];
/// assert!(kiln_runtime::shape::check_tokens("tokens", &ids, 8).is_ok());
/// let err = kiln_runtime::shape::check_tokens("tokens", &ids, 5).unwrap_err();
/// assert!(err.to_string().contains("token id 7 at position [1, 0]"));
/// ```
pub fn check_tokens<S: Data<Elem = usize>, D: Dimension>(
    name: &'static str,
    ids: &ArrayBase<S, D>,
    vocab: usize,
) -> Result<()> {
    // The fast path reads values only; the position is worked out once something is wrong.
    if ids.iter().all(|&id| id < vocab) {
        return Ok(());
    }
    let (flat, id) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id >= vocab)
        .map(|(at, &id)| (at, id))
        .unwrap_or_default();
    Err(Error::Token {
        name,
        position: unravel(flat, ids.shape()),
        id,
        vocab,
    })
}

/// Checks that every sequence length is between 1 and `max` (the sequences' length).
pub fn check_lengths<S: Data<Elem = usize>, D: Dimension>(
    name: &'static str,
    lengths: &ArrayBase<S, D>,
    max: usize,
) -> Result<()> {
    match lengths.iter().position(|&l| l == 0 || l > max) {
        None => Ok(()),
        Some(index) => Err(Error::Length {
            name,
            index,
            length: lengths.iter().nth(index).copied().unwrap_or(0),
            max,
        }),
    }
}

/// Grows `buffer` to at least `len` elements (zero-filled). Workspaces call this for every
/// buffer at the start of a step: it allocates only when a larger batch than ever before
/// arrives, so a warm step allocates nothing. A buffer of 2 MiB or more is put on huge pages
/// where the system offers them.
#[inline]
pub fn grow<F: Float>(buffer: &mut Vec<F>, len: usize) {
    if buffer.len() < len {
        crate::memory::grow_zeroed(buffer, len);
    }
}

/// Where a workspace keeps copies of its inputs: only for inputs that are not contiguous, or
/// that the backward pass of a `forward_train` / `backward` pair reads later.
#[derive(Debug, Default)]
pub struct Staging<F> {
    floats: Vec<Vec<F>>,
    labels: Vec<Vec<usize>>,
}

impl<F: Float> Staging<F> {
    /// An empty staging area.
    pub fn new() -> Self {
        Staging {
            floats: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn slot<T>(slots: &mut Vec<Vec<T>>, slot: usize) -> &mut Vec<T> {
        if slots.len() <= slot {
            slots.resize_with(slot + 1, Vec::new);
        }
        &mut slots[slot]
    }

    /// Copies `view` into slot `slot` if it is not contiguous in row-major order (a borrowed
    /// slice serves otherwise). Call before [`Staging::get`].
    pub fn prepare<S: Data<Elem = F>, D: Dimension>(
        &mut self,
        slot: usize,
        view: &ArrayBase<S, D>,
    ) {
        if view.as_slice().is_none() {
            let buf = Self::slot(&mut self.floats, slot);
            buf.clear();
            buf.extend(view.iter().copied());
        }
    }

    /// Like [`Staging::prepare`] for class labels.
    pub fn prepare_labels<S: Data<Elem = usize>, D: Dimension>(
        &mut self,
        slot: usize,
        view: &ArrayBase<S, D>,
    ) {
        if view.as_slice().is_none() {
            let buf = Self::slot(&mut self.labels, slot);
            buf.clear();
            buf.extend(view.iter().copied());
        }
    }

    /// The elements of `view` in row-major order: the view's own memory when contiguous, else
    /// the copy [`Staging::prepare`] made.
    pub fn get<'a, S: Data<Elem = F>, D: Dimension>(
        &'a self,
        slot: usize,
        view: &'a ArrayBase<S, D>,
    ) -> &'a [F] {
        match view.as_slice() {
            Some(s) => s,
            None => self.kept(slot),
        }
    }

    /// Like [`Staging::get`] for class labels.
    pub fn get_labels<'a, S: Data<Elem = usize>, D: Dimension>(
        &'a self,
        slot: usize,
        view: &'a ArrayBase<S, D>,
    ) -> &'a [usize] {
        match view.as_slice() {
            Some(s) => s,
            None => self.kept_labels(slot),
        }
    }

    /// Copies `view` into slot `slot` (kept for a later `backward`).
    pub fn keep<S: Data<Elem = F>, D: Dimension>(&mut self, slot: usize, view: &ArrayBase<S, D>) {
        let buf = Self::slot(&mut self.floats, slot);
        buf.clear();
        buf.extend(view.iter().copied());
    }

    /// Copies labels into slot `slot`.
    pub fn keep_labels<S: Data<Elem = usize>, D: Dimension>(
        &mut self,
        slot: usize,
        view: &ArrayBase<S, D>,
    ) {
        let buf = Self::slot(&mut self.labels, slot);
        buf.clear();
        buf.extend(view.iter().copied());
    }

    /// What [`Staging::keep`] stored in `slot`.
    pub fn kept(&self, slot: usize) -> &[F] {
        self.floats.get(slot).map_or(&[], Vec::as_slice)
    }

    /// What [`Staging::keep_labels`] stored in `slot`.
    pub fn kept_labels(&self, slot: usize) -> &[usize] {
        self.labels.get(slot).map_or(&[], Vec::as_slice)
    }
}

fn not_contiguous(name: &'static str) -> Error {
    Error::Parameter {
        name,
        problem: "is not contiguous in row-major order; assign it with `.as_standard_layout().into_owned()`".into(),
    }
}

fn missing(name: &'static str) -> Error {
    Error::Parameter {
        name,
        problem: "is missing (`None`), but this layer has it".into(),
    }
}

/// A parameter's elements as a slice, checking its length (`len`) and layout.
pub fn param<'a, F: Float, S: Data<Elem = F>, D: Dimension>(
    name: &'static str,
    array: &'a ArrayBase<S, D>,
    len: usize,
) -> Result<&'a [F]> {
    let slice = array.as_slice().ok_or_else(|| not_contiguous(name))?;
    check_len(name, slice.len(), len)?;
    Ok(slice)
}

/// [`param`] for an optional parameter (a bias) that the model declares.
pub fn param_opt<'a, F: Float, S: Data<Elem = F>, D: Dimension>(
    name: &'static str,
    array: Option<&'a ArrayBase<S, D>>,
    len: usize,
) -> Result<&'a [F]> {
    param(name, array.ok_or_else(|| missing(name))?, len)
}

/// A gradient's elements as a mutable slice.
pub fn param_mut<'a, F: Float, S: DataMut<Elem = F>, D: Dimension>(
    name: &'static str,
    array: &'a mut ArrayBase<S, D>,
    len: usize,
) -> Result<&'a mut [F]> {
    let slice = array.as_slice_mut().ok_or_else(|| not_contiguous(name))?;
    check_len(name, slice.len(), len)?;
    Ok(slice)
}

/// [`param_mut`] for an optional gradient.
pub fn param_opt_mut<'a, F: Float, S: DataMut<Elem = F>, D: Dimension>(
    name: &'static str,
    array: Option<&'a mut ArrayBase<S, D>>,
    len: usize,
) -> Result<&'a mut [F]> {
    param_mut(name, array.ok_or_else(|| missing(name))?, len)
}

fn check_len(name: &'static str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Parameter {
            name,
            problem: format!("has {got} elements, but the model's layer has {want}"),
        })
    }
}

/// A view of the first `dim.size()` elements of a workspace buffer with the given shape.
pub fn view<F: Float, D: Dimension>(data: &[F], dim: D) -> Result<ArrayView<'_, F, D>> {
    let len = dim.size();
    let data = data.get(..len).ok_or_else(|| Error::Parameter {
        name: "workspace",
        problem: format!(
            "holds {} values, {len} needed: run a step first",
            data.len()
        ),
    })?;
    ArrayView::from_shape(dim, data).map_err(|e| Error::Parameter {
        name: "workspace",
        problem: e.to_string(),
    })
}

/// Calls `f` with a gradient's index and its elements as a flat slice (what
/// `Model::visit_grads_indexed` does for each gradient of a generated model).
pub fn visit_indexed<F: Float, D: Dimension>(
    index: usize,
    grad: &ndarray::Array<F, D>,
    f: &mut dyn FnMut(usize, &[F]),
) {
    let grad = grad.as_standard_layout();
    if let Some(g) = grad.as_slice() {
        f(index, g);
    }
}

/// Calls `f` with a parameter and its gradient as flat slices (the optimizers' path). If the
/// user replaced either array with a non-contiguous one, it is made contiguous first (the only
/// case that allocates).
// The callback's type is spelled exactly as in `Model::visit_params_with_grads`, whose `f`
// is passed straight through; clippy finds it complex.
#[allow(clippy::type_complexity)]
pub fn visit_pair<F: Float, D: Dimension>(
    index: usize,
    param: &mut ndarray::Array<F, D>,
    grad: &ndarray::Array<F, D>,
    f: &mut dyn FnMut(usize, &mut [F], &[F]),
) {
    if !param.is_standard_layout() {
        *param = param.as_standard_layout().into_owned();
    }
    let grad = grad.as_standard_layout();
    if let (Some(p), Some(g)) = (param.as_slice_mut(), grad.as_slice()) {
        f(index, p, g);
    }
}

/// A dynamic-rank view as the declared static rank `D`, or an [`Error::Shape`] naming it.
pub fn fixed_rank<'a, T, D: Dimension>(
    kind: &'static str,
    name: &'static str,
    view: ndarray::ArrayViewD<'a, T>,
) -> Result<ArrayView<'a, T, D>> {
    let actual = view.shape().to_vec();
    view.into_dimensionality::<D>().map_err(|_| Error::Shape {
        kind,
        name,
        expected: format!("rank {}", D::NDIM.unwrap_or(0)),
        actual: actual.clone(),
        detail: format!(
            " (rank {} instead of {})",
            actual.len(),
            D::NDIM.unwrap_or(0)
        ),
    })
}

/// The error for a target of the wrong kind (labels where floats are declared, or back).
pub fn wrong_target_kind(name: &'static str, labels_expected: bool) -> Error {
    Error::Shape {
        kind: "target",
        name,
        expected: if labels_expected {
            "class labels"
        } else {
            "float values"
        }
        .to_string(),
        actual: Vec::new(),
        detail: if labels_expected {
            " (got float values; pass `TargetView::Labels`)".to_string()
        } else {
            " (got class labels; pass `TargetView::Values`)".to_string()
        },
    }
}

/// Checks that a decoding cache for `capacity` positions stays within the `max` positions the
/// model can address, `why` saying what sets the limit (a generated cache constructor calls
/// this, so that a cache too long for a position table is an error when it is made, not at
/// the first position past the table).
///
/// ```
/// use kiln_runtime::shape::check_capacity;
/// assert!(check_capacity(16, 16, "`wpe` is a position table of `max_len = 16`").is_ok());
/// let err = check_capacity(64, 16, "`wpe` is a position table of `max_len = 16`").unwrap_err();
/// assert!(err.to_string().contains("a capacity of 64 positions, but the model addresses at most 16"));
/// ```
pub fn check_capacity(capacity: usize, max: usize, why: &str) -> Result<()> {
    if capacity <= max {
        return Ok(());
    }
    Err(crate::Error::DecodeCache {
        problem: format!(
            "a capacity of {}, but the model addresses at most {max} ({why}): make the cache \
             for at most {max} positions",
            counted(capacity, "position")
        ),
    })
}

/// `n` and the noun, plural unless `n` is 1 ("1 sequence", "4 sequences").
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// For a decoding call: at the first position of a cache's sequences (`first`), keeps a copy
/// of `input`, one of the model's inputs that are not sequences (an encoder's source, its
/// lengths), in `kept`; at the later positions, checks that `input` is still that one. The
/// cache's earlier positions were computed from the first call's input, and the model may keep
/// what it computed from it: another one (of the same shape) would silently mix two
/// sequences. `Err` (a generated `forward_cached` calls this before it changes anything)
/// naming the input and the first element that differs. Equal means the same value, NaN
/// included. Allocates only when `kept` grows (the first call, or a larger input after
/// `clear()`).
///
/// ```
/// use kiln_runtime::shape::keep_static_input;
/// let mut kept = Vec::new();
/// keep_static_input("src", &mut kept, &[1.0f32, 2.0], true).unwrap();
/// assert!(keep_static_input("src", &mut kept, &[1.0, 2.0], false).is_ok());
/// let err = keep_static_input("src", &mut kept, &[1.0, 3.0], false).unwrap_err();
/// assert!(err.to_string().contains("`src` differs"));
/// // A new sequence (the cache cleared) may start from another source.
/// assert!(keep_static_input("src", &mut kept, &[1.0, 3.0], true).is_ok());
/// ```
pub fn keep_static_input<F: Copy + PartialEq>(
    name: &str,
    kept: &mut Vec<F>,
    input: &[F],
    first: bool,
) -> Result<()> {
    if first {
        kept.clear();
        kept.extend_from_slice(input);
        return Ok(());
    }
    // `x != x` only for NaN: a NaN in the input is the same value as the kept NaN.
    #[allow(clippy::eq_op)]
    let same = |a: F, b: F| a == b || (a != a && b != b);
    let differs = if kept.len() != input.len() {
        Some(format!(
            "has {} elements where the one the cache's sequences started from had {}",
            input.len(),
            kept.len()
        ))
    } else {
        kept.iter()
            .zip(input)
            .position(|(&a, &b)| !same(a, b))
            .map(|at| {
                format!(
                    "differs from the one the cache's sequences started from at element {at} \
                     (row-major)"
                )
            })
    };
    match differs {
        None => Ok(()),
        Some(how) => Err(crate::Error::DecodeCache {
            problem: format!(
                "`{name}` {how}: give it the same at every call for those sequences, or \
                 `clear()` the cache to start new ones"
            ),
        }),
    }
}

/// For a decoding pass after the first position: copies `kept`, the value `name` computed at
/// the first position from the model's inputs that are not sequences (an encoder's output),
/// back into its buffer `into`. `Err` if this call's inputs give it another size (they must
/// be the same at every call for a cache's sequences).
///
/// ```
/// use kiln_runtime::shape::restore_static;
/// let mut into = [0.0f32; 2];
/// restore_static("memory", &[1.0, 2.0], &mut into).unwrap();
/// assert_eq!(into, [1.0, 2.0]);
/// let err = restore_static("memory", &[1.0, 2.0], &mut [0.0f32; 3]).unwrap_err();
/// assert!(err.to_string().contains("`memory`"));
/// ```
pub fn restore_static<F: Copy>(name: &str, kept: &[F], into: &mut [F]) -> Result<()> {
    if kept.len() != into.len() {
        return Err(crate::Error::DecodeCache {
            problem: format!(
                "`{name}` was computed from the inputs that are not sequences at the first \
                 position, with {} elements, and this call's inputs give it {}: give them the \
                 same at every call for the cache's sequences, or `clear()` it to start new ones",
                kept.len(),
                into.len()
            ),
        });
    }
    into.copy_from_slice(kept);
    Ok(())
}

/// Checks that a batch of `batch` sequences of `new` positions may follow the `len`
/// positions of a decoding cache made for `cache_batch` sequences of up to `capacity`
/// positions (a generated `forward_cached` calls this before it changes anything).
///
/// ```
/// use kiln_runtime::shape::check_decode;
/// assert!(check_decode(1, 60, 64, 1, 4).is_ok());
/// let err = check_decode(1, 62, 64, 1, 4).unwrap_err();
/// assert!(err.to_string().contains("holds 62 of its 64 positions"));
/// assert!(check_decode(2, 0, 64, 1, 1).is_err());
/// let err = check_decode(1, 0, 64, 2, 1).unwrap_err();
/// assert!(err.to_string().contains("batches of 1 sequence, and this batch has 2"));
/// let err = check_decode(1, 1, 1, 1, 1).unwrap_err();
/// assert!(err.to_string().contains("holds 1 of its 1 position, and 1 more does not fit"));
/// ```
pub fn check_decode(
    cache_batch: usize,
    len: usize,
    capacity: usize,
    batch: usize,
    new: usize,
) -> Result<()> {
    let problem = if batch != cache_batch {
        format!(
            "it was made for batches of {}, and this batch has {batch}: \
             make one with `decoder_cache({batch}, capacity)`",
            counted(cache_batch, "sequence")
        )
    } else if new == 0 {
        "no new positions: give at least one token per sequence".to_string()
    } else if len + new > capacity {
        format!(
            "it holds {len} of its {}, and {new} more {} not fit: `clear()` \
             it and start again from the positions to keep",
            counted(capacity, "position"),
            if new == 1 { "does" } else { "do" }
        )
    } else {
        return Ok(());
    };
    Err(crate::Error::DecodeCache { problem })
}
