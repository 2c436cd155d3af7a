//! `concat(a, b, ..., axis = k)`: joins tensors along an axis (the last one by default, as
//! Keras' `Concatenate`). All other dims must agree. Along a symbolic axis the joined size is
//! the sum of the parts' formulas when that is one formula of one symbol (`T` and `T - 1`
//! give `2 * T - 1`, `T` and 4 give `T + 4`); parts of two different symbols (`T` and `S`)
//! cannot be joined, as no formula of one symbol gives their sum.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct ConcatSpec;
/// `concat`.
pub static CONCAT: ConcatSpec = ConcatSpec;

impl OpSpec for ConcatSpec {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn usage(&self) -> &'static str {
        "concat(a, b, axis = 1)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, usize::MAX)?;
        for i in 0..args.count() {
            args.tensor(i);
        }
        let axis = match args.option_expr("axis") {
            None => None,
            Some(crate::ast::Expr::Int(v, s)) => {
                Some(usize::try_from(*v).map_err(|_| syn::Error::new(*s, "axis too large"))?)
            }
            Some(other) => {
                return Err(syn::Error::new(
                    other.span(),
                    "`axis` is a non-negative integer (0 is the batch axis), as in `axis = 1`",
                ))
            }
        };
        args.finish()?;
        Ok(Built::Kernel(Box::new(Concat { axis })))
    }
}

/// Concatenation along `axis` (`None`: the last).
pub struct Concat {
    axis: Option<usize>,
}

impl Concat {
    fn axis_of(&self, rank: usize) -> usize {
        self.axis.unwrap_or(rank.saturating_sub(1))
    }

