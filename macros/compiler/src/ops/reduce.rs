//! Reductions: `sum(x)` and `mean(x)` of a whole tensor to a scalar; `sum(x, axis = k)`,
//! `mean(x, axis = k)` and `max(x, axis = k)` along one axis (PyTorch's `dim`, negative from
//! the back), which drop that axis; `sum` and `mean` over several adjacent axes
//! (`mean(x, axis = (2, 3))`, PyTorch's `dim=(2, 3)`), which the kernels see as one axis of
//! their product; and `mean(x, axis = 1, lengths = len)`, the mean over each sequence's real
//! positions of a padded batch `[B, T, ..]`.

use super::{
    product_of, require_float, resolve_axis, BackwardCx, Built, CallArgs, ForwardCx, Kernel,
    OpError, OpSpec, Operand, Reads, ScratchLen, ScratchSpec,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Sum,
    Mean,
    Max,
}

/// The registry entry of one reduction.
pub struct ReduceSpec {
    how: How,
}
/// `sum`.
pub static SUM: ReduceSpec = ReduceSpec { how: How::Sum };
/// `mean`.
pub static MEAN: ReduceSpec = ReduceSpec { how: How::Mean };
/// `max`.
pub static MAX: ReduceSpec = ReduceSpec { how: How::Max };

fn name(how: How) -> &'static str {
    match how {
        How::Sum => "sum",
        How::Mean => "mean",
        How::Max => "max",
    }
}

impl OpSpec for ReduceSpec {
    fn name(&self) -> &'static str {
        name(self.how)
    }
    fn usage(&self) -> &'static str {
        match self.how {
            How::Sum => "sum(x)`, `sum(x, axis = 1)` or `sum(x, axis = (2, 3))",
            How::Mean => {
                "mean(x)`, `mean(x, axis = 1)`, `mean(x, axis = (2, 3))` or `mean(x, axis = 1, lengths = len)"
            }
            How::Max => "max(x, axis = 1)",
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let axis_span = args.option_expr("axis").map(ast::Expr::span);
        let axes = match args.option_expr("axis") {
            Some(ast::Expr::Tuple(items, span)) => Some(self.axes(items, *span)?),
            _ => args.opt_axis("axis")?.map(|a| vec![a]),
        };
        let lengths = if self.how == How::Mean {
            args.tensor_option("lengths").is_some()
        } else {
            false
        };
        args.finish()?;
        if lengths && axes.as_ref().is_some_and(|a| a.len() > 1) {
            return Err(syn::Error::new(
                args.span(),
                "`mean` with `lengths` averages over the time axis alone: write `axis = 1`",
            ));
        }
        if axes.is_none() && (self.how == How::Max || lengths) {
            return Err(syn::Error::new(
                args.span(),
                format!(
                    "`{}` here needs the axis to reduce: write `{}`",
                    name(self.how),
                    self.usage()
                ),
            ));
        }
        Ok(Built::Kernel(Box::new(Reduce {
            how: self.how,
            axes,
            axis_span,
            lengths,
            resolved: std::cell::Cell::new((0, 1)),
        })))
    }
}

impl ReduceSpec {
    /// The axes of `axis = (a, b, ..)`, as written (negative ones count from the back).
    fn axes(&self, items: &[ast::Expr], span: proc_macro2::Span) -> syn::Result<Vec<i64>> {
        let op = name(self.how);
        if self.how == How::Max {
            return Err(syn::Error::new(
                span,
                "`max` reduces one axis at a time (its gradient goes to the first maximum along it): write `max(max(x, axis = 3), axis = 2)`",
            ));
        }
        if items.is_empty() {
            return Err(syn::Error::new(
                span,
                format!("`axis = ()` names no axis: leave `axis` out to reduce the whole tensor with `{op}(x)`"),
            ));
        }
        items
            .iter()
            .map(|item| match item {
                ast::Expr::Int(v, s) => {
                    i64::try_from(*v).map_err(|_| syn::Error::new(*s, "this axis is too large"))
                }
                // `-1` reaches the ops as a float literal.
                ast::Expr::Float(v, _) if v.fract() == 0.0 && *v < 0.0 && *v > -64.0 => {
                    Ok(*v as i64)
                }
                other => Err(syn::Error::new(
                    other.span(),
                    "`axis` takes integers, as in `axis = (2, 3)` or `axis = (-2, -1)`",
                )),
            })
            .collect()
    }
}

/// A reduction, of the whole tensor or along one axis (or several adjacent ones).
pub struct Reduce {
    how: How,
    /// The axes as written; `None` reduces the whole tensor.
    axes: Option<Vec<i64>>,
    /// Where the axes are written, for the errors about them.
    axis_span: Option<proc_macro2::Span>,
    /// `mean(x, axis = 1, lengths = len)`: only each sequence's real positions count.
    lengths: bool,
    /// The first reduced axis counted from the front and how many follow it, once the input's
    /// rank is known.
    resolved: std::cell::Cell<(usize, usize)>,
}

