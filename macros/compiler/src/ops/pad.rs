//! `pad(x, (left, right))`, `pad(x, (left, right, top, bottom))`, ...: PyTorch's `F.pad` of
//! the trailing axes, the pairs written as PyTorch writes them (the last axis first), with
//! `mode = constant` (the default, `value = 0.0` unless given), `reflect`, `replicate` or
//! `circular`.
//! It takes a float value of rank at least one more than the padded axes (the batch axis is
//! never padded) and returns it with each padded axis `before + d + after` long. A negative
//! pad crops, as in PyTorch: the axis is cropped first and the modes pad from what is left
//! (a circular pad wraps around the cropped axis). The crops must leave at least one value,
//! and a reflect pad must be less than the (cropped) axis and a circular one at most it (as
//! PyTorch requires): checked here for a fixed axis, and at the call boundary for a symbolic
//! one (`4 * H` padded by 1 on each side is `4 * H + 2`). The backward adds each padded position's
//! gradient into the value it copies; cropped values get none. This is what a causal
//! convolution needs (`pad(x, (k - 1, 0))` then `conv1d` without padding), what reflection
//! padding in image models is, and how a U-Net crops a skip connection to its decoder's size.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct PadSpec;
/// `pad`.
pub static PAD: PadSpec = PadSpec;

const OP: &str = "pad";

/// How the padding is filled.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Constant,
    Reflect,
    Replicate,
    Circular,
}

impl OpSpec for PadSpec {
    fn name(&self) -> &'static str {
        OP
    }
    fn usage(&self) -> &'static str {
        "pad(x, (left, right))`, `pad(x, (left, right, top, bottom), mode = reflect)` or `pad(x, (2, 0), value = -1.0)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let mode = match args.option_expr("mode") {
            None => Mode::Constant,
            Some(ast::Expr::Var(m)) if m == "constant" => Mode::Constant,
            Some(ast::Expr::Var(m)) if m == "reflect" => Mode::Reflect,
            Some(ast::Expr::Var(m)) if m == "replicate" => Mode::Replicate,
            Some(ast::Expr::Var(m)) if m == "circular" => Mode::Circular,
            // NumPy's and ONNX's names for two of PyTorch's modes.
            Some(ast::Expr::Var(m)) if m == "wrap" || m == "edge" => {
                let torch = if m == "wrap" { "circular" } else { "replicate" };
                return Err(syn::Error::new(
                    m.span(),
                    format!("`mode = {m}` is NumPy's name; PyTorch's and kiln's is `mode = {torch}`"),
                ));
            }
            Some(other) => {
                return Err(syn::Error::new(
                    other.span(),
                    "`mode` is `constant`, `reflect`, `replicate` or `circular`, as in `mode = reflect`",
                ))
            }
        };
        let value_span = args.option_expr("value").map(ast::Expr::span);
        let value = args.opt_float("value")?;
        args.finish()?;
        if let (Some(span), true) = (value_span, mode != Mode::Constant) {
            return Err(syn::Error::new(
                span,
                "`value` fills `mode = constant` padding only: leave it out, or use the constant mode",
            ));
        }
        let pairs = parse_pairs(args.raw(1))?;
        Ok(Built::Kernel(Box::new(Pad {
            pads: pairs,
            mode,
            value: value.unwrap_or(0.0),
        })))
    }
}

/// The most pairs a `pad` takes (the runtime kernel's limit; PyTorch's non-constant modes
/// take at most three).
const MAX_PAIRS: usize = 8;

