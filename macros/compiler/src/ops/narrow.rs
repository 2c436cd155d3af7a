//! `narrow(x, axis = k, start = s, length = n)` and `select(x, axis = k, index = i)`:
//! PyTorch's `torch.narrow` (`x[:, s:s + n]`) and `torch.select` (`x[:, i]`, the axis
//! dropped). Instead of `length`, `end = e` ends the window before position `e` as a Python
//! slice does (`x[:, s:e]`); a negative `end` counts from the end (`end = -1` is `x[:, s:-1]`,
//! all but the last position). Without either the window runs to the end of the axis
//! (`x[:, s:]`). On a symbolic axis a window to (or a fixed distance before) the end is a
//! formula of it (`T - 1`). A negative `start` or `index` counts from the end (`select(h, axis
//! = 1, index = -1)` is the last position, `h[:, -1]`). The axis may be any but the batch
//! axis; on a fixed axis the window is checked here, on a symbolic one (`T`) by the generated
//! code, which returns `kiln::Error::OutOfRange` for a batch too short for it (a window of a
//! formula's length is kept at least one position long at the call boundary). The backward
//! writes the output's gradient into the window and zeros around it.

use super::{
    require_float, resolve_axis, BackwardCx, Built, CallArgs, Decoding, ForwardCx, Kernel, OpError,
    OpSpec, Reads,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `narrow`.
pub struct NarrowSpec;
/// `narrow`.
pub static NARROW: NarrowSpec = NarrowSpec;
/// The registry entry of `select`.
pub struct SelectSpec;
/// `select`.
pub static SELECT: SelectSpec = SelectSpec;

/// How `end` is written, for its error messages.
const END_USAGE: &str = "narrow(x, axis = 1, start = 0, end = -1)";

/// A signed integer argument: `3`, or `-1` (which the parser reads as a negative float).
fn signed(e: &ast::Expr, what: &str, usage: &str) -> syn::Result<i64> {
    match e {
        ast::Expr::Int(v, s) => {
            i64::try_from(*v).map_err(|_| syn::Error::new(*s, format!("{what} is too large")))
        }
        ast::Expr::Float(v, _) if v.fract() == 0.0 && *v < 0.0 && *v > -9.0e15 => Ok(*v as i64),
        other => Err(syn::Error::new(
            other.span(),
            format!("{what} is an integer (negative counts from the end): `{usage}`"),
        )),
    }
}

/// The axis and the signed `key` of a call written `op(x, axis = k, key = v)` or, as PyTorch
/// writes it, `op(x, k, v)`; `more` is `length` for `narrow`.
fn axis_and(
    args: &mut CallArgs,
    key: &'static str,
    more: Option<&'static str>,
    usage: &str,
) -> syn::Result<(i64, i64, Option<i64>)> {
    let positional = 2 + usize::from(more.is_some());
    args.positional(1, 1 + positional)?;
    args.tensor(0);
    let span = args.span();
    let missing = |what: &str| {
        syn::Error::new(
            span,
            format!("`{}` needs its {what}: `{usage}`", args_name(more)),
        )
    };
    if args.count() > 1 {
        // `narrow(x, 1, s)` without a length, as its keyword form, to the end (or `end`).
        let no_length = more.is_some() && args.count() == positional;
        if args.count() != 1 + positional && !no_length {
            return Err(missing("axis and every position, in order"));
        }
        let axis = args.axis(1)?;
        let value = signed(args.raw(2), key, usage)?;
        let extra = match more {
            Some(m) if !no_length => Some(signed(args.raw(3), m, usage)?),
            _ => None,
        };
        args.finish()?;
        return Ok((axis, value, extra));
    }
    let axis = args.opt_axis("axis")?;
    let value = args.option_expr(key).map(|e| signed(e, key, usage));
    let extra = more.map(|m| args.option_expr(m).map(|e| signed(e, m, usage)));
    args.finish()?;
    let axis = axis.ok_or_else(|| missing("axis (`axis = 1`)"))?;
    let value = value.ok_or_else(|| missing(&format!("`{key}`")))??;
    // A `narrow` without `length` runs to the end of the axis.
    let extra = match extra {
        Some(Some(v)) => Some(v?),
        Some(None) | None => None,
    };
    Ok((axis, value, extra))
}

fn args_name(more: Option<&str>) -> &'static str {
    if more.is_some() {
        "narrow"
    } else {
        "select"
    }
}

