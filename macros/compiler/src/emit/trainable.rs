//! `impl kiln::Trainable` for every model with a loss: the declared inputs and targets as a
//! constant table, and training and evaluation steps that take them from a slice of
//! `kiln::BatchArray`s (checked for kind and rank, each error naming the argument), so that
//! `Trainer::fit_batches` can drive models with token ids, lengths and per-position labels.

use super::api::ignored_label;
use super::Ctx;
use crate::ir::{Shape, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    if g.loss.is_none() || g.outputs.is_empty() {
        return TokenStream::new();
    }
    let (name, ws) = (cx.name, &cx.workspace_name);
    let specs = g.inputs.iter().map(|d| {
        let (n, target, rank) = (d.name.to_string(), d.is_target, d.dims.len());
        let kind = match d.ints {
            Some(ValueKind::Tokens { vocab }) => quote!(::kiln::ArgKind::Tokens { vocab: #vocab }),
            Some(ValueKind::Lengths { .. }) => quote!(::kiln::ArgKind::Lengths),
            Some(ValueKind::Labels { classes }) => {
                let ignored = match ignored_label(cx, d.node) {
                    Some(i) => quote!(::core::option::Option::Some(#i)),
                    None => quote!(::core::option::Option::None),
                };
                quote!(::kiln::ArgKind::Labels { classes: #classes, ignored: #ignored })
            }
            Some(ValueKind::Float) | None => quote!(::kiln::ArgKind::Float),
        };
        quote! {
            ::kiln::ArgSpec { name: #n, target: #target, kind: #kind, rank: #rank }
        }
    });
    // Each argument rebound to a typed view, in declaration order.
    let views = g.inputs.iter().enumerate().map(|(i, d)| {
        let n = &d.name;
        let ix = cx.ix(&Shape(d.dims.clone()));
        let take = if d.ints.is_some() {
            quote!(ids_arg)
        } else {
            quote!(float_arg)
        };
        quote! {
            let #n = ::kiln::trainable::#take::<F, #ix>(batch, Self::ARGS, #i)?;
        }
    });
    let views: Vec<TokenStream> = views.collect();
    let names: Vec<_> = g.inputs.iter().map(|d| &d.name).collect();
    let first_name = &g.outputs[0].1;
    let reseed = cx.needs_rng().then(|| {
        quote! {
            fn reseed(ws: &mut #ws<F>, seed: u64) {
                ws.seed(seed);
            }
        }
    });
    quote! {
        impl<F: ::kiln::Float> ::kiln::Trainable<F> for #name<F> {
            type Workspace = #ws<F>;
            const ARGS: &'static [::kiln::ArgSpec] = &[#(#specs),*];

            #[allow(non_snake_case)]
            fn train_step(
                &mut self,
                batch: &[::kiln::BatchArray<F>],
                ws: &mut #ws<F>,
                grads: &mut Self::Grads,
            ) -> ::kiln::Result<F> {
                #(#views)*
                self.loss_and_grad(#(#names,)* ws, grads)
            }

            #[allow(non_snake_case)]
            fn train_step_notify(
                &mut self,
                batch: &[::kiln::BatchArray<F>],
                ws: &mut #ws<F>,
                grads: &mut Self::Grads,
                sink: &mut dyn ::kiln::GradSink<F>,
            ) -> ::kiln::Result<F> {
                #(#views)*
                self.loss_and_grad_notify(#(#names,)* ws, grads, Some(sink))
            }

            #[allow(non_snake_case)]
            fn eval_step(
                &self,
                batch: &[::kiln::BatchArray<F>],
                ws: &mut #ws<F>,
            ) -> ::kiln::Result<F> {
                #(#views)*
                self.loss(#(#names,)* ws)
            }

            #reseed

            fn check_finite(ws: &mut #ws<F>, on: bool) {
                ws.check_finite(on);
            }

            fn freeze(ws: &mut #ws<F>, frozen: &dyn Fn(&str) -> bool) {
                ws.freeze(frozen);
            }

            fn last_output(ws: &#ws<F>) -> ::kiln::Result<::kiln::ndarray::ArrayViewD<'_, F>> {
                Ok(ws.#first_name()?.into_dyn())
            }
        }
    }
}