/// The padding tuple as `(before, after)` per axis, innermost axis first (PyTorch's order);
/// negative values crop.
fn parse_pairs(e: &ast::Expr) -> syn::Result<Vec<(i64, i64)>> {
    let usage = "write the padding as pairs of integers, the last axis first: `(left, right)` or `(left, right, top, bottom)`";
    let items: Vec<&ast::Expr> = match e {
        ast::Expr::Tuple(items, _) => items.iter().collect(),
        other => return Err(syn::Error::new(other.span(), usage)),
    };
    if items.is_empty() || !items.len().is_multiple_of(2) {
        return Err(syn::Error::new(
            e.span(),
            format!("{} padding values do not make pairs: {usage}", items.len()),
        ));
    }
    if items.len() > 2 * MAX_PAIRS {
        return Err(syn::Error::new(
            e.span(),
            format!(
                "{} pairs: `pad` pads at most {MAX_PAIRS} trailing axes",
                items.len() / 2
            ),
        ));
    }
    let too_large = |s: &proc_macro2::Span| syn::Error::new(*s, "this padding is too large");
    let mut values = Vec::new();
    for item in items {
        match item {
            ast::Expr::Int(v, s) => values.push(
                i64::try_from(*v)
                    .ok()
                    .filter(|v| *v < 1 << 40)
                    .ok_or_else(|| too_large(s))?,
            ),
            // `-1` is folded into a negative float literal: a crop.
            ast::Expr::Float(v, s) if *v < 0.0 && v.fract() == 0.0 => {
                if *v <= -((1u64 << 40) as f64) {
                    return Err(too_large(s));
                }
                values.push(*v as i64)
            }
            other => return Err(syn::Error::new(other.span(), usage)),
        }
    }
    Ok(values.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// A padding of the trailing axes.
pub struct Pad {
    /// `(before, after)` per padded axis, innermost first; negative values crop.
    pads: Vec<(i64, i64)>,
    mode: Mode,
    value: f64,
}

/// A pair split into what it crops and what it adds: `((crop_before, crop_after),
/// (pad_before, pad_after))`.
fn split((before, after): (i64, i64)) -> ((usize, usize), (usize, usize)) {
    let crop = |v: i64| v.min(0).unsigned_abs() as usize;
    let add = |v: i64| v.max(0) as usize;
    ((crop(before), crop(after)), (add(before), add(after)))
}

/// `v` as ONNX's int64.
fn cast(v: usize) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| "a padding too large for ONNX".to_string())
}

impl Pad {
    /// Whether any pair crops.
    fn crops(&self) -> bool {
        self.pads.iter().any(|&(b, a)| b < 0 || a < 0)
    }

    /// Circular padding in ONNX of `value` (dims `dims`): opset 17's `Pad` has no wrapping
    /// mode (`wrap` came in 19), so each padded axis, innermost first, is the `Concat` of its
    /// last `before` values, the value itself and its first `after` values (`Slice`s), which
    /// is what PyTorch computes.
    fn onnx_circular(
        &self,
        cx: &mut crate::onnx::OnnxCx,
        mut value: String,
        mut dims: Vec<Dim>,
    ) -> Result<(), String> {
        use crate::onnx::Attr::Int;
        let rank = dims.len();
        let count = self.pads.len();
        for (i, (&pair, axis)) in self.pads.iter().zip((0..rank).rev()).enumerate() {
            let (_, (before, after)) = split(pair);
            let axes = cx.b.ints("axes", vec![cast(axis)?]);
            let mut parts = Vec::new();
            if before > 0 {
                // Counted from the end, so that a symbolic axis needs no size.
                let (start, end) = (
                    cx.b.ints("starts", vec![-cast(before)?]),
                    cx.b.ints("ends", vec![i64::MAX]),
                );
                parts.push(cx.op(
                    "Slice",
                    vec![value.clone(), start, end, axes.clone()],
                    "wrap_tail",
                    vec![],
                ));
            }
            parts.push(value.clone());
            if after > 0 {
                let (start, end) = (
                    cx.b.ints("starts", vec![0]),
                    cx.b.ints("ends", vec![cast(after)?]),
                );
                parts.push(cx.op(
                    "Slice",
                    vec![value.clone(), start, end, axes],
                    "wrap_head",
                    vec![],
                ));
            }
            let attrs = vec![("axis", Int(cast(axis)?))];
            if i + 1 == count {
                cx.finish("Concat", parts, attrs);
            } else {
                value = cx.op("Concat", parts, "wrapped", attrs);
            }
            dims[axis] = dims[axis].plus(cast(before + after)?);
        }
        Ok(())
    }

