//! `upsample(x, scale = 2, mode = nearest | bilinear)` or `upsample(x, size = (h, w), ...)`:
//! PyTorch's `nn.Upsample` / `F.interpolate` on NCHW images, bilinear with `align_corners`
//! false (the default) or `align_corners = true`. The mode defaults to `nearest`, as in
//! PyTorch; scales are integers (or a pair), for which PyTorch's index arithmetic and the
//! output size agree exactly. A symbolic height or width is scaled as a formula (`H` by 2 is
//! `2 * H`); a `size` is fixed whatever the input's.

use super::conv::spatial_input;
use super::{BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `upsample`.
pub struct UpsampleSpec;
/// `upsample`.
pub static UPSAMPLE: UpsampleSpec = UpsampleSpec;

/// How the output size is given.
#[derive(Clone, Copy)]
enum Target {
    /// Multiply the input's height and width.
    Scale((usize, usize)),
    /// A fixed `(height, width)`.
    Size((usize, usize)),
}

impl OpSpec for UpsampleSpec {
    fn name(&self) -> &'static str {
        "upsample"
    }
    fn usage(&self) -> &'static str {
        "upsample(x, scale = 2, mode = bilinear)`, `upsample(x, size = (h, w))` or `upsample(x, scale = 2, mode = bilinear, align_corners = true)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let scale = args.opt_pair("scale", 1)?;
        let size = args.opt_pair("size", 1)?;
        let bilinear = match args.option_expr("mode") {
            None => false,
            Some(ast::Expr::Var(mode)) if mode == "nearest" => false,
            Some(ast::Expr::Var(mode)) if mode == "bilinear" => true,
            Some(other) => {
                return Err(syn::Error::new(
                    other.span(),
                    "`mode` is `nearest` or `bilinear`, as in `mode = bilinear`",
                ))
            }
        };
        let align_span = args.option_expr("align_corners").map(ast::Expr::span);
        let align_corners = args.opt_bool("align_corners", false)?;
        args.finish()?;
        if let (Some(span), false) = (align_span, bilinear) {
            return Err(syn::Error::new(
                span,
                "`align_corners` applies to `mode = bilinear` only (PyTorch refuses it for `nearest` too)",
            ));
        }
        let target = match (scale, size) {
            (Some(s), None) => Target::Scale(s),
            (None, Some(s)) => Target::Size(s),
            (Some(_), Some(_)) => {
                return Err(syn::Error::new(
                    args.span(),
                    "give either `scale` or `size` to `upsample`, not both",
                ))
            }
            (None, None) => {
                return Err(syn::Error::new(
                    args.span(),
                    "`upsample` needs the output size: `scale = 2` (an integer factor) or `size = (h, w)`",
                ))
            }
        };
        Ok(Built::Kernel(Box::new(Upsample {
            target,
            bilinear,
            align_corners,
        })))
    }
}

/// A resize of NCHW images.
pub struct Upsample {
    target: Target,
    bilinear: bool,
    /// PyTorch's `align_corners=True` (bilinear only).
    align_corners: bool,
}

impl Upsample {
    /// The output height and width for an input's: scaled (a symbolic extent gives its
    /// multiple, `2 * H`), or the fixed `size`. `None` when a fixed one overflows.
    fn out_size(&self, (h, w): (Dim, Dim)) -> Option<(Dim, Dim)> {
        let scaled = |n: Dim, s: usize| match n {
            Dim::Fixed(n) => n.checked_mul(s).map(Dim::Fixed),
            symbolic => Some(symbolic.times(s)),
        };
        match self.target {
            Target::Scale((sh, sw)) => Some((scaled(h, sh)?, scaled(w, sw)?)),
            Target::Size((oh, ow)) => Some((Dim::Fixed(oh), Dim::Fixed(ow))),
        }
    }

