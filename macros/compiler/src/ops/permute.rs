//! `transpose(x, a, b)` (swap two axes) and `permute(x, (0, 2, 1, 3))` (reorder every axis),
//! as PyTorch's: the result is laid out anew (kiln values are always contiguous).

use super::{
    require_float, resolve_axis, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec,
    Reads,
};
use crate::ast;
use crate::ir::{Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;
use std::cell::RefCell;

/// The registry entry of one of the two.
pub struct PermuteSpec {
    transpose: bool,
}
/// `transpose`.
pub static TRANSPOSE: PermuteSpec = PermuteSpec { transpose: true };
/// `permute`.
pub static PERMUTE: PermuteSpec = PermuteSpec { transpose: false };

impl OpSpec for PermuteSpec {
    fn name(&self) -> &'static str {
        if self.transpose {
            "transpose"
        } else {
            "permute"
        }
    }
    fn usage(&self) -> &'static str {
        if self.transpose {
            "transpose(x, 1, 2)` or `transpose(x, -2, -1)"
        } else {
            "permute(x, (0, 2, 1, 3))"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        let order = if self.transpose {
            args.positional(3, 3)?;
            Order::Swap(args.axis(1)?, args.axis(2)?)
        } else {
            args.positional(2, 2)?;
            let ast::Expr::Tuple(items, _) = args.raw(1) else {
                return Err(syn::Error::new(
                    args.raw(1).span(),
                    "`permute` takes the new order of every axis as a tuple: `permute(x, (0, 2, 1, 3))`",
                ));
            };
            let mut axes = Vec::new();
            for item in items {
                match item {
                    ast::Expr::Int(v, s) => axes.push(
                        usize::try_from(*v)
                            .map_err(|_| syn::Error::new(*s, "this axis is too large"))?,
                    ),
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            "`permute` takes axes as integers counted from 0, as in `(0, 2, 1, 3)`",
                        ))
                    }
                }
            }
            Order::All(axes)
        };
        args.tensor(0);
        args.finish()?;
        Ok(Built::Kernel(Box::new(Permute {
            order,
            perm: RefCell::new(Vec::new()),
        })))
    }
}

enum Order {
    Swap(i64, i64),
    All(Vec<usize>),
}

/// A reordering of axes.
pub struct Permute {
    order: Order,
    /// Output axis `i` is input axis `perm[i]`, once the input's rank is known.
    perm: RefCell<Vec<usize>>,
}

impl Kernel for Permute {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let perm: Vec<i64> = self.perm.borrow().iter().map(|&p| p as i64).collect();
        let x = cx.inputs[0].clone();
        cx.finish(
            "Transpose",
            vec![x],
            vec![("perm", crate::onnx::Attr::Ints(perm))],
        );
        Ok(())
    }
    fn name(&self) -> &'static str {
        match self.order {
            Order::Swap(..) => "transpose",
            Order::All(_) => "permute",
        }
    }
    fn describe(&self) -> String {
        match &self.order {
            Order::Swap(a, b) => format!("{a}, {b}"),
            Order::All(p) => format!("{p:?}"),
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.name();
        require_float(op, 0, inputs[0])?;
        let x = &inputs[0].shape;
        let shown = x.display(symbols).to_string();
        let rank = x.rank();
        if rank > 6 {
            return Err(OpError::input(
                0,
                format!("`{op}` reorders values of rank 6 at most, but this is {shown}"),
            ));
        }
        let perm: Vec<usize> = match &self.order {
            Order::Swap(a, b) => {
                let (a, b) = (
                    resolve_axis(op, *a, rank, &shown)?,
                    resolve_axis(op, *b, rank, &shown)?,
                );
                let mut p: Vec<usize> = (0..rank).collect();
                p.swap(a, b);
                p
            }
            Order::All(p) => {
                let mut seen = vec![false; rank];
                let valid = p.len() == rank
                    && p.iter()
                        .all(|&a| a < rank && !std::mem::replace(&mut seen[a], true));
                if !valid {
                    return Err(OpError::call(format!(
                        "`permute` needs each axis of {shown} exactly once, a reordering of (0..{rank}), but got {p:?}"
                    )));
                }
                p.clone()
            }
        };
        let shape = perm.iter().map(|&a| x.0[a]).collect();
        *self.perm.borrow_mut() = perm;
        Ok(ValueInfo {
            shape: Shape(shape),
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
        let (xd, dims, y) = (&x.data, &x.dims, &cx.output.data);
        let perm = self.perm.borrow();
        let perm = perm.iter();
        quote! {
            ::kiln::kernels::permute::permute_forward(#xd, &[#(#dims),*], &[#(#perm),*], #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let dims = &cx.inputs[0].dims;
        let (dy, dxd, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        let perm = self.perm.borrow();
        let perm = perm.iter();
        quote! {
            ::kiln::kernels::permute::permute_backward(#dy, &[#(#dims),*], &[#(#perm),*], #dxd, #acc);
        }
    }
}
