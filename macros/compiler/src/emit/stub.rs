//! The stand-in emitted beside `compile_error!` when a model does not compile.

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
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    let mut outputs = Vec::new();
    let mut has_loss = false;
    for stmt in &def.stmts {
        match stmt {
            Stmt::Input { name, dims, ints } => {
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
    quote! {
        #(#attrs)*
        #[derive(Clone, Debug)]
        #vis struct #name<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);
        #[derive(Clone, Debug)]
        #vis struct #grads<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);
        #vis struct #ws<F: ::kiln::Float = f32>(::core::marker::PhantomData<F>);

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
            #training
        }
    }
}