impl Reduce {
    /// `(outer, n, inner)`: the input as `[outer, n, inner]` around the reduced axes (their
    /// product is `n`).
    fn sizes(&self, x: &Operand) -> (TokenStream, TokenStream, TokenStream) {
        let (a, count) = self.resolved.get();
        (
            product_of(&x.dims[..a]),
            product_of(&x.dims[a..a + count]),
            product_of(&x.dims[a + count..]),
        )
    }

    /// The reduced axes counted from the front, in order.
    fn resolved_axes(&self) -> Vec<i64> {
        let (a, count) = self.resolved.get();
        (a..a + count).map(|a| a as i64).collect()
    }
}

impl Kernel for Reduce {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints};
        let x = cx.inputs[0].clone();
        let Some(_) = self.axes else {
            // The whole tensor to a scalar: no axes given reduces them all.
            let op = if self.how == How::Sum {
                "ReduceSum"
            } else {
                "ReduceMean"
            };
            cx.finish(op, vec![x], vec![("keepdims", Int(0))]);
            return Ok(());
        };
        let axes = self.resolved_axes();
        if self.lengths {
            // The mean over each sequence's first `len` positions of axis 1: mask, sum, divide.
            let lengths = cx.inputs[1].clone();
            let rank = cx.rank(0) as i64;
            let shape = cx.op("Shape", vec![x.clone()], "shape", vec![]);
            let one = cx.b.int_scalar(1);
            let t = cx.op("Gather", vec![shape, one], "len", vec![("axis", Int(0))]);
            let (zero, step) = (cx.b.int_scalar(0), cx.b.int_scalar(1));
            let positions = cx.op("Range", vec![zero, t, step], "positions", vec![]);
            let axis1 = cx.b.ints("axes", vec![1]);
            let lens = cx.op("Unsqueeze", vec![lengths, axis1], "lengths", vec![]);
            let keep = cx.op("Less", vec![positions, lens.clone()], "keep", vec![]);
            let keep = cx.op("Cast", vec![keep], "keep", vec![("to", Int(1))]);
            let lens = cx.op("Cast", vec![lens], "count", vec![("to", Int(1))]);
            let (keep, lens) = if rank > 2 {
                let rest = cx.b.ints("axes", (2..rank).collect());
                let keep = cx.op("Unsqueeze", vec![keep, rest], "keep", vec![]);
                let lens = if rank > 3 {
                    let rest1 = cx.b.ints("axes", (2..rank - 1).collect());
                    cx.op("Unsqueeze", vec![lens, rest1], "count", vec![])
                } else {
                    lens
                };
                (keep, lens)
            } else {
                let flat = cx.b.ints("shape", vec![-1]);
                let lens = cx.op("Reshape", vec![lens, flat], "count", vec![]);
                (keep, lens)
            };
            let masked = cx.op("Mul", vec![x, keep], "masked", vec![]);
            let axes = cx.b.ints("axes", vec![1]);
            let sum = cx.op(
                "ReduceSum",
                vec![masked, axes],
                "sum",
                vec![("keepdims", Int(0))],
            );
            cx.finish("Div", vec![sum, lens], vec![]);
            return Ok(());
        }
        match self.how {
            // Opset 13+: ReduceSum takes its axes as an input.
            How::Sum => {
                let axes = cx.b.ints("axes", axes);
                cx.finish("ReduceSum", vec![x, axes], vec![("keepdims", Int(0))]);
            }
            // Until opset 18 the other reductions take them as an attribute.
            How::Mean | How::Max => {
                let op = if self.how == How::Mean {
                    "ReduceMean"
                } else {
                    "ReduceMax"
                };
                cx.finish(
                    op,
                    vec![x],
                    vec![("axes", Ints(axes)), ("keepdims", Int(0))],
                );
            }
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        name(self.how)
    }
    fn describe(&self) -> String {
        let axes = match self.axes.as_deref() {
            None => return String::new(),
            Some([a]) => format!("axis={a}"),
            Some(axes) => format!(
                "axis=({})",
                axes.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if self.lengths {
            format!("{axes}, lengths")
        } else {
            axes
        }
    }
    fn differentiable(&self, input: usize) -> bool {
        input == 0
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.name();
        require_float(op, 0, inputs[0])?;
        let Some(axes) = &self.axes else {
            return Ok(ValueInfo {
                shape: Shape(vec![]),
                kind: ValueKind::Float,
            });
        };
        let x = &inputs[0].shape;
        let shown = x.display(symbols).to_string();
        let mut resolved = axes
            .iter()
            .map(|&axis| resolve_axis(op, axis, x.rank(), &shown))
            .collect::<Result<Vec<_>, _>>()?;
        resolved.sort_unstable();
        let at_axes = |message: String| match self.axis_span {
            Some(span) => OpError {
                spanned: Some(syn::Error::new(span, &message)),
                ..OpError::call(message)
            },
            None => OpError::call(message),
        };
        if let Some(w) = resolved.windows(2).find(|w| w[0] == w[1]) {
            return Err(at_axes(format!(
                "`{op}` is given axis {} twice (of {shown}): name each axis once",
                w[0]
            )));
        }
        let (a, count) = (resolved[0], resolved.len());
        if resolved[count - 1] - a + 1 != count {
            let listed: Vec<String> = resolved.iter().map(usize::to_string).collect();
            return Err(at_axes(format!(
                "`{op}` over several axes needs them next to each other, but axes ({}) of {shown} are not: reduce one axis at a time, as in `{op}({op}(x, axis = {}), axis = {})`, or `permute` first",
                listed.join(", "),
                resolved[count - 1],
                a
            )));
        }
        self.resolved.set((a, count));
        if self.lengths {
            if a != 1 || x.rank() < 2 {
                return Err(OpError::call(format!(
                    "`mean` with `lengths` averages over the time axis of [batch, time, ..]: write `axis = 1` (this is {shown})"
                )));
            }
            let l = inputs[1];
            let batch = Shape(vec![x.0[0]]);
            let dim = |d: Dim| d.display(symbols);
            match l.kind {
                ValueKind::Lengths { max } if l.shape == batch && max == x.0[1] => {}
                // Declared over another dim than the time axis: name both, as the fix is to
                // swap one for the other.
                ValueKind::Lengths { max } if l.shape == batch => {
                    return Err(OpError::input(
                        1,
                        format!(
                            "these lengths measure {} positions, but the sequences {shown} have {}: declare them as `lengths {}`",
                            dim(max),
                            dim(x.0[1]),
                            dim(x.0[1])
                        ),
                    ))
                }
                _ => {
                    return Err(OpError::input(
                        1,
                        format!(
                            "`lengths` takes one length per sequence of {shown}: an input declared `len: {} lengths {};`, but this is {} holding {}",
                            batch.display(symbols),
                            dim(x.0[1]),
                            l.shape.display(symbols),
                            l.kind.describe()
                        ),
                    ))
                }
            }
        }
        let mut shape = x.0.clone();
        shape.drain(a..a + count);
        Ok(ValueInfo {
            shape: Shape(shape),
            kind: ValueKind::Float,
        })
    }
    fn scratch(&self, _inputs: &[&ValueInfo], output: &ValueInfo) -> Vec<ScratchSpec> {
        if self.how != How::Max {
            return Vec::new();
        }
        // The position of each maximum, for the backward pass.
        vec![ScratchSpec {
            suffix: "argmax",
            len: ScratchLen::Shape(output.shape.clone()),
        }]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false, true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let xd = &x.data;
        if self.axes.is_none() {
            let y = &cx.output.first;
            let f = if self.how == How::Mean {
                quote!(mean)
            } else {
                quote!(sum)
            };
            return quote! { #y = ::kiln::kernels::reduce::#f(#xd); };
        }
        let y = &cx.output.data;
        let (outer, n, inner) = self.sizes(x);
        match self.how {
            How::Mean if self.lengths => {
                let l = &cx.inputs[1].data;
                quote! { ::kiln::kernels::axis::masked_mean_forward(#xd, #outer, #n, #inner, #l, #y); }
            }
            How::Sum => {
                quote! { ::kiln::kernels::axis::sum_axis_forward(#xd, #outer, #n, #inner, #y); }
            }
            How::Mean => {
                quote! { ::kiln::kernels::axis::mean_axis_forward(#xd, #outer, #n, #inner, #y); }
            }
            How::Max => {
                let arg = &cx.scratch[0];
                quote! { ::kiln::kernels::axis::max_axis_forward(#xd, #outer, #n, #inner, #y, #arg); }
            }
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (dxd, acc) = (&dx.data, dx.accumulate);
        let x = &cx.inputs[0];
        if self.axes.is_none() {
            let (dy, len) = (&cx.d_output_first, &x.len);
            let value = if self.how == How::Mean {
                quote!(#dy / F::from_usize(#len))
            } else {
                quote!(#dy)
            };
            return quote! { ::kiln::kernels::reduce::fill_backward(#dxd, #value, #acc); };
        }
        let dy = &cx.d_output;
        let (outer, n, inner) = self.sizes(x);
        match self.how {
            How::Mean if self.lengths => {
                let l = &cx.inputs[1].data;
                quote! { ::kiln::kernels::axis::masked_mean_backward(#dy, #outer, #n, #inner, #l, #dxd, #acc); }
            }
            How::Sum => {
                quote! { ::kiln::kernels::axis::sum_axis_backward(#dy, #outer, #n, #inner, #dxd, #acc); }
            }
            How::Mean => {
                quote! { ::kiln::kernels::axis::mean_axis_backward(#dy, #outer, #n, #inner, #dxd, #acc); }
            }
            How::Max => {
                let arg = &cx.scratch[0];
                quote! { ::kiln::kernels::axis::max_axis_backward(#dy, #arg, #outer, #n, #inner, #dxd, #acc); }
            }
        }
    }
}