impl OpSpec for NarrowSpec {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn usage(&self) -> &'static str {
        "narrow(x, axis = 1, start = 0, length = 4)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        // `end` is a keyword only (PyTorch's `narrow` has none; its slices do).
        let end = args
            .option_expr("end")
            .map(|e| Ok::<_, syn::Error>((signed(e, "end", END_USAGE)?, e.span())))
            .transpose()?;
        let (axis, start, length) = axis_and(args, "start", Some("length"), self.usage())?;
        let window = |length: usize, back: Option<usize>| {
            Ok(Built::Kernel(Box::new(Narrow {
                axis,
                start,
                length,
                select: false,
                back,
            })))
        };
        match (length, end) {
            (Some(_), Some((_, span))) => Err(syn::Error::new(
                span,
                "`narrow` takes a `length` or an `end`, not both: `end` is where the window stops (`x[:, 1:-1]` is `start = 1, end = -1`)",
            )),
            (Some(length), None) if length <= 0 => Err(syn::Error::new(
                args.span(),
                format!("`narrow` takes at least one position, but `length` is {length}"),
            )),
            (Some(length), None) => window(length as usize, None),
            // `x[:, s:]`: from a negative start, as many positions as it counts back.
            (None, None) if start < 0 => window(start.unsigned_abs() as usize, None),
            (None, None) => window(0, Some(0)),
            (None, Some((end, span))) => {
                let empty = |why: String| Err(syn::Error::new(span, why));
                match (start < 0, end) {
                    (_, 0) => empty("`end = 0` leaves no positions: leave `end` out for a window to the end of the axis (`x[:, 1:]`), or give a negative one to stop before it (`end = -1`)".into()),
                    // `x[:, s:-k]`: up to `k` positions before the end, however long the axis.
                    (false, e) if e < 0 => window(0, Some(e.unsigned_abs() as usize)),
                    // Both counted from the same side: a window of a fixed length.
                    (_, e) if (start < 0) == (e < 0) => {
                        if e > start {
                            window((e - start) as usize, None)
                        } else {
                            empty(format!("`narrow` from {start} to {e} ([{start}:{e}]) takes no positions: use an `end` after the start"))
                        }
                    }
                    (_, e) => empty(format!("`narrow` from {start}, counted from the end, to {e}, counted from the start, takes a number of positions that depends on the axis's length: count both from the same side (`start = -3, end = -1`)")),
                }
            }
        }
    }
}

impl OpSpec for SelectSpec {
    fn name(&self) -> &'static str {
        "select"
    }
    fn usage(&self) -> &'static str {
        "select(x, axis = 1, index = -1)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        let (axis, index, _) = axis_and(args, "index", None, self.usage())?;
        Ok(Built::Kernel(Box::new(Narrow {
            axis,
            start: index,
            length: 1,
            select: true,
            back: None,
        })))
    }
}

/// A window of `length` positions from `start` along `axis` (both as written, possibly
/// negative); `select` drops the axis (its `length` is 1); with `back` = `Some(k)`, the window
/// runs from `start` (not negative) to `k` positions before the end of the axis (`x[:, s:-k]`,
/// or `x[:, s:]` for 0), and `length` is unused.
pub struct Narrow {
    axis: i64,
    start: i64,
    length: usize,
    select: bool,
    back: Option<usize>,
}

/// Where the window starts along an axis of `d` positions, when it fits.
fn fixed_start(start: i64, length: usize, d: usize) -> Option<usize> {
    let begin = if start < 0 {
        (d as i64).checked_add(start)?
    } else {
        start
    };
    let begin = usize::try_from(begin).ok()?;
    (begin.checked_add(length)? <= d).then_some(begin)
}

impl Narrow {
    /// A window of `length` positions from `start` (non-negative, checked by the caller to
    /// fit) along `axis`: a part of `chunk` or `split`.
    pub(super) fn window(axis: i64, start: i64, length: usize) -> Self {
        Narrow {
            axis,
            start,
            length,
            select: false,
            back: None,
        }
    }

