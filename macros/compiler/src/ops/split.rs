//! `chunk` and `split`, PyTorch's `torch.chunk` and `torch.split`: one value cut into
//! consecutive parts along an axis, unpacked by a tuple `let`:
//!
//! ```text
//! let (q, k, v) = chunk(qkv, 3, axis = -1);          // three equal parts
//! let (a, b) = split(x, 64, axis = 1);               // parts of 64 (the last may be shorter)
//! let (left, right) = split(x, (16, 48), axis = 1);  // parts of the given sizes
//! ```
//!
//! The parser turns such a `let` into one `let` per name, each a call with two more options,
//! `index = i` and `unpacked = n` (the number of names): every part is its own node, a window of
//! the input computed as [`super::narrow`] computes it. Part sizes follow PyTorch: `chunk(x,
//! n)` cuts parts of `ceil(d / n)` positions, which can give fewer than `n` parts (`torch.chunk`
//! of 6 into 4 gives 3 parts of 2); the `let` must name as many parts as the axis gives. The
//! axis must be fixed and cannot be the batch axis.

use super::narrow::Narrow;
use super::{
    require_float, resolve_axis, BackwardCx, Built, CallArgs, Decoding, ForwardCx, Kernel, OpError,
    OpSpec, Reads,
};
use crate::ast;
use crate::ir::{Dim, ValueInfo};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `chunk`.
pub struct ChunkSpec;
/// `chunk`.
pub static CHUNK: ChunkSpec = ChunkSpec;
/// The registry entry of `split`.
pub struct SplitSpec;
/// `split`.
pub static SPLIT: SplitSpec = SplitSpec;

/// How the axis is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cut {
    /// `chunk(x, n)`: parts of `ceil(d / n)`.
    Chunks(usize),
    /// `split(x, s)`: parts of `s`, the last one what remains.
    Size(usize),
    /// `split(x, (a, b, ...))`: parts of exactly these sizes, which must add up to the axis.
    Sections(Vec<usize>),
}

impl Cut {
    /// The parts' lengths along an axis of `d` positions (for `Sections`, as written).
    fn lengths(&self, d: usize) -> Vec<usize> {
        let step = match self {
            Cut::Chunks(n) => d.div_ceil(*n),
            Cut::Size(s) => *s,
            Cut::Sections(sizes) => return sizes.clone(),
        };
        let mut lengths = Vec::new();
        let mut start = 0;
        while start < d && step > 0 {
            lengths.push(step.min(d - start));
            start += step;
        }
        lengths
    }

    /// The cut as the call wrote it, for messages: `chunk(.., 3)`, `split(.., (16, 48))`.
    fn written(&self) -> String {
        match self {
            Cut::Chunks(n) => format!("chunk(.., {n})"),
            Cut::Size(s) => format!("split(.., {s})"),
            Cut::Sections(sizes) => format!("split(.., ({}))", list(sizes)),
        }
    }
}