    fn geometry_tokens(&self, x_dims: &[TokenStream], out_dims: &[TokenStream]) -> TokenStream {
        let geometry = super::geometry_ident();
        let (batch, c, h, w) = (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3]);
        let (oh, ow) = (&out_dims[2], &out_dims[3]);
        let align_corners = self.align_corners;
        quote! {
            let #geometry = ::kiln::kernels::upsample::Upsample2dGeometry {
                batch: #batch,
                channels: #c,
                in_h: #h,
                in_w: #w,
                out_h: #oh,
                out_w: #ow,
                align_corners: #align_corners,
            };
        }
    }

    fn kernel(&self, pass: &str) -> proc_macro2::Ident {
        let mode = if self.bilinear { "bilinear" } else { "nearest" };
        proc_macro2::Ident::new(
            &format!("upsample_{mode}2d_{pass}"),
            proc_macro2::Span::call_site(),
        )
    }
}

impl Kernel for Upsample {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Str;
        let x = cx.inputs[0].clone();
        // PyTorch's `nearest` takes floor(dst * in / out) (ONNX's asymmetric + floor); its
        // bilinear with align_corners = false is ONNX's half_pixel linear (edges clamped), and
        // with align_corners = true ONNX's align_corners.
        let mut attrs = vec![(
            "mode",
            Str(if self.bilinear { "linear" } else { "nearest" }.into()),
        )];
        if self.bilinear {
            let transform = if self.align_corners {
                "align_corners"
            } else {
                "half_pixel"
            };
            attrs.push(("coordinate_transformation_mode", Str(transform.into())));
        } else {
            attrs.push(("coordinate_transformation_mode", Str("asymmetric".into())));
            attrs.push(("nearest_mode", Str("floor".into())));
        }
        let roi = String::new();
        match self.target {
            Target::Scale((sh, sw)) => {
                let scales =
                    cx.b.floats("scales", vec![4], vec![1.0, 1.0, sh as f64, sw as f64]);
                cx.finish("Resize", vec![x, roi, scales], attrs);
            }
            Target::Size((oh, ow)) => {
                let shape = cx.op("Shape", vec![x.clone()], "shape", vec![]);
                let (start, end, axes) = (
                    cx.b.ints("start", vec![0]),
                    cx.b.ints("end", vec![2]),
                    cx.b.ints("axes", vec![0]),
                );
                let nc = cx.op(
                    "Slice",
                    vec![shape, start, end, axes],
                    "batch_channels",
                    vec![],
                );
                let hw = cx.b.ints("size", vec![oh as i64, ow as i64]);
                let sizes = cx.op(
                    "Concat",
                    vec![nc, hw],
                    "sizes",
                    vec![("axis", crate::onnx::Attr::Int(0))],
                );
                cx.finish("Resize", vec![x, roi, String::new(), sizes], attrs);
            }
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "upsample"
    }
    fn describe(&self) -> String {
        let mode = match (self.bilinear, self.align_corners) {
            (false, _) => "nearest",
            (true, false) => "bilinear",
            (true, true) => "bilinear, align_corners",
        };
        match self.target {
            Target::Scale(s) => format!("scale={s:?}, mode={mode}"),
            Target::Size(s) => format!("size={s:?}, mode={mode}"),
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, h, w) = spatial_input(self.name(), inputs[0], symbols)?;
        let (oh, ow) = self.out_size((h, w)).ok_or_else(|| {
            OpError::call(format!(
                "`upsample` of the {}x{} input {} gives a size too large to address: use a smaller `scale`",
                h.display(symbols),
                w.display(symbols),
                inputs[0].shape.display(symbols),
            ))
        })?;
        Ok(ValueInfo {
            shape: Shape(vec![inputs[0].shape.0[0], Dim::Fixed(c), oh, ow]),
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
        let setup = self.geometry_tokens(&cx.inputs[0].dims, &cx.output.dims);
        let (geometry, f) = (super::geometry_ident(), self.kernel("forward"));
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        quote! {
            #setup
            ::kiln::kernels::upsample::#f(#x, &#geometry, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let setup = self.geometry_tokens(&cx.inputs[0].dims, &cx.output.dims);
        let (geometry, f) = (super::geometry_ident(), self.kernel("backward"));
        let (dy, d, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        quote! {
            #setup
            ::kiln::kernels::upsample::#f(#dy, &#geometry, #d, #acc);
        }
    }
}