    /// The crops in ONNX: one `Slice` of the cropped axes. Returns the cropped value and its
    /// dims, or finishes the node with the `Slice` when nothing is added after it.
    fn onnx_crop(
        &self,
        cx: &mut crate::onnx::OnnxCx,
    ) -> Result<Option<(String, Vec<Dim>)>, String> {
        let mut dims = cx.input_infos[0].shape.0.clone();
        let rank = dims.len();
        let (mut starts, mut ends, mut axes) = (Vec::new(), Vec::new(), Vec::new());
        for (&pair, axis) in self.pads.iter().zip((0..rank).rev()) {
            let ((crop_b, crop_a), _) = split(pair);
            if crop_b + crop_a == 0 {
                continue;
            }
            starts.push(cast(crop_b)?);
            // The end counted from the end of the axis, which needs no size.
            ends.push(if crop_a == 0 {
                i64::MAX
            } else {
                -cast(crop_a)?
            });
            axes.push(cast(axis)?);
            dims[axis] = dims[axis].plus(-cast(crop_b + crop_a)?);
        }
        let inputs = vec![
            cx.inputs[0].clone(),
            cx.b.ints("starts", starts),
            cx.b.ints("ends", ends),
            cx.b.ints("axes", axes),
        ];
        let adds = self.pads.iter().any(|&(b, a)| b > 0 || a > 0);
        if !adds {
            cx.finish("Slice", inputs, vec![]);
            return Ok(None);
        }
        Ok(Some((cx.op("Slice", inputs, "cropped", vec![]), dims)))
    }

    /// The pairs in axis order (outermost padded axis first), as the kernels take them.
    fn in_axis_order(&self) -> Vec<(i64, i64)> {
        self.pads.iter().rev().copied().collect()
    }

    fn mode_tokens(&self) -> TokenStream {
        match self.mode {
            Mode::Constant => quote!(::kiln::kernels::pad::PadMode::Constant),
            Mode::Reflect => quote!(::kiln::kernels::pad::PadMode::Reflect),
            Mode::Replicate => quote!(::kiln::kernels::pad::PadMode::Replicate),
            Mode::Circular => quote!(::kiln::kernels::pad::PadMode::Circular),
        }
    }