/// `16, 48`.
fn list(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The options both ops share: the axis (an option or, as PyTorch's `dim`, the third
/// positional argument) and the part the parser's unpacking asks for.
fn part_options(args: &mut CallArgs, usage: &str, op: &str) -> syn::Result<(i64, usize, usize)> {
    args.positional(2, 3)?;
    args.tensor(0);
    let positional_axis = if args.has(2) {
        Some(args.axis(2)?)
    } else {
        None
    };
    let axis_option = args.opt_axis("axis")?;
    let part = args.opt_index("index")?;
    let parts = args.opt_int("unpacked")?;
    args.finish()?;
    let axis = match (positional_axis, axis_option) {
        (Some(_), Some(_)) => {
            return Err(syn::Error::new(
                args.span(),
                format!("`{op}` is given its axis twice: `let {usage};`"),
            ))
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => {
            return Err(syn::Error::new(
                args.span(),
                format!("`{op}` needs its axis: `let {usage};`"),
            ))
        }
    };
    let Some(part) = part else {
        return Err(syn::Error::new(
            args.span(),
            format!(
                "`{op}` gives several values: unpack them with a tuple `let`, as in `let {usage};`"
            ),
        ));
    };
    Ok((axis, part, parts.unwrap_or(0)))
}

impl OpSpec for ChunkSpec {
    fn name(&self) -> &'static str {
        "chunk"
    }
    fn usage(&self) -> &'static str {
        "(q, k, v) = chunk(qkv, 3, axis = -1)"
    }
    fn unpacks(&self) -> bool {
        true
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        let chunks = args.int(1, "the number of chunks")?;
        let (axis, part, parts) = part_options(args, self.usage(), "chunk")?;
        Ok(Built::Kernel(Box::new(Part {
            op: "chunk",
            axis,
            cut: Cut::Chunks(chunks),
            part,
            parts,
        })))
    }
}

impl OpSpec for SplitSpec {
    fn name(&self) -> &'static str {
        "split"
    }
    fn usage(&self) -> &'static str {
        "(a, b) = split(x, (16, 48), axis = 1)"
    }
    fn unpacks(&self) -> bool {
        true
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        let cut = match args.raw(1) {
            ast::Expr::Tuple(items, _) => {
                let mut sizes = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        ast::Expr::Int(v, _) if *v > 0 => sizes.push(*v as usize),
                        other => {
                            return Err(syn::Error::new(
                                other.span(),
                                "a section of `split` is a positive integer, as in `split(x, (16, 48), axis = 1)`",
                            ))
                        }
                    }
                }
                Cut::Sections(sizes)
            }
            _ => Cut::Size(args.int(1, "the size of each part")?),
        };
        let (axis, part, parts) = part_options(args, self.usage(), "split")?;
        if let Cut::Sections(sizes) = &cut {
            if parts > 0 && sizes.len() != parts {
                return Err(syn::Error::new(
                    args.raw(1).span(),
                    format!(
                        "`split` into {} sections, but the `let` unpacks {parts} values: name one value per section",
                        sizes.len()
                    ),
                ));
            }
        }
        Ok(Built::Kernel(Box::new(Part {
            op: "split",
            axis,
            cut,
            part,
            parts,
        })))
    }
}

/// Part `part` of the cut of `axis`; `parts` is how many the `let` names (0 when the call
/// asked for one part by itself, `index = i`).
pub struct Part {
    op: &'static str,
    axis: i64,
    cut: Cut,
    part: usize,
    parts: usize,
}

impl Part {
    fn axis_of(&self, rank: usize) -> usize {
        if self.axis < 0 {
            (rank as i64 + self.axis) as usize
        } else {
            self.axis as usize
        }
    }

    /// This part as a window of an axis of `d` positions, or why the cut does not fit;
    /// `place` names the axis for the message (`axis 1 of [B, 6, 8]`).
    fn window(&self, d: usize, place: &str) -> Result<Narrow, String> {
        let lengths = self.cut.lengths(d);
        let (op, written) = (self.op, self.cut.written());
        if let Cut::Sections(sizes) = &self.cut {
            let total = sizes.iter().try_fold(0usize, |sum, &s| sum.checked_add(s));
            if total != Some(d) {
                let total = total.map_or("more".to_string(), |t| t.to_string());
                return Err(format!(
                    "`{written}` cuts {total} positions, but {place} has {d}: the sections must add up to it"
                ));
            }
        }
        let count = lengths.len();
        let cut = format!(
            "`{written}` cuts {place} ({d} positions) into {count} parts ({})",
            list(&lengths)
        );
        if self.parts > 0 && count != self.parts {
            let hint = match &self.cut {
                Cut::Chunks(n) if *n != count => format!(
                    ", not {n}: as `torch.chunk` does, it makes parts of {d} / {n} rounded up"
                ),
                _ => String::new(),
            };
            return Err(format!(
                "{cut}{hint}; the `let` unpacks {}: name one value per part",
                self.parts
            ));
        }
        let Some(&length) = lengths.get(self.part) else {
            return Err(format!("`{op}` part {}: {cut}", self.part));
        };
        let start: usize = lengths[..self.part].iter().sum();
        Ok(Narrow::window(self.axis, start as i64, length))
    }