    /// Tokens for `outer` and each input's `inner` size.
    fn sizes(&self, dims: &[Vec<TokenStream>]) -> (TokenStream, Vec<TokenStream>) {
        let axis = self.axis_of(dims[0].len());
        let product = super::product_of;
        let outer = product(&dims[0][..axis]);
        // Parenthesised: inside an array literal, `a * b` spanning the macro's lines reads to
        // clippy like a missing comma.
        let inners = dims
            .iter()
            .map(|d| {
                let p = product(&d[axis..]);
                quote!((#p))
            })
            .collect();
        (outer, inners)
    }
}

/// Why `other` cannot join `first` along `axis`, and what would make it fit: a reshape when
/// the ranks differ, a resize or a change upstream for feature maps of different sizes.
fn mismatch(axis: usize, first: &Shape, other: &Shape, symbols: &[String]) -> String {
    let (a, b) = (first.display(symbols), other.display(symbols));
    let head = format!("`concat` along axis {axis} needs every other dim equal, but {a} and {b}");
    if other.rank() != first.rank() {
        return format!(
            "{head} differ in rank ({} and {}): `reshape` or `flatten` one of them so that both have the same rank",
            first.rank(),
            other.rank()
        );
    }
    let dim = |d: Dim| d.display(symbols);
    let differing: Vec<usize> = (0..first.rank())
        .filter(|&d| d != axis && first.0[d] != other.0[d])
        .collect();
    // NCHW feature maps joined along the channels (or the batch) whose height or width
    // differ, as in a skip connection after an odd-sized pooling. Reshaping would scramble
    // the pixels: the fix is a resize, or layers upstream that give both the same size.
    if first.rank() == 4 && axis <= 1 && differing.iter().all(|&d| d >= 2) {
        if let (Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(oh), Dim::Fixed(ow)) =
            (first.0[2], first.0[3], other.0[2], other.0[3])
        {
            let resize = if oh > 0
                && ow > 0
                && h.is_multiple_of(oh)
                && w.is_multiple_of(ow)
                && h / oh == w / ow
            {
                format!("`upsample(.., scale = {})`", h / oh)
            } else if h > 0
                && w > 0
                && oh.is_multiple_of(h)
                && ow.is_multiple_of(w)
                && oh / h == ow / w
            {
                let k = oh / h;
                format!("`max_pool2d(.., {k})` or `avg_pool2d(.., {k})`")
            } else if oh >= h && ow >= w {
                // Larger but not by a whole factor: the original U-Net's crop of the skip
                // connection, centred.
                let (top, left) = ((oh - h) / 2, (ow - w) / 2);
                let crop = |v: usize| {
                    if v == 0 {
                        "0".to_string()
                    } else {
                        format!("-{v}")
                    }
                };
                format!(
                    "a centred crop, `pad(.., ({}, {}, {}, {}))` (negative pads crop, as in `F.pad`), or `upsample(.., size = ({h}, {w}))`",
                    crop(left),
                    crop(ow - w - left),
                    crop(top),
                    crop(oh - h - top)
                )
            } else {
                format!("`upsample(.., size = ({h}, {w}))`")
            };
            let which = match (h != oh, w != ow) {
                (true, false) => "height",
                (false, true) => "width",
                _ => "height and width",
            };
            return format!(
                "{head} differ in {which} ({h}x{w} against {oh}x{ow}): bring this one to {h}x{w} with {resize}, or change a kernel size, stride or padding upstream so that both come out {h}x{w}"
            );
        }
    }
    let at: Vec<String> = differing
        .iter()
        .map(|&d| format!("axis {d} ({} against {})", dim(first.0[d]), dim(other.0[d])))
        .collect();
    format!(
        "{head} differ at {}: only axis {axis} may differ",
        at.join(" and ")
    )
}

impl Kernel for Concat {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let axis = self.axis.map_or(-1, |a| a as i64);
        let ins = cx.inputs.clone();
        cx.finish("Concat", ins, vec![("axis", crate::onnx::Attr::Int(axis))]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "concat"
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        for (i, info) in inputs.iter().enumerate() {
            require_float("concat", i, info)?;
        }
        let first = &inputs[0].shape;
        let rank = first.rank();
        let axis = self.axis_of(rank);
        if rank == 0 || axis >= rank {
            return Err(OpError::input(
                0,
                format!(
                    "`concat` along axis {axis}, but {} has rank {rank}",
                    first.display(symbols)
                ),
            ));
        }
        let mut total = Dim::Fixed(0);
        for (i, info) in inputs.iter().enumerate() {
            let s = &info.shape;
            let same_elsewhere =
                s.rank() == rank && (0..rank).all(|d| d == axis || s.0[d] == first.0[d]);
            if !same_elsewhere {
                return Err(OpError::input(i, mismatch(axis, first, s, symbols)));
            }
            let part = s.0[axis];
            total = match total.sum(part) {
                Some(t) => t,
                None if total.is_fixed() && part.is_fixed() => {
                    return Err(OpError::input(
                        i,
                        format!("`concat` along axis {axis} would give more elements than a `usize` can count: is a size mistyped?"),
                    ))
                }
                None => {
                    let before = total.display(symbols);
                    return Err(OpError::input(
                        i,
                        format!("`concat` along axis {axis} of sizes of two symbols, `{before}` and `{}`: a size in kiln is a formula of one symbol, and their sum is not; if the two are always equally long, declare them with the same symbol", part.display(symbols)),
                    ));
                }
            };
        }
        let mut out = first.0.clone();
        out[axis] = total;
        Ok(ValueInfo {
            shape: Shape(out),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false; 0],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let dims: Vec<Vec<TokenStream>> = cx.inputs.iter().map(|o| o.dims.clone()).collect();
        let (outer, inners) = self.sizes(&dims);
        let xs = cx.inputs.iter().map(|o| &o.data);
        let y = &cx.output.data;
        quote! {
            ::kiln::kernels::shape_ops::concat_forward(&[#(#xs),*], #outer, &[#(#inners),*], #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let dims: Vec<Vec<TokenStream>> = cx.inputs.iter().map(|o| o.dims.clone()).collect();
        let (outer, inners) = self.sizes(&dims);
        let dy = &cx.d_output;
        let mut code = TokenStream::new();
        for (index, target) in cx.d_inputs.iter().enumerate() {
            if let Some(t) = target {
                let (d, acc) = (&t.data, t.accumulate);
                code.extend(quote! {
                    ::kiln::kernels::shape_ops::concat_backward(#dy, #outer, &[#(#inners),*], #index, #d, #acc);
                });
            }
        }
        code
    }
}
