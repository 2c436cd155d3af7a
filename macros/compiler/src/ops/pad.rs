//! `pad(x, (left, right))`, `pad(x, (left, right, top, bottom))`, ...: PyTorch's `F.pad` of
//! the trailing axes, the pairs written as PyTorch writes them (the last axis first), with
//! `mode = constant` (the default, `value = 0.0` unless given), `reflect`, `replicate` or
//! `circular`.
//! It takes a float value of rank at least one more than the padded axes (the batch axis is
//! never padded) and returns it with each padded axis `before + d + after` long. The padded
//! axes must be fixed; a reflect pad must be less than its axis and a circular one at most
//! its axis (as PyTorch requires). The
//! backward adds each padded position's gradient into the value it copies. This is what a
//! causal convolution needs (`pad(x, (k - 1, 0))` then `conv1d` without padding) and what
//! reflection padding in image models is.

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

/// The padding tuple as `(before, after)` per axis, innermost axis first (PyTorch's order).
fn parse_pairs(e: &ast::Expr) -> syn::Result<Vec<(usize, usize)>> {
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
    let mut values = Vec::new();
    for item in items {
        match item {
            ast::Expr::Int(v, s) => values.push(
                usize::try_from(*v)
                    .map_err(|_| syn::Error::new(*s, "this padding is too large"))?,
            ),
            // `-1` is folded into a negative float literal.
            ast::Expr::Float(v, s) if *v < 0.0 => {
                return Err(syn::Error::new(
                    *s,
                    "a negative padding crops in PyTorch; kiln's `pad` only adds padding: crop with `narrow(x, axis = k, start = s, length = n)`",
                ))
            }
            other => return Err(syn::Error::new(other.span(), usage)),
        }
    }
    Ok(values.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// A padding of the trailing axes.
pub struct Pad {
    /// `(before, after)` per padded axis, innermost first.
    pads: Vec<(usize, usize)>,
    mode: Mode,
    value: f64,
}

impl Pad {
    /// Circular padding in ONNX: opset 17's `Pad` has no wrapping mode (`wrap` came in 19),
    /// so each padded axis, innermost first, is the `Concat` of its last `before` values, the
    /// value itself and its first `after` values (`Slice`s), which is what PyTorch computes.
    fn onnx_circular(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Int;
        let rank = cx.rank(0);
        let mut dims = cx.input_infos[0].shape.0.clone();
        let mut value = cx.inputs[0].clone();
        let cast =
            |v: usize| i64::try_from(v).map_err(|_| "a padding too large for ONNX".to_string());
        let count = self.pads.len();
        for (i, (&(before, after), axis)) in self.pads.iter().zip((0..rank).rev()).enumerate() {
            let Dim::Fixed(d) = dims[axis] else {
                return Err("circular padding of a symbolic axis".to_string());
            };
            let axes = cx.b.ints("axes", vec![cast(axis)?]);
            let mut parts = Vec::new();
            if before > 0 {
                let (start, end) = (
                    cx.b.ints("starts", vec![cast(d - before)?]),
                    cx.b.ints("ends", vec![cast(d)?]),
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
            dims[axis] = Dim::Fixed(d + before + after);
        }
        Ok(())
    }

    /// The pairs in axis order (outermost padded axis first), as the kernels take them.
    fn in_axis_order(&self) -> Vec<(usize, usize)> {
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
        let pairs = self
            .in_axis_order()
            .into_iter()
            .map(|(b, a)| quote!((#b, #a)));
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
                Dim::Symbol(s) => {
                    return Err(OpError::input(
                        0,
                        format!("`pad` needs the axes it pads fixed, but axis {axis} of {shown} is the symbolic `{}`: declare it as a number", symbols[s]),
                    ))
                }
            };
            if self.mode == Mode::Reflect && (before >= d || after >= d) {
                return Err(OpError::call(format!(
                    "reflect padding ({before}, {after}) of axis {axis} of {shown} must be less than its {d} values (the border is not repeated): pad by at most {}, or use `mode = replicate`",
                    d.saturating_sub(1)
                )));
            }
            if self.mode == Mode::Circular && (before > d || after > d) {
                return Err(OpError::call(format!(
                    "circular padding ({before}, {after}) of axis {axis} of {shown} must be at most its {d} values (it wraps around once): pad by at most {d}, or use `mode = replicate`"
                )));
            }
            let padded = d
                .checked_add(before)
                .and_then(|v| v.checked_add(after))
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
    /// (`edge` is PyTorch's `replicate`) and the constant.
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        if self.mode == Mode::Circular {
            return self.onnx_circular(cx);
        }
        let rank = cx.rank(0);
        let mut begins = vec![0i64; rank];
        let mut ends = vec![0i64; rank];
        for (&(b, a), axis) in self.pads.iter().zip((0..rank).rev()) {
            let cast =
                |v: usize| i64::try_from(v).map_err(|_| "a padding too large for ONNX".to_string());
            begins[axis] = cast(b)?;
            ends[axis] = cast(a)?;
        }
        begins.extend(ends);
        let x = cx.inputs[0].clone();
        let pads = cx.b.ints("pads", begins);
        let mut inputs = vec![x, pads];
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