    /// The window for an input whose dims are `dims` (code tokens; the axis is a fixed size,
    /// which [`Kernel::infer`] checked).
    fn window_of(&self, dims: &[TokenStream]) -> Result<Narrow, TokenStream> {
        let axis = self.axis_of(dims.len());
        let d = dims[axis].to_string().parse::<usize>();
        match d
            .map_err(|e| e.to_string())
            .and_then(|d| self.window(d, &format!("axis {axis}")))
        {
            Ok(window) => Ok(window),
            Err(message) => Err(quote!(compile_error!(#message);)),
        }
    }
}

impl Kernel for Part {
    fn name(&self) -> &'static str {
        self.op
    }
    fn describe(&self) -> String {
        let cut = match &self.cut {
            Cut::Chunks(n) => format!("chunks={n}"),
            Cut::Size(s) => format!("size={s}"),
            Cut::Sections(sizes) => format!("sections=({})", list(sizes)),
        };
        format!("axis={}, {cut}, index={}", self.axis, self.part)
    }
    fn decoding(&self, inputs: &[&ValueInfo]) -> Decoding {
        Decoding::position_wise_if(self.axis_of(inputs[0].shape.rank()) >= 2)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.op;
        let x = inputs[0];
        require_float(op, 0, x)?;
        let shown = x.shape.display(symbols).to_string();
        let axis = resolve_axis(op, self.axis, x.shape.rank(), &shown)?;
        if axis == 0 {
            return Err(OpError::input(
                0,
                format!("`{op}` along axis 0 of {shown}, the batch axis: every sample goes through the model alike, so cut a later axis"),
            ));
        }
        let d = match x.shape.0[axis] {
            Dim::Fixed(d) => d,
            symbolic => {
                return Err(OpError::input(
                    0,
                    format!(
                        "`{op}` along axis {axis} of {shown}, whose length `{}` is only known at run time: the parts' shapes must be fixed; cut a fixed axis, or take windows with `narrow(x, axis = {axis}, start = 0, length = 4)`",
                        symbolic.display(symbols)
                    ),
                ));
            }
        };
        let window = self
            .window(d, &format!("axis {axis} of {shown}"))
            .map_err(OpError::call)?;
        window.infer(inputs, symbols)
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        match self.window_of(&cx.inputs[0].dims) {
            Ok(window) => window.forward(cx),
            Err(error) => error,
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        match self.window_of(&cx.inputs[0].dims) {
            Ok(window) => window.backward(cx),
            Err(error) => error,
        }
    }
    /// A `Slice`, as `narrow` exports.
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let axis = self.axis_of(cx.rank(0));
        let Dim::Fixed(d) = cx.input_infos[0].shape.0[axis] else {
            return Err(format!("`{}` of a symbolic axis", self.op));
        };
        self.window(d, &format!("axis {axis}"))?.onnx(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Cut;

    #[test]
    fn parts_are_cut_as_pytorch_cuts_them() {
        assert_eq!(Cut::Chunks(3).lengths(12), [4, 4, 4]);
        assert_eq!(Cut::Chunks(3).lengths(7), [3, 3, 1]);
        // torch.chunk(torch.arange(6), 4) gives 3 parts of 2.
        assert_eq!(Cut::Chunks(4).lengths(6), [2, 2, 2]);
        assert_eq!(Cut::Size(4).lengths(10), [4, 4, 2]);
        assert_eq!(Cut::Size(16).lengths(10), [10]);
        assert_eq!(Cut::Sections(vec![2, 5]).lengths(7), [2, 5]);
    }
}