    fn op(&self) -> &'static str {
        if self.select {
            "select"
        } else {
            "narrow"
        }
    }

    /// What the window asks for, with PyTorch's indexing where it has one: `index -1`, `3
    /// positions from 1 ([1:4])`, `2 positions from -2 ([-2:])`.
    fn window_text(&self) -> String {
        if self.select {
            return format!("index {}", self.start);
        }
        match self.back {
            Some(0) => return format!("the positions from {} ([{}:])", self.start, self.start),
            Some(k) => {
                return format!(
                    "the positions from {} to {k} before the end ([{}:-{k}])",
                    self.start, self.start
                )
            }
            None => {}
        }
        let (start, end) = (self.start, self.start + self.length as i64);
        let slice = if start >= 0 || end < 0 {
            format!(" ([{start}:{end}])")
        } else if end == 0 {
            format!(" ([{start}:])")
        } else {
            String::new()
        };
        format!("{} positions from {start}{slice}", self.length)
    }

    /// The window's length in generated code, for an axis of `d` positions.
    fn length_tokens(&self, d: &TokenStream) -> TokenStream {
        if let Some(back) = self.back {
            super::dim_plus(d, -self.start - back as i64)
        } else {
            let length = self.length;
            quote!(#length)
        }
    }

    /// The resolved axis of an input of rank `rank` (the shape stage has checked it).
    fn axis_of(&self, rank: usize) -> usize {
        if self.axis < 0 {
            (rank as i64 + self.axis) as usize
        } else {
            self.axis as usize
        }
    }

    /// `(outer, d, inner)` of the input dims and the window's start, with the check of a
    /// symbolic axis (code that returns an error before the kernel runs) when `checked`.
    fn sizes(
        &self,
        dims: &[TokenStream],
        layer: &str,
        checked: bool,
    ) -> (
        TokenStream,
        TokenStream,
        TokenStream,
        TokenStream,
        TokenStream,
    ) {
        let axis = self.axis_of(dims.len());
        let (outer, d, inner) = (
            super::product_of(&dims[..axis]),
            dims[axis].clone(),
            super::product_of(&dims[axis + 1..]),
        );
        if self.back.is_some() {
            // The call boundary keeps the window at least one position long (its length is a
            // size the model computes).
            let begin = self.start as usize;
            return (outer, d, inner, quote!(#begin), TokenStream::new());
        }
        let length = self.length;
        let fixed = d.to_string().parse::<usize>().ok();
        if let Some(begin) = fixed.and_then(|d| fixed_start(self.start, length, d)) {
            return (outer, d, inner, quote!(#begin), TokenStream::new());
        }
        // A symbolic axis: the window is checked against this batch's length.
        let (start, needed) = if self.start < 0 {
            let back = self.start.unsigned_abs() as usize;
            (quote!((#d - #back)), back)
        } else {
            let begin = self.start as usize;
            (quote!(#begin), begin + length)
        };
        let check = if checked {
            let positions = if needed == 1 { "position" } else { "positions" };
            let what = format!(
                "`{}` of {} along axis {axis} needs at least {needed} {positions}, but this batch has {{}}",
                self.op(),
                self.window_text()
            );
            quote! {
                if #d < #needed {
                    return Err(::kiln::Error::OutOfRange { layer: #layer, problem: format!(#what, #d) });
                }
            }
        } else {
            TokenStream::new()
        };
        (outer, d, inner, start, check)
    }
}

impl Kernel for Narrow {
    fn name(&self) -> &'static str {
        self.op()
    }
    fn describe(&self) -> String {
        if self.select {
            format!("axis={}, index={}", self.axis, self.start)
        } else {
            let length = match self.back {
                Some(0) => String::new(),
                Some(k) => format!(", end=-{k}"),
                None => format!(", length={}", self.length),
            };
            format!("axis={}, start={}{length}", self.axis, self.start)
        }
    }
    fn decoding(&self, inputs: &[&ValueInfo]) -> Decoding {
        // A window of the features is position by position; one of the time axis is not.
        Decoding::position_wise_if(self.axis_of(inputs[0].shape.rank()) >= 2)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.op();
        let x = inputs[0];
        require_float(op, 0, x)?;
        let shown = x.shape.display(symbols).to_string();
        let rank = x.shape.rank();
        let axis = resolve_axis(op, self.axis, rank, &shown)?;
        if axis == 0 {
            return Err(OpError::input(
                0,
                format!("`{op}` along axis 0 of {shown}, the batch axis: every sample goes through the model alike, so take the window along a later axis"),
            ));
        }
        let mut dims = x.shape.0.clone();
        if let Some(back) = self.back {
            // Positions the window leaves out: before it, and after it up to the end.
            let outside = self.start + back as i64;
            dims[axis] = match dims[axis] {
                Dim::Fixed(d) if outside >= d as i64 => {
                    let fits = if back == 0 {
                        format!("a start below {d}")
                    } else {
                        "a start and an end that leave at least one position".to_string()
                    };
                    return Err(OpError::call(format!(
                        "`narrow` of {} along axis {axis} of {shown}, which has {d}: use {fits}",
                        self.window_text(),
                    )));
                }
                // A symbolic axis: the call boundary keeps `T - outside` at least 1.
                size => size.plus(-outside),
            };
            return Ok(ValueInfo {
                shape: Shape(dims),
                kind: ValueKind::Float,
            });
        }
        match x.shape.0[axis] {
            Dim::Fixed(d) => {
                if fixed_start(self.start, self.length, d).is_none() {
                    let fits = if self.select {
                        format!("an index from {} to {}", -(d as i64), d as i64 - 1)
                    } else {
                        format!("a start and length with start + length at most {d}")
                    };
                    return Err(OpError::call(format!(
                        "`{op}` of {} along axis {axis} of {shown}, which has {d}: use {fits}",
                        self.window_text()
                    )));
                }
            }
            Dim::Symbol(_) | Dim::Affine { .. } => {
                if self.start < 0 && self.length > self.start.unsigned_abs() as usize {
                    return Err(OpError::call(format!(
                        "`{op}` of {} along axis {axis} of {shown} runs past the end of the axis: a start of {} leaves {} positions; use `length = {}` or an earlier start",
                        self.window_text(),
                        self.start,
                        self.start.unsigned_abs(),
                        self.start.unsigned_abs()
                    )));
                }
            }
        }
        if self.select {
            dims.remove(axis);
        } else {
            dims[axis] = Dim::Fixed(self.length);
        }
        Ok(ValueInfo {
            shape: Shape(dims),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let (outer, d, inner, start, check) = self.sizes(&x.dims, &cx.layer_name, true);
        let (xd, y, length) = (&x.data, &cx.output.data, self.length_tokens(&d));
        quote! {
            #check
            ::kiln::kernels::shape_ops::narrow_forward(#xd, #outer, #d, #inner, #start, #length, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (outer, d, inner, start, _) = self.sizes(&cx.inputs[0].dims, "", false);
        let length = self.length_tokens(&d);
        let (dy, dxd, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        quote! {
            ::kiln::kernels::shape_ops::narrow_backward(#dy, #outer, #d, #inner, #start, #length, #dxd, #acc);
        }
    }
    /// ONNX's `Slice` (negative starts count from the end there too), or `Gather` of a 0-d
    /// index, which drops the axis, for `select`.
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Int;
        let rank = cx.rank(0);
        let axis = self.axis_of(rank);
        let start = match cx.input_infos[0].shape.0[axis] {
            Dim::Fixed(d) => {
                fixed_start(self.start, self.length, d).map_or(self.start, |s| s as i64)
            }
            _ => self.start,
        };
        let x = cx.inputs[0].clone();
        if self.select {
            let index = cx.b.int_scalar(start);
            cx.finish("Gather", vec![x, index], vec![("axis", Int(axis as i64))]);
            return Ok(());
        }
        let end = match self.back {
            Some(0) => i64::MAX,
            Some(k) => -(k as i64),
            None => start + self.length as i64,
        };
        // A window that reaches the end of a symbolic axis from a negative start: to the end.
        let end = if start < 0 && end == 0 { i64::MAX } else { end };
        let starts = cx.b.ints("starts", vec![start]);
        let ends = cx.b.ints("ends", vec![end]);
        let axes = cx.b.ints("axes", vec![axis as i64]);
        cx.finish("Slice", vec![x, starts, ends, axes], vec![]);
        Ok(())
    }
}
