//! `flatten(x)` (keeps the batch dim: `[B, C, H, W] -> [B, C*H*W]`) and `reshape(x, (B, 1, 8, 8))`.
//! Both copy: forward copies the values, backward copies the adjoint back.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `flatten`.
pub struct FlattenSpec;
/// `flatten`.
pub static FLATTEN: FlattenSpec = FlattenSpec;
/// The registry entry of `reshape`.
pub struct ReshapeSpec;
/// `reshape`.
pub static RESHAPE: ReshapeSpec = ReshapeSpec;

impl OpSpec for FlattenSpec {
    fn name(&self) -> &'static str {
        "flatten"
    }
    fn usage(&self) -> &'static str {
        "flatten(x)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        args.finish()?;
        Ok(Built::Kernel(Box::new(Reshape { target: None })))
    }
}

/// A dim of a `reshape` target as written.
#[derive(Clone)]
enum TargetDim {
    Fixed(usize),
    Symbol(String),
}

impl OpSpec for ReshapeSpec {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn usage(&self) -> &'static str {
        "reshape(x, (B, 1, 8, 8))"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        args.finish()?;
        let items: Vec<&ast::Expr> = match args.raw(1) {
            ast::Expr::Tuple(items, _) => items.iter().collect(),
            single => vec![single],
        };
        let mut target = Vec::new();
        for item in items {
            target.push(match item {
                ast::Expr::Int(v, s) if *v >= 1 => TargetDim::Fixed(
                    usize::try_from(*v).map_err(|_| syn::Error::new(*s, "dimension too large"))?,
                ),
                ast::Expr::Var(name) => TargetDim::Symbol(name.to_string()),
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "a dimension of the new shape is a positive integer or a symbolic name like `B`, as in `reshape(x, (B, 1, 8, 8))`",
                    ))
                }
            });
        }
        Ok(Built::Kernel(Box::new(Reshape {
            target: Some(target),
        })))
    }
}

/// A copy into a new shape with the same elements.
pub struct Reshape {
    /// `None` for `flatten`.
    target: Option<Vec<TargetDim>>,
}

/// The fixed product and the sorted symbols of a shape.
fn size_of(shape: &Shape) -> (usize, Vec<usize>) {
    let mut fixed = 1;
    let mut syms = Vec::new();
    for d in &shape.0 {
        match d {
            // Saturating: an overflowing target cannot equal the (checked) input size.
            Dim::Fixed(n) => fixed = n.saturating_mul(fixed),
            Dim::Symbol(s) => syms.push(*s),
            // A computed size has no name a target could give: it matches nothing (`infer`
            // refuses such inputs first, with a message of its own).
            Dim::Affine { .. } => syms.push(usize::MAX),
        }
    }
    syms.sort_unstable();
    (fixed, syms)
}

impl Kernel for Reshape {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let target = crate::onnx::reshape_target(
            &cx.input_infos[0].shape,
            &cx.output_info.shape,
            cx.symbols,
        )?;
        let shape = cx.b.ints("shape", target);
        let x = cx.inputs[0].clone();
        cx.finish("Reshape", vec![x, shape], vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        if self.target.is_some() {
            "reshape"
        } else {
            "flatten"
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float(self.name(), 0, inputs[0])?;
        let shape = &inputs[0].shape;
        let shown = shape.display(symbols);
        let out = match &self.target {
            None => {
                if shape.rank() < 2 {
                    return Err(OpError::input(
                        0,
                        format!("`flatten` keeps the batch dim and joins the rest, but {shown} has nothing after the batch dim"),
                    ));
                }
                let mut features = 1;
                for d in &shape.0[1..] {
                    match d {
                        Dim::Fixed(n) => features *= n,
                        symbolic => {
                            return Err(OpError::input(
                                0,
                                format!(
                                    "`flatten` needs fixed dims after the batch dim, but {shown} has the symbolic `{}` there: the number of features must be known at compile time",
                                    symbolic.display(symbols)
                                ),
                            ))
                        }
                    }
                }
                Shape(vec![shape.0[0], Dim::Fixed(features)])
            }
            Some(target) => {
                if let Some(computed) = shape.0.iter().find(|d| matches!(d, Dim::Affine { .. })) {
                    return Err(OpError::input(
                        0,
                        format!(
                            "`reshape` of {shown}: its size `{}` is computed from a symbolic one, and a new shape can only name declared sizes; reduce that axis first (`mean(x, axis = (2, 3))`, `adaptive_avg_pool2d(x, 1)`)",
                            computed.display(symbols)
                        ),
                    ));
                }
                let mut dims = Vec::new();
                for t in target {
                    dims.push(match t {
                        TargetDim::Fixed(n) => Dim::Fixed(*n),
                        TargetDim::Symbol(name) => match symbols.iter().position(|s| s == name) {
                            Some(i) => Dim::Symbol(i),
                            None => {
                                return Err(OpError::call(format!(
                                    "unknown dimension `{name}` in the new shape: symbolic dims come from the inputs' declarations ({})",
                                    symbols.join(", ")
                                )))
                            }
                        },
                    });
                }
                let new = Shape(dims);
                let (from, to) = (size_of(shape), size_of(&new));
                if from != to {
                    let detail = if from.1 == to.1 {
                        format!(
                            "{} elements become {}: choose dims whose product is {}",
                            from.0, to.0, from.0
                        )
                    } else {
                        "the symbolic dims differ: keep the same symbolic dims (usually the batch `B`) and reshape the rest".to_string()
                    };
                    return Err(OpError::call(format!(
                        "cannot reshape {shown} into {}: {detail}",
                        new.display(symbols)
                    )));
                }
                new
            }
        };
        Ok(ValueInfo {
            shape: out,
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
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        quote! { ::kiln::kernels::shape_ops::copy_into(#x, #y); }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (dy, d, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        quote! { ::kiln::kernels::shape_ops::add_into(#dy, #d, #acc); }
    }
}
