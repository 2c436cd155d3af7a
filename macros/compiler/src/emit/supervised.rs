//! `impl kiln::Supervised` for models with one input, one target and a loss, so that the
//! generic training loop (`kiln::train::fit`) can drive them with dynamic-rank batches.

use super::Ctx;
use crate::ir::Shape;
use proc_macro2::TokenStream;
use quote::quote;

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    let inputs: Vec<_> = g.inputs.iter().filter(|d| !d.is_target).collect();
    let targets: Vec<_> = g.inputs.iter().filter(|d| d.is_target).collect();
    // The training loop feeds float features and one label per sample (`TargetView::Labels`
    // is one-dimensional); a model reading token ids or labelling every position is driven
    // by hand.
    if inputs.iter().any(|d| d.ints.is_some())
        || targets
            .iter()
            .any(|d| d.ints.is_some() && d.dims.len() != 1)
    {
        return TokenStream::new();
    }
    let (Some(_), [input], [target], Some(_)) = (
        g.loss,
        inputs.as_slice(),
        targets.as_slice(),
        g.outputs.first(),
    ) else {
        return TokenStream::new();
    };
    let (name, ws) = (cx.name, &cx.workspace_name);
    let (x, xs) = (&input.name, input.name.to_string());
    let (y, ys) = (&target.name, target.name.to_string());
    let x_ix = cx.ix(&Shape(input.dims.clone()));
    let rank = input.dims.len();
    let first_name = &g.outputs[0].1;
    let classes = match target.ints {
        Some(crate::ir::ValueKind::Labels { classes }) => Some(classes),
        _ => None,
    };
    let (classes, take_target) = match classes {
        Some(c) => (
            quote!(Some(#c)),
            quote! {
                let #y = match #y {
                    ::kiln::TargetView::Labels(labels) => labels,
                    ::kiln::TargetView::Values(_) => return Err(::kiln::shape::wrong_target_kind(#ys, true)),
                };
            },
        ),
        None => {
            let y_ix = cx.ix(&Shape(target.dims.clone()));
            (
                quote!(None),
                quote! {
                    let #y = match #y {
                        ::kiln::TargetView::Values(values) => ::kiln::shape::fixed_rank::<F, #y_ix>("target", #ys, values)?,
                        ::kiln::TargetView::Labels(_) => return Err(::kiln::shape::wrong_target_kind(#ys, false)),
                    };
                },
            )
        }
    };
    let reseed = if cx.needs_rng() {
        quote! {
            fn reseed(ws: &mut Self::Workspace, seed: u64) {
                ws.seed(seed);
            }
        }
    } else {
        quote!()
    };
    quote! {
        impl<F: ::kiln::Float> ::kiln::Supervised<F> for #name<F> {
            type Workspace = #ws<F>;
            const INPUT_RANK: usize = #rank;
            const CLASSES: ::core::option::Option<usize> = #classes;

            fn train_batch(
                &mut self,
                #x: ::kiln::ndarray::ArrayViewD<'_, F>,
                #y: ::kiln::TargetView<'_, F>,
                ws: &mut Self::Workspace,
                grads: &mut Self::Grads,
            ) -> ::kiln::Result<F> {
                let #x = ::kiln::shape::fixed_rank::<F, #x_ix>("input", #xs, #x)?;
                #take_target
                self.loss_and_grad(#x, #y, ws, grads)
            }

            fn train_batch_notify(
                &mut self,
                #x: ::kiln::ndarray::ArrayViewD<'_, F>,
                #y: ::kiln::TargetView<'_, F>,
                ws: &mut Self::Workspace,
                grads: &mut Self::Grads,
                sink: &mut dyn ::kiln::GradSink<F>,
            ) -> ::kiln::Result<F> {
                let #x = ::kiln::shape::fixed_rank::<F, #x_ix>("input", #xs, #x)?;
                #take_target
                self.loss_and_grad_notify(#x, #y, ws, grads, Some(sink))
            }

            fn eval_batch(
                &self,
                #x: ::kiln::ndarray::ArrayViewD<'_, F>,
                #y: ::kiln::TargetView<'_, F>,
                ws: &mut Self::Workspace,
            ) -> ::kiln::Result<F> {
                let #x = ::kiln::shape::fixed_rank::<F, #x_ix>("input", #xs, #x)?;
                #take_target
                self.loss(#x, #y, ws)
            }

            #reseed

            fn check_finite(ws: &mut Self::Workspace, on: bool) {
                ws.check_finite(on);
            }

            fn freeze(ws: &mut Self::Workspace, frozen: &dyn Fn(&str) -> bool) {
                ws.freeze(frozen);
            }

            fn last_output(ws: &Self::Workspace) -> ::kiln::Result<::kiln::ndarray::ArrayViewD<'_, F>> {
                Ok(ws.#first_name()?.into_dyn())
            }
        }
    }
}
