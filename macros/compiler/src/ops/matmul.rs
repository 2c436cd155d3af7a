//! `matmul(a, b)`: batched matrix products over equal leading dims, `[.., M, K] × [.., K, N] ->
//! [.., M, N]` (PyTorch's `torch.matmul` without broadcasting), as attention scores
//! `matmul(q, transpose(k, -2, -1))` are written.

use super::{
    product_of, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec,
    Operand, Reads,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct MatmulSpec;
/// `matmul`.
pub static MATMUL: MatmulSpec = MatmulSpec;

impl OpSpec for MatmulSpec {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn usage(&self) -> &'static str {
        "matmul(a, b)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        args.tensor(1);
        args.finish()?;
        Ok(Built::Kernel(Box::new(Matmul)))
    }
}

/// A batched matrix product.
pub struct Matmul;

/// `(batch, m, k, n)` of the product of `a` and `b`.
fn sizes(a: &Operand, b: &Operand) -> [TokenStream; 4] {
    let r = a.dims.len();
    [
        product_of(&a.dims[..r - 2]),
        a.dims[r - 2].clone(),
        a.dims[r - 1].clone(),
        b.dims[r - 1].clone(),
    ]
}

impl Kernel for Matmul {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let ins = cx.inputs.clone();
        cx.finish("MatMul", ins, vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("matmul", 0, inputs[0])?;
        require_float("matmul", 1, inputs[1])?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        let show = |s: &Shape| s.display(symbols).to_string();
        let dim = |d: Dim| d.display(symbols);
        for (i, s) in [a, b].into_iter().enumerate() {
            if s.rank() < 2 {
                return Err(OpError::input(
                    i,
                    format!(
                        "`matmul` multiplies matrices [.., rows, cols], but this is {} (rank {})",
                        show(s),
                        s.rank()
                    ),
                ));
            }
        }
        if a.rank() != b.rank() || a.0[..a.rank() - 2] != b.0[..b.rank() - 2] {
            return Err(OpError::input(
                1,
                format!(
                    "`matmul` pairs the matrices of equal leading dims, but the left is {} and this is {}: give both the same batch dims (kiln never broadcasts silently)",
                    show(a),
                    show(b)
                ),
            ));
        }
        let r = a.rank();
        let (k_left, k_right) = (a.0[r - 1], b.0[r - 2]);
        if k_left != k_right {
            let hint = if b.0[r - 1] == k_left {
                format!(
                    ": its last dim is {}: to multiply by its transpose write `matmul({{arg0}}, transpose({{arg1}}, -2, -1))`",
                    dim(k_left)
                )
            } else {
                String::new()
            };
            return Err(OpError::input(
                1,
                format!(
                    "`matmul` needs the left operand's columns to match the right operand's rows, but {} has {} columns and this {} has {} rows{hint}",
                    show(a),
                    dim(k_left),
                    show(b),
                    dim(k_right)
                ),
            ));
        }
        let mut shape = a.0.clone();
        shape[r - 1] = b.0[r - 1];
        Ok(ValueInfo {
            shape: Shape(shape),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true, true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (a, b) = (&cx.inputs[0], &cx.inputs[1]);
        let [batch, m, k, n] = sizes(a, b);
        let (ad, bd, c) = (&a.data, &b.data, &cx.output.data);
        quote! {
            ::kiln::kernels::matmul::batched_matmul(#batch, #m, #k, #n, #ad, false, #bd, false, #c, false);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (a, b) = (&cx.inputs[0], &cx.inputs[1]);
        let [batch, m, k, n] = sizes(a, b);
        let (ad, bd, dc) = (&a.data, &b.data, &cx.d_output);
        let target = |slot: usize| match &cx.d_inputs[slot] {
            Some(t) => {
                let (d, acc) = (&t.data, t.accumulate);
                (quote!(Some(#d)), acc)
            }
            None => (quote!(None), false),
        };
        let ((da, acc_a), (db, acc_b)) = (target(0), target(1));
        quote! {
            ::kiln::kernels::matmul::batched_matmul_backward(
                #batch, #m, #k, #n, #ad, false, #bd, false, #dc, #da, #acc_a, #db, #acc_b,
            );
        }
    }
}
