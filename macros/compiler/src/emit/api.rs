//! The public methods: constructors, `forward`, `loss_and_grad` / `loss` (with a loss) or
//! `forward_train` / `backward` (without), and the workspace's output accessors.

use super::Ctx;
use crate::ir::{InputDecl, NodeId, NodeKind, Shape, ValueKind};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// `x: ArrayView<'_, F, Ix2>` for a declared input.
pub(super) fn view_param(cx: &Ctx, d: &InputDecl) -> TokenStream {
    let (n, ix) = (&d.name, cx.ix(&Shape(d.dims.clone())));
    if d.ints.is_some() {
        quote!(#n: ::kiln::ndarray::ArrayView<'_, usize, #ix>)
    } else {
        quote!(#n: ::kiln::ndarray::ArrayView<'_, F, #ix>)
    }
}

/// Checks every given input's shape, binding the symbolic dims into `dims`, each symbol at
/// least its value in `minimums` (see [`Graph::symbol_minimums`](crate::ir::Graph::symbol_minimums)).
pub(super) fn bind_inputs<'d>(
    cx: &Ctx,
    inputs: impl Iterator<Item = &'d InputDecl>,
    minimums: &[usize],
) -> TokenStream {
    let nsym = cx.g.symbols.len();
    let mut checks = TokenStream::new();
    for d in inputs {
        let (n, ns) = (&d.name, d.name.to_string());
        let kind = if d.is_target { "target" } else { "input" };
        let dims = d.dims.iter().map(|dim| match dim.linear() {
            None => {
                let v = dim.fixed_or_zero();
                quote!(::kiln::shape::Dim::Fixed(#v))
            }
            Some((s, factor, offset)) => {
                let sym = &cx.g.symbols[s];
                let min = minimums[s];
                if factor == 1 && offset == 0 && min == 1 {
                    quote!(::kiln::shape::Dim::Symbol(#sym, #s))
                } else {
                    let offset = proc_macro2::Literal::i64_unsuffixed(offset);
                    quote!(::kiln::shape::Dim::Multiple { symbol: #sym, slot: #s, factor: #factor, offset: #offset, min: #min })
                }
            }
        });
        checks.extend(quote! {
            ::kiln::shape::bind_shape(#kind, #ns, #n.shape(), &[#(#dims),*], &mut bound)?;
        });
    }
    quote! {
        let mut bound: [::core::option::Option<usize>; #nsym] = [None; #nsym];
        #checks
        let dims = bound.map(|d| d.unwrap_or(0));
    }
}

/// The label that the loss reading the labels `node` leaves out (its `ignore_index`), which
/// the labels may hold besides their classes.
pub(super) fn ignored_label(cx: &Ctx, node: NodeId) -> Option<usize> {
    let loss = &cx.g.nodes[cx.g.loss?];
    match &loss.kind {
        NodeKind::Kernel(kernel) if loss.inputs.contains(&node) => kernel.ignored_label(),
        _ => None,
    }
}

/// Stages the given inputs (copies only non-contiguous ones) and rebinds each name to a slice;
/// validates integer inputs (labels, token ids, lengths) first.
pub(super) fn stage_inputs<'d>(
    cx: &Ctx,
    inputs: impl Iterator<Item = (usize, &'d InputDecl)> + Clone,
) -> TokenStream {
    let mut out = TokenStream::new();
    for (_, d) in inputs.clone() {
        let (n, ns) = (&d.name, d.name.to_string());
        out.extend(match d.ints {
            // An ignored label among the classes needs no exception.
            Some(ValueKind::Labels { classes }) => {
                match ignored_label(cx, d.node).filter(|&ignored| ignored >= classes) {
                    Some(ignored) => quote! {
                        ::kiln::shape::check_labels_ignoring(#ns, &#n, #classes, Some(#ignored))?;
                    },
                    None => quote! {
                        ::kiln::shape::check_labels(#ns, &#n, #classes)?;
                    },
                }
            }
            Some(ValueKind::Tokens { vocab }) => quote! {
                ::kiln::shape::check_tokens(#ns, &#n, #vocab)?;
            },
            Some(ValueKind::Lengths { max }) => {
                let max = match max.linear() {
                    None => {
                        let v = max.fixed_or_zero();
                        quote!(#v)
                    }
                    Some((s, 1, 0)) => quote!(dims[#s]),
                    // A block's lengths along an axis its caller computed.
                    Some((s, scale, offset)) => {
                        let magnitude = offset.unsigned_abs() as usize;
                        if offset < 0 {
                            quote!((#scale * dims[#s] - #magnitude))
                        } else {
                            quote!((#scale * dims[#s] + #magnitude))
                        }
                    }
                };
                quote! { ::kiln::shape::check_lengths(#ns, &#n, #max)?; }
            }
            Some(ValueKind::Float) | None => TokenStream::new(),
        });
    }
    for (slot, d) in inputs.clone() {
        let n = &d.name;
        out.extend(if d.ints.is_some() {
            quote! { staging.prepare_labels(#slot, &#n); }
        } else {
            quote! { staging.prepare(#slot, &#n); }
        });
    }
    for (slot, d) in inputs {
        let n = &d.name;
        out.extend(if d.ints.is_some() {
            quote! { let #n = staging.get_labels(#slot, &#n); }
        } else {
            quote! { let #n = staging.get(#slot, &#n); }
        });
    }
    out
}

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    let (name, grads, ws, bufs) = (
        cx.name,
        &cx.grads_name,
        &cx.workspace_name,
        &cx.buffers_name,
    );
    let vis = &g.vis;
    let mut inits: Vec<_> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .map(|(l, s)| {
            let (f, init) = (&l.name, &s.init);
            quote!(#f: #init)
        })
        .collect();
    let mut zeros: Vec<_> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .map(|(l, s)| {
            let (f, z) = (&l.name, &s.zeros);
            quote!(#f: #z)
        })
        .collect();
    let mut grad_zeros: Vec<_> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .map(|(l, s)| {
            let f = &l.name;
            match &s.nested {
                Some(n) => {
                    let z = &n.grad_zeros;
                    quote!(#f: { let layer = &self.#f; #z })
                }
                None => {
                    let z = &s.zeros;
                    quote!(#f: #z)
                }
            }
        })
        .collect();
    if g.layers.is_empty() {
        // A model (or block) without parameters: its structs hold only the dtype marker.
        for list in [&mut inits, &mut zeros, &mut grad_zeros] {
            list.push(quote!(_dtype: ::core::marker::PhantomData));
        }
    }
    let model_inputs: Vec<&InputDecl> = g.inputs.iter().filter(|d| !d.is_target).collect();
    let input_views: Vec<TokenStream> = model_inputs.iter().map(|d| view_param(cx, d)).collect();
    let input_names: Vec<_> = model_inputs.iter().map(|d| &d.name).collect();
    let all_views: Vec<TokenStream> = g.inputs.iter().map(|d| view_param(cx, d)).collect();
    let all_names: Vec<_> = g.inputs.iter().map(|d| &d.name).collect();
    let indexed = || g.inputs.iter().enumerate();
    let indexed_inputs = || g.inputs.iter().enumerate().filter(|(_, d)| !d.is_target);
    let bind_dims = cx.bind_dims(quote!(dims));

    // Output types and values.
    let out_shapes: Vec<Shape> = g
        .outputs
        .iter()
        .map(|(o, _)| g.info(*o).shape.clone())
        .collect();
    let out_types: Vec<TokenStream> = out_shapes
        .iter()
        .map(|s| {
            let ix = cx.ix(s);
            quote!(::kiln::ndarray::Array<F, #ix>)
        })
        .collect();
    let view_types: Vec<TokenStream> = out_shapes
        .iter()
        .map(|s| {
            let ix = cx.ix(s);
            quote!(::kiln::ndarray::ArrayView<'w, F, #ix>)
        })
        .collect();
    let out_views: Vec<TokenStream> = g
        .outputs
        .iter()
        .zip(&out_shapes)
        .map(|((o, _), s)| {
            let (buf, dim) = (cx.node_ident(*o), cx.dim_value(s));
            quote!(::kiln::shape::view(&buffers.#buf, #dim)?)
        })
        .collect();
    let tuple = |items: &[TokenStream]| -> TokenStream {
        if items.len() == 1 {
            items[0].clone()
        } else {
            quote!((#(#items),*))
        }
    };
    let out_type = tuple(&out_types);
    let view_type = tuple(&view_types);
    let owned_values = tuple(
        &out_views
            .iter()
            .map(|v| quote!(#v.to_owned()))
            .collect::<Vec<_>>(),
    );
    let view_values = tuple(&out_views);
    // One view is returned as it comes (`Ok(x?)` would be noise); several are collected.
    let view_result = if out_views.len() == 1 {
        let ((o, _), s) = (&g.outputs[0], &out_shapes[0]);
        let (buf, dim) = (cx.node_ident(*o), cx.dim_value(s));
        quote!(::kiln::shape::view(&buffers.#buf, #dim))
    } else {
        quote!(Ok(#view_values))
    };
    let output_list = g
        .outputs
        .iter()
        .map(|(_, n)| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");

    // Inference computes what reaches the outputs; the loss and training passes everything.
    let output_minimums = g.output_symbol_minimums();
    let bind_model_inputs = bind_inputs(cx, model_inputs.iter().copied(), &output_minimums);
    let bind_all = bind_inputs(cx, g.inputs.iter(), &g.symbol_minimums());
    let stage_model_inputs = stage_inputs(cx, indexed_inputs());
    let stage_all = stage_inputs(cx, indexed());

    let forward_doc = format!(
        " Inference: computes {output_list} for a batch (nothing is kept for a backward pass). Returns `Err` if an input's shape differs from its declaration."
    );

    let run_forward_train = if cx.has_mode_ops(&cx.plan.forward_nodes) {
        quote!(run_forward_train)
    } else {
        quote!(run_forward)
    };
    let run_loss_train = if cx.has_mode_ops(&cx.plan.loss_nodes) {
        quote!(run_loss_train)
    } else {
        quote!(run_loss)
    };
    let training = if g.loss.is_some() {
        quote! {
            /// One training step's gradients: forward (in training mode), loss and backward.
            /// Overwrites `grads` with d loss / d parameter and returns the loss; updates
            /// running statistics, if the model has any. Outputs stay readable in `ws`.
            /// Returns `Err` (and changes nothing) if an input's shape or a label is wrong.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn loss_and_grad(&mut self, #(#all_views,)* ws: &mut #ws<F>, grads: &mut #grads<F>) -> ::kiln::Result<F> {
                self.loss_and_grad_notify(#(#all_names,)* ws, grads, None)
            }

            /// [`Self::loss_and_grad`], handing each layer's gradients to `sink` as soon as
            /// the backward pass has finished them (last layer first), with their indices in
            /// `Model::visit_params_with_grads` order: what overlaps data-parallel
            /// communication with the backward pass.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn loss_and_grad_notify(&mut self, #(#all_views,)* ws: &mut #ws<F>, grads: &mut #grads<F>, sink: Option<&mut dyn ::kiln::GradSink<F>>) -> ::kiln::Result<F> {
                #bind_all
                let #ws { staging, buffers, ready } = ws;
                #stage_all
                buffers.prepare(dims, true, true);
                self.#run_forward_train(buffers, #(#input_names),*)?;
                let loss = self.#run_loss_train(buffers, #(#all_names),*)?;
                self.run_backward(buffers, #(#all_names,)* grads, sink)?;
                *ready = true;
                Ok(loss)
            }

            /// The loss in inference mode (dropout off, batch norm on its running statistics), for
            /// validation: no gradients, no state updated. Outputs stay readable in `ws`.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn loss(&self, #(#all_views,)* ws: &mut #ws<F>) -> ::kiln::Result<F> {
                #bind_all
                let #ws { staging, buffers, ready } = ws;
                #stage_all
                buffers.prepare(dims, true, false);
                self.run_forward(buffers, #(#input_names),*)?;
                let loss = self.run_loss(buffers, #(#all_names),*)?;
                *ready = true;
                Ok(loss)
            }
        }
    } else {
        // Without a loss: forward_train keeps what backward reads; backward takes the
        // outputs' gradients.
        // Every input is copied before any copy is borrowed: `kept` borrows the staging area
        // that `keep` writes.
        let keep = indexed_inputs().map(|(slot, d)| {
            let n = &d.name;
            if d.ints.is_some() {
                quote! { staging.keep_labels(#slot, &#n); }
            } else {
                quote! { staging.keep(#slot, &#n); }
            }
        });
        let keep_views = indexed_inputs().map(|(slot, d)| {
            let n = &d.name;
            if d.ints.is_some() {
                quote! { let #n = staging.kept_labels(#slot); }
            } else {
                quote! { let #n = staging.kept(#slot); }
            }
        });
        let kept: Vec<TokenStream> = indexed()
            .map(|(slot, d)| {
                if d.ints.is_some() {
                    quote!(staging.kept_labels(#slot))
                } else {
                    quote!(staging.kept(#slot))
                }
            })
            .collect();
        let d_params: Vec<TokenStream> = g
            .outputs
            .iter()
            .zip(&out_shapes)
            .map(|((_, n), s)| {
                let (d, ix) = (format_ident!("d_{}", n), cx.ix(s));
                quote!(#d: ::kiln::ndarray::ArrayView<'_, F, #ix>)
            })
            .collect();
        let seeds = g.outputs.iter().zip(&out_shapes).map(|((o, n), s)| {
            let d = format_ident!("d_{}", n);
            let ns = n.to_string();
            let dims = s.0.iter().map(|dim| {
                let v = cx.dim_tokens(*dim);
                quote!(::kiln::shape::Dim::Fixed(#v))
            });
            let check = quote! {
                ::kiln::shape::bind_shape("gradient of output", #ns, #d.shape(), &[#(#dims),*], &mut [])?;
            };
            if cx.schedule.has_adjoint[*o] {
                let (buf, len) = (cx.adjoint_field(*o), cx.node_len(*o));
                quote! {
                    #check
                    for (dst, src) in buffers.#buf[..#len].iter_mut().zip(#d.iter()) {
                        *dst = *src;
                    }
                }
            } else {
                quote! { #check }
            }
        });
        quote! {
            /// The forward half of a training step without a declared loss: computes the
            /// outputs and keeps what `backward` reads. Returns views of the outputs.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn forward_train<'w>(&mut self, #(#input_views,)* ws: &'w mut #ws<F>) -> ::kiln::Result<#view_type> {
                #bind_model_inputs
                let #ws { staging, buffers, ready } = ws;
                #(#keep)*
                #(#keep_views)*
                buffers.prepare(dims, false, true);
                self.#run_forward_train(buffers, #(#input_names),*)?;
                *ready = true;
                #bind_dims
                #view_result
            }

            /// The backward half: given d (your loss) / d output for each output, in
            /// declaration order, overwrites `grads` with d loss / d parameter.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn backward(&self, ws: &mut #ws<F>, #(#d_params,)* grads: &mut #grads<F>) -> ::kiln::Result<()> {
                if !ws.ready {
                    return Err(::kiln::Error::NoForward);
                }
                let #ws { staging, buffers, .. } = ws;
                let dims = buffers.dims;
                #bind_dims
                #(#seeds)*
                self.run_backward(buffers, #(#kept,)* grads, None)
            }
        }
    };

    // Workspace accessors for each output.
    let accessors = g.outputs.iter().zip(&out_shapes).map(|((o, n), s)| {
        let (buf, dim, ix) = (cx.node_ident(*o), cx.dim_value(s), cx.ix(s));
        let doc = format!(
            " Output `{n}` {} of the last step run with this workspace.",
            s.display(&g.symbols)
        );
        quote! {
            #[doc = #doc]
            #[allow(non_snake_case)]
            #vis fn #n(&self) -> ::kiln::Result<::kiln::ndarray::ArrayView<'_, F, #ix>> {
                let buffers = &self.buffers;
                let dims = buffers.dims;
                #bind_dims
                ::kiln::shape::view(&buffers.#buf, #dim)
            }
        }
    });

    quote! {
        impl<F: ::kiln::Float> #name<F> {
            /// Creates the model with PyTorch's default initialization, drawing from `rng`.
            #vis fn new<R: ::kiln::rand::Rng + ?Sized>(rng: &mut R) -> Self {
                Self { #(#inits),* }
            }

            /// Creates the model with every parameter zero.
            #vis fn zeros() -> Self {
                Self { #(#zeros),* }
            }

            /// A gradient struct of zeros shaped like the parameters.
            #vis fn zero_grads(&self) -> #grads<F> {
                #grads { #(#grad_zeros),* }
            }

            /// An empty workspace for training steps.
            #vis fn workspace(&self) -> #ws<F> {
                #ws::new()
            }

            #[doc = #forward_doc]
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn forward(&self, #(#input_views),*) -> ::kiln::Result<#out_type> {
                #bind_model_inputs
                let mut staging = ::kiln::shape::Staging::<F>::new();
                #stage_model_inputs
                let mut buffers = #bufs::new();
                buffers.prepare(dims, false, false);
                self.run_forward(&mut buffers, #(#input_names),*)?;
                #bind_dims
                Ok(#owned_values)
            }

            #training
        }

        impl<F: ::kiln::Float> #ws<F> {
            #(#accessors)*
        }
    }
}
