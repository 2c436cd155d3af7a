//! The stand-in emitted beside `compile_error!` when a model does not compile.
//!
//! It declares the types and methods the model would have had (with the decoding cache and
//! `forward_cached` of a sequence model, whichever this one is), and implements `kiln::Model`,
//! `kiln::Supervised` and `kiln::Trainable` for it, so that user code driving the model (an optimizer,
//! `io::save`, `Trainer::fit`, `Trainer::fit_batches`) type-checks and the DSL error is the only one reported. The
//! trait methods behave as a model without parameters (nothing to visit, zero parameters, an
//! error from every batch) rather than panic; they never run, since the crate does not build.
//! The types stay inhabited: an uninhabited model would make rustc warn that the user's code
//! after `Model::new` is unreachable, burying the one real error again.

use crate::ast::{ModelDef, Stmt};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

pub(super) fn emit(input: &TokenStream) -> TokenStream {
    let Ok(def) = syn::parse2::<ModelDef>(input.clone()) else {
        return TokenStream::new();
    };
    let (vis, name, attrs) = (&def.vis, &def.name, &def.attrs);
    let grads = format_ident!("{}Grads", name);
    let ws = format_ident!("{}Workspace", name);
    let cache = format_ident!("{}Cache", name);
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    let mut outputs = Vec::new();
    let mut has_loss = false;
    let mut input_ranks = Vec::new();
    for stmt in &def.stmts {
        match stmt {
            Stmt::Input { name, dims, ints } => {
                input_ranks.push(dims.len());
                let ix = format_ident!("Ix{}", dims.len());
                inputs.push(if ints.is_some() {
                    quote!(#name: ::kiln::ndarray::ArrayView<'_, usize, ::kiln::ndarray::#ix>)
                } else {
                    quote!(#name: ::kiln::ndarray::ArrayView<'_, F, ::kiln::ndarray::#ix>)
                });
            }
            Stmt::Target {
                name,
                dims,
                classes,
            } => {
                let ix = format_ident!("Ix{}", dims.len());
                targets.push(if classes.is_some() {
                    quote!(#name: ::kiln::ndarray::ArrayView<'_, usize, ::kiln::ndarray::#ix>)
                } else {
                    quote!(#name: ::kiln::ndarray::ArrayView<'_, F, ::kiln::ndarray::#ix>)
                });
            }
            Stmt::Output { names } => outputs.extend(names.iter().cloned()),
            Stmt::Loss { .. } => has_loss = true,
            Stmt::Let { .. } => {}
        }
    }
    let dynamic = quote!(::kiln::ndarray::ArrayD<F>);
    let out_type = match outputs.len() {
        1 => dynamic.clone(),
        n => {
            let items = (0..n).map(|_| dynamic.clone());
            quote!((#(#items),*))
        }
    };
    let view_type = match outputs.len() {
        1 => quote!(::kiln::ndarray::ArrayViewD<'w, F>),
        n => {
            let items = (0..n).map(|_| quote!(::kiln::ndarray::ArrayViewD<'w, F>));
            quote!((#(#items),*))
        }
    };
    let training = if has_loss {
        quote! {
            #vis fn loss_and_grad(&mut self, #(#inputs,)* #(#targets,)* ws: &mut #ws<F>, grads: &mut #grads<F>) -> ::kiln::Result<F> {
                unimplemented!("the model has compile errors")
            }
            #vis fn loss(&self, #(#inputs,)* #(#targets,)* ws: &mut #ws<F>) -> ::kiln::Result<F> {
                unimplemented!("the model has compile errors")
            }
        }
    } else {
        let d_outputs = outputs.iter().map(|o| {
            let d = format_ident!("d_{}", o);
            quote!(#d: ::kiln::ndarray::ArrayViewD<'_, F>)
        });
        quote! {
            #vis fn forward_train<'w>(&mut self, #(#inputs,)* ws: &'w mut #ws<F>) -> ::kiln::Result<#view_type> {
                unimplemented!("the model has compile errors")
            }
            #vis fn backward(&self, ws: &mut #ws<F>, #(#d_outputs,)* grads: &mut #grads<F>) -> ::kiln::Result<()> {
                unimplemented!("the model has compile errors")
            }
        }
    };
    let accessors = outputs.iter().map(|o| {
        quote! {
            #vis fn #o(&self) -> ::kiln::Result<::kiln::ndarray::ArrayViewD<'_, F>> {
                unimplemented!("the model has compile errors")
            }
        }
    });
    // Only read by code that cannot run: the crate does not build.
    let input_rank = match input_ranks.as_slice() {
        [rank] => *rank,
        _ => 0,
    };
    let traits = trait_impls(name, &grads, &ws, input_rank);
    // The decoding API as a sequence model has it (whether this one would have is not known
    // once it fails), so that code sampling from the model reports no error of its own.
    let decoding = quote! {
        #vis struct #cache<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);

        #[allow(dead_code, unused_variables)]
        impl<F: ::kiln::Float> #cache<F> {
            #vis fn new(batch: usize, capacity: usize) -> ::kiln::Result<Self> {
                unimplemented!("the model has compile errors")
            }
            #vis fn len(&self) -> usize {
                unimplemented!("the model has compile errors")
            }
            #vis fn is_empty(&self) -> bool {
                unimplemented!("the model has compile errors")
            }
            #vis fn capacity(&self) -> usize {
                unimplemented!("the model has compile errors")
            }
            #vis fn batch(&self) -> usize {
                unimplemented!("the model has compile errors")
            }
            #vis fn clear(&mut self) {
                unimplemented!("the model has compile errors")
            }
        }
    };
    quote! {
        #(#attrs)*
        #[derive(Clone, Debug)]
        #vis struct #name<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);
        #[derive(Clone, Debug)]
        #vis struct #grads<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);
        #vis struct #ws<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);

        impl<F: ::kiln::Float> ::core::default::Default for #ws<F> {
            fn default() -> Self {
                Self(::core::marker::PhantomData)
            }
        }

        #traits

        #decoding

        #[allow(dead_code, unused_variables, clippy::too_many_arguments)]
        impl<F: ::kiln::Float> #ws<F> {
            #vis fn new() -> Self {
                unimplemented!("the model has compile errors")
            }
            #(#accessors)*
        }

        #[allow(dead_code, unused_variables, clippy::too_many_arguments)]
        impl<F: ::kiln::Float> #name<F> {
            #vis fn new<R: ::kiln::rand::Rng + ?Sized>(rng: &mut R) -> Self {
                unimplemented!("the model has compile errors")
            }
            #vis fn zeros() -> Self {
                unimplemented!("the model has compile errors")
            }
            #vis fn zero_grads(&self) -> #grads<F> {
                unimplemented!("the model has compile errors")
            }
            #vis fn workspace(&self) -> #ws<F> {
                unimplemented!("the model has compile errors")
            }
            #vis fn forward(&self, #(#inputs),*) -> ::kiln::Result<#out_type> {
                unimplemented!("the model has compile errors")
            }
            #vis fn decoder_cache(&self, batch: usize, capacity: usize) -> ::kiln::Result<#cache<F>> {
                unimplemented!("the model has compile errors")
            }
            #vis fn forward_cached(&self, #(#inputs,)* cache: &mut #cache<F>) -> ::kiln::Result<#out_type> {
                unimplemented!("the model has compile errors")
            }
            #training
        }
    }
}