    fn pads_tokens(&self) -> TokenStream {
        let pairs = self.in_axis_order().into_iter().map(|(b, a)| {
            let (b, a) = (
                proc_macro2::Literal::i64_unsuffixed(b),
                proc_macro2::Literal::i64_unsuffixed(a),
            );
            quote!((#b, #a))
        });
        quote!(&[#(#pairs),*])
    }
}

impl Kernel for Pad {
    fn name(&self) -> &'static str {
        OP
    }
    fn describe(&self) -> String {
        let flat: Vec<String> = self
            .pads
            .iter()
            .flat_map(|&(b, a)| [b.to_string(), a.to_string()])
            .collect();
        let pads = flat.join(", ");
        match self.mode {
            Mode::Constant if self.value != 0.0 => format!("({pads}), value={}", self.value),
            Mode::Constant => format!("({pads})"),
            Mode::Reflect => format!("({pads}), mode=reflect"),
            Mode::Replicate => format!("({pads}), mode=replicate"),
            Mode::Circular => format!("({pads}), mode=circular"),
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let x = inputs[0];
        require_float(OP, 0, x)?;
        let shown = x.shape.display(symbols);
        let (rank, k) = (x.shape.rank(), self.pads.len());
        if rank < k + 1 {
            return Err(OpError::input(
                0,
                format!("{k} pairs pad the last {k} axes, but {shown} has {} besides the batch axis (which is never padded): give at most {} pairs", rank.saturating_sub(1), rank.saturating_sub(1)),
            ));
        }
        let mut shape = x.shape.0.clone();
        for (&(before, after), axis) in self.pads.iter().zip((0..rank).rev()) {
            let d = match shape[axis] {
                Dim::Fixed(d) => d,
                // A symbolic axis grows by the signed pads (crops are negative); the call
                // boundary checks what `required_sizes` lists.
                symbolic => {
                    shape[axis] = symbolic.plus(before.saturating_add(after));
                    continue;
                }
            };
            let ((crop_b, crop_a), (b, a)) = split((before, after));
            let crops = crop_b + crop_a;
            if crops >= d {
                return Err(OpError::call(format!(
                    "`pad` ({before}, {after}) crops {crops} of the {d} values of axis {axis} of {shown}: crop at most {}",
                    d - 1
                )));
            }
            let kept = d - crops;
            let left = if crops > 0 {
                format!("the {kept} values the crop leaves")
            } else {
                format!("its {d} values")
            };
            if self.mode == Mode::Reflect && (b >= kept || a >= kept) {
                return Err(OpError::call(format!(
                    "reflect padding ({before}, {after}) of axis {axis} of {shown} must be less than {left} (the border is not repeated): pad by at most {}, or use `mode = replicate`",
                    kept - 1
                )));
            }
            if self.mode == Mode::Circular && (b > kept || a > kept) {
                return Err(OpError::call(format!(
                    "circular padding ({before}, {after}) of axis {axis} of {shown} must be at most {left} (it wraps around once): pad by at most {kept}, or use `mode = replicate`"
                )));
            }
            let padded = kept
                .checked_add(b)
                .and_then(|v| v.checked_add(a))
                .ok_or_else(|| {
                    OpError::call(format!(
                        "padding axis {axis} of {shown} gives a length too large to address"
                    ))
                })?;
            shape[axis] = Dim::Fixed(padded);
        }
        Ok(ValueInfo {
            shape: Shape(shape),
            kind: ValueKind::Float,
        })
    }
    fn required_sizes(&self, inputs: &[&ValueInfo]) -> Vec<Dim> {
        let shape = &inputs[0].shape.0;
        let mut sizes = Vec::new();
        for (&(before, after), axis) in self.pads.iter().zip((0..shape.len()).rev()) {
            let ((crop_b, crop_a), (b, a)) = split((before, after));
            // What the crop leaves, at least 1; a reflection shorter than it, a wrap at most it.
            let kept = shape[axis].plus(-((crop_b + crop_a) as i64));
            let widest = b.max(a) as i64;
            sizes.push(match self.mode {
                Mode::Reflect => kept.plus(-widest),
                Mode::Circular => kept.plus(1 - widest),
                Mode::Constant | Mode::Replicate => kept,
            });
        }
        sizes
    }
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Padding the features of each position (not the sequence axis, axis 1) is position
        // by position.
        super::Decoding::position_wise_if(self.pads.len() + 2 <= inputs[0].shape.rank())
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let (xd, dims, y) = (&x.data, &x.dims, &cx.output.data);
        let (pads, mode, value) = (self.pads_tokens(), self.mode_tokens(), self.value);
        quote! {
            ::kiln::kernels::pad::pad_forward(#xd, &[#(#dims),*], #pads, #mode, F::from_f64(#value), #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let dims = &cx.inputs[0].dims;
        let (dy, dxd, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        let (pads, mode) = (self.pads_tokens(), self.mode_tokens());
        quote! {
            ::kiln::kernels::pad::pad_backward(#dy, &[#(#dims),*], #pads, #mode, #dxd, #acc);
        }
    }
    /// ONNX's `Pad`: begins then ends for every axis (zeros for the unpadded ones), the mode
    /// (`edge` is PyTorch's `replicate`) and the constant; crops first as a `Slice`.
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let (value, dims) = if self.crops() {
            match self.onnx_crop(cx)? {
                Some(cropped) => cropped,
                None => return Ok(()),
            }
        } else {
            (cx.inputs[0].clone(), cx.input_infos[0].shape.0.clone())
        };
        if self.mode == Mode::Circular {
            return self.onnx_circular(cx, value, dims);
        }
        let rank = dims.len();
        let mut begins = vec![0i64; rank];
        let mut ends = vec![0i64; rank];
        for (&pair, axis) in self.pads.iter().zip((0..rank).rev()) {
            let (_, (b, a)) = split(pair);
            begins[axis] = cast(b)?;
            ends[axis] = cast(a)?;
        }
        begins.extend(ends);
        let pads = cx.b.ints("pads", begins);
        let mut inputs = vec![value, pads];
        let mode = match self.mode {
            Mode::Constant => {
                inputs.push(cx.b.floats("value", Vec::new(), vec![self.value]));
                "constant"
            }
            // No constant input for the other modes: the spec ignores it, but some runtimes
            // (tract 0.23) then pad with it.
            Mode::Reflect => "reflect",
            Mode::Replicate => "edge",
            Mode::Circular => unreachable!("exported by `onnx_circular`"),
        };
        cx.finish(
            "Pad",
            inputs,
            vec![("mode", crate::onnx::Attr::Str(mode.to_string()))],
        );
        Ok(())
    }
}