/// `kiln::Model`, `kiln::Supervised` and `kiln::Trainable` for the stand-in, as a model with no parameters whose
/// every batch fails.
fn trait_impls(
    name: &syn::Ident,
    grads: &syn::Ident,
    ws: &syn::Ident,
    input_rank: usize,
) -> TokenStream {
    let model_name = name.to_string();
    quote! {
        #[allow(unused_variables)]
        impl<F: ::kiln::Float> ::kiln::Model<F> for #name<F> {
            type Grads = #grads<F>;

            fn visit_params(&self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewD<'_, F>)) {}

            fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewMutD<'_, F>)) {}

            fn visit_grads(grads: &Self::Grads, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewD<'_, F>)) {}

            fn visit_grads_mut(grads: &mut Self::Grads, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewMutD<'_, F>)) {}

            #[allow(clippy::type_complexity)]
            fn visit_params_with_grads(&mut self, grads: &Self::Grads, f: &mut dyn FnMut(usize, &mut [F], &[F])) {}

            fn zero_grads(&self) -> Self::Grads {
                #grads(::core::marker::PhantomData)
            }

            fn num_params(&self) -> usize {
                0
            }

            fn summary(&self) -> ::kiln::Summary {
                ::kiln::Summary {
                    model: #model_name,
                    dtype: "",
                    rows: ::std::vec::Vec::new(),
                    ..::core::default::Default::default()
                }
            }

            fn graph(&self) -> &'static str {
                ""
            }
        }

        #[allow(unused_variables)]
        impl<F: ::kiln::Float> ::kiln::Supervised<F> for #name<F> {
            type Workspace = #ws<F>;
            const INPUT_RANK: usize = #input_rank;
            const CLASSES: ::core::option::Option<usize> = ::core::option::Option::None;

            fn train_batch(
                &mut self,
                x: ::kiln::ndarray::ArrayViewD<'_, F>,
                y: ::kiln::TargetView<'_, F>,
                ws: &mut Self::Workspace,
                grads: &mut Self::Grads,
            ) -> ::kiln::Result<F> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }

            fn eval_batch(
                &self,
                x: ::kiln::ndarray::ArrayViewD<'_, F>,
                y: ::kiln::TargetView<'_, F>,
                ws: &mut Self::Workspace,
            ) -> ::kiln::Result<F> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }

            fn last_output(ws: &Self::Workspace) -> ::kiln::Result<::kiln::ndarray::ArrayViewD<'_, F>> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }
        }

        #[allow(unused_variables)]
        impl<F: ::kiln::Float> ::kiln::Trainable<F> for #name<F> {
            type Workspace = #ws<F>;
            const ARGS: &'static [::kiln::ArgSpec] = &[];

            fn train_step(
                &mut self,
                batch: &[::kiln::BatchArray<F>],
                ws: &mut <Self as ::kiln::Trainable<F>>::Workspace,
                grads: &mut Self::Grads,
            ) -> ::kiln::Result<F> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }

            fn eval_step(
                &self,
                batch: &[::kiln::BatchArray<F>],
                ws: &mut <Self as ::kiln::Trainable<F>>::Workspace,
            ) -> ::kiln::Result<F> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }

            fn last_output(ws: &<Self as ::kiln::Trainable<F>>::Workspace) -> ::kiln::Result<::kiln::ndarray::ArrayViewD<'_, F>> {
                ::core::result::Result::Err(::kiln::Error::NoForward)
            }
        }
    }
}
