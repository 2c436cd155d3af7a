//! The op registry. Each op family lives in one file and defines, for each op: how a call is
//! written (its arguments and options), its shape rule, its forward code, its VJP, and its
//! parameters if it is a layer. Adding an op means adding a file here and one line to
//! `REGISTRY`; no other stage names individual ops.
//!
//! Pointwise ops do not write loops of their own: they return an elementwise term (see
//! [`crate::expr`]) and the compiler fuses, differentiates and emits it. Every other op is a
//! [`Kernel`] that emits calls into `kiln::kernels` / `kiln::loss`.

mod activation;
pub(crate) mod arith;
mod attention;
pub(crate) mod block;
mod concat;
mod conv;
mod dropout;
mod embedding;
mod group_norm;
mod linear;
mod loss;
mod mask;
mod matmul;
mod narrow;
mod norm;
mod pad;
mod permute;
mod pool;
mod prelu;
mod recurrent;
mod reduce;
mod reshape;
mod rms_norm;
mod softmax;
mod split;
mod upsample;

use crate::ast;
use crate::expr::{Arena, TermId};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::{Span, TokenStream};

impl ParamSpec {
    /// The parameter's name in generated locals: its suffix with dots as underscores
    /// (`out_proj.weight` is `out_proj_weight`).
    pub fn field(&self) -> String {
        self.suffix.replace('.', "_")
    }

    /// Where the runtime layer holds it: `access`, or the field [`ParamSpec::field`] names.
    pub fn place(&self) -> TokenStream {
        match &self.access {
            Some(a) => a.clone(),
            None => {
                let f = proc_macro2::Ident::new(&self.field(), proc_macro2::Span::call_site());
                quote::quote!(#f)
            }
        }
    }
}

/// Builds an elementwise op's term from its inputs' terms.
pub type TermBuilder = Box<dyn FnOnce(&mut Arena, &[TermId]) -> TermId>;

/// What building a call produced.
pub enum Built {
    /// An elementwise op: builds its term from its inputs' terms.
    Pointwise(TermBuilder),
    /// A kernel op.
    Kernel(Box<dyn Kernel>),
}

/// A named op as users call it: `name(args, key = value)`.
pub trait OpSpec: Sync {
    /// The name users write.
    fn name(&self) -> &'static str;
    /// How a call is written, for messages: `linear(x, out_features, bias = true)`.
    fn usage(&self) -> &'static str;
    /// Checks the call's arguments and options and builds the op.
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built>;
    /// Whether a call gives several values, which a tuple `let` unpacks (`let (q, k, v) =
    /// chunk(..)`): the parser then writes one call per name, with the options `index = i`
    /// and `unpacked = n` added, for `build` to read.
    fn unpacks(&self) -> bool {
        false
    }
}

/// The ops whose calls a tuple `let` unpacks ([`OpSpec::unpacks`]), for messages.
pub fn unpacking_names() -> impl Iterator<Item = &'static str> {
    REGISTRY
        .iter()
        .filter(|op| op.unpacks())
        .map(|op| op.name())
}

/// A shape or kind error from an op's shape rule: the message and, when one argument is at
/// fault, its position (the error then points at it).
pub struct OpError {
    /// What is wrong, with the shapes and the fix.
    pub message: String,
    /// The tensor input at fault, if one is.
    pub input: Option<usize>,
    /// Errors that carry their own spans (inside a block's body), reported as they are.
    pub spanned: Option<syn::Error>,
}

impl OpError {
    /// An error about the call as a whole.
    pub fn call(message: impl Into<String>) -> Self {
        OpError {
            message: message.into(),
            input: None,
            spanned: None,
        }
    }
    /// An error about one tensor input.
    pub fn input(input: usize, message: impl Into<String>) -> Self {
        OpError {
            message: message.into(),
            input: Some(input),
            spanned: None,
        }
    }
    /// An error at a span the op kept from its call (an option's value that only the shapes
    /// show to be wrong, as `cross_entropy`'s `weight` against the classes).
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        OpError {
            message: String::new(),
            input: None,
            spanned: Some(syn::Error::new(span, message.into())),
        }
    }
}

/// A value as generated code sees it.
pub struct Operand {
    /// An expression of type `&[F]` (`&mut [F]` for outputs; `&[usize]` for labels), exactly
    /// `len` long.
    pub data: TokenStream,
    /// Element count, as a `usize` expression.
    pub len: TokenStream,
    /// Each dim as a `usize` expression.
    pub dims: Vec<TokenStream>,
    /// The place of the first element (`ws.loss[0]`): how scalars are read and written.
    pub first: TokenStream,
}

/// Where an input's gradient goes.
pub struct GradTarget {
    /// An expression of type `&mut [F]`.
    pub data: TokenStream,
    /// Add into it (`true`) or overwrite it (`false`, the first contribution).
    pub accumulate: bool,
}

/// How an op takes part in incremental decoding, where a pass sees only the new positions
/// of sequences whose earlier positions it has seen before (`forward_cached`).
pub enum Decoding {
    /// Each position's output depends on that position's input alone (a linear layer, a
    /// layer norm over the features): the op runs unchanged on the new positions.
    PositionWise,
    /// The op reads earlier positions or the position index: its forward emits its own code
    /// when [`ForwardCx::decode`] is set. `cache` is its field in the model's decoding cache,
    /// if it keeps one.
    Incremental {
        /// The cache field, if the op keeps one.
        cache: Option<DecodeCache>,
        /// The most positions the op can address, if it has a limit (a position table's
        /// `max_len`), and what sets it, as words following "is": `a position table of
        /// max_len = 16`. A cache for more positions is an error when it is made, rather than
        /// at the first position past the limit.
        positions: Option<(usize, String)>,
    },
    /// The op mixes positions in a way the cache cannot carry (a bidirectional recurrence, a
    /// mean over time, attention without a causal mask).
    Unsupported,
}

impl Decoding {
    /// [`Decoding::PositionWise`] when `per_position`, else [`Decoding::Unsupported`].
    pub fn position_wise_if(per_position: bool) -> Self {
        if per_position {
            Decoding::PositionWise
        } else {
            Decoding::Unsupported
        }
    }
}

/// A [`Decoding::Incremental`] op's field of the model's decoding cache.
pub struct DecodeCache {
    /// The field's type.
    pub ty: TokenStream,
    /// An expression creating it from the `batch` and `capacity` locals (it may use `?` on a
    /// `kiln::Result`).
    pub init: TokenStream,
    /// What it keeps, for the cache struct's doc: "the states of each recurrent layer".
    pub keeps: &'static str,
}

/// What a [`Decoding::Incremental`] op's forward gets in a decoding pass.
pub struct DecodeCx {
    /// The op's field of the decoding cache, as a place (`cache.attn`).
    pub cache: TokenStream,
    /// How many positions of each sequence came before the new ones, a `usize` local.
    pub offset: TokenStream,
}

/// What a kernel's forward code gets.
pub struct ForwardCx {
    /// The input values.
    pub inputs: Vec<Operand>,
    /// The output buffer.
    pub output: Operand,
    /// The layer's parameters as `&[F]` locals, in [`LayerSpec::params`] order, after the
    /// lent parameter of a tied op ([`Kernel::tied`]).
    pub params: Vec<TokenStream>,
    /// The layer's buffers as locals, in [`LayerSpec::buffers`] order: `&mut [F]` in a
    /// training pass (running statistics are updated), `&[F]` otherwise.
    pub buffers: Vec<TokenStream>,
    /// The op's scratch buffers as `&mut [F]`, in [`Kernel::scratch`] order.
    pub scratch: Vec<TokenStream>,
    /// Whether this is a training pass (dropout active, batch statistics).
    pub training: bool,
    /// The node's name (the layer's binding), for run-time errors.
    pub layer_name: String,
    /// The workspace's random generator, `&mut StdRng` (for ops with [`Kernel::needs_rng`]).
    pub rng: TokenStream,
    /// The op's [`Kernel::state`] as a place (`ws.h_state`).
    pub state: TokenStream,
    /// The layer as a place (`self.h`), for nested layers.
    pub layer: TokenStream,
    /// The symbolic dims in scope, by name, as `usize` locals.
    pub symbols: Vec<(String, TokenStream)>,
    /// Set in a decoding pass (`run_forward_cached`), for [`Decoding::Incremental`] ops.
    pub decode: Option<DecodeCx>,
}

/// What a kernel's VJP code gets.
pub struct BackwardCx {
    /// The forward input values (those the kernel reads in backward, see [`Kernel::backward_reads`]).
    pub inputs: Vec<Operand>,
    /// The forward output value.
    pub output: Operand,
    /// The output's adjoint, `&[F]`.
    pub d_output: TokenStream,
    /// The output adjoint's first element (the whole adjoint of a scalar output).
    pub d_output_first: TokenStream,
    /// For each input, where its adjoint goes, if it needs one.
    pub d_inputs: Vec<Option<GradTarget>>,
    /// The layer's parameters as `&[F]` locals, in [`LayerSpec::params`] order, after the
    /// lent parameter of a tied op ([`Kernel::tied`]).
    pub params: Vec<TokenStream>,
    /// The layer's gradients as `&mut [F]` locals, same order.
    pub param_grads: Vec<TokenStream>,
    /// Per parameter gradient: whether the step adds into it instead of overwriting it. A tied
    /// parameter (an output head reusing an embedding table) has two uses: the later step in
    /// backward order adds to what the first wrote.
    pub param_grads_accumulate: Vec<bool>,
    /// Per parameter gradient: the run-time condition under which its layer is trainable
    /// (`ws.trainable[2]`). An op may skip a gradient whose layer is frozen: the backward
    /// pass zeroes frozen layers' gradients after their last step.
    pub param_trainable: Vec<TokenStream>,
    /// The op's scratch buffers as `&mut [F]` (what the training forward saved in them).
    pub scratch: Vec<TokenStream>,
    /// The op's [`Kernel::state`] as a place (`ws.h_state`).
    pub state: TokenStream,
    /// The layer as a place (`self.h`) and its gradients (`grads.h`), for nested layers.
    pub layer: TokenStream,
    /// The layer's gradients as a place (`grads.h`), for nested layers.
    pub layer_grads: TokenStream,
    /// The symbolic dims in scope, by name, as `usize` locals.
    pub symbols: Vec<(String, TokenStream)>,
}

impl BackwardCx {
    /// Where input `i`'s gradient goes, as an `Option<(&mut [F], bool)>` expression: `Some`
    /// with the buffer and whether to add into it, or `None` when no gradient is wanted.
    pub fn input_grad(&self, i: usize) -> TokenStream {
        match self.d_inputs.get(i).and_then(Option::as_ref) {
            Some(t) => {
                let (d, acc) = (&t.data, t.accumulate);
                quote::quote!(Some((#d, #acc)))
            }
            None => quote::quote!(None),
        }
    }
}

/// A workspace buffer an op needs besides its output: saved statistics, a dropout mask, an
/// im2col matrix. It is named `<node>_<suffix>`.
pub struct ScratchSpec {
    /// Name suffix (`cols`, `mean`).
    pub suffix: &'static str,
    /// Its size: the product of a shape's dims, or an expression the runtime evaluates (when
    /// the kernel owns the formula, as `Conv2dGeometry::scratch_len` does; generated code then
    /// passes the whole buffer).
    pub len: ScratchLen,
}

/// The size of a [`ScratchSpec`].
pub enum ScratchLen {
    /// The product of the dims.
    Shape(Shape),
    /// A `usize` expression, independent of the batch, evaluated by the generated code.
    Runtime(TokenStream),
    /// A `usize` expression of the value's dims (the runtime owns the formula), given how to
    /// write a dim in generated code.
    OfDims(DimsLen),
}

/// Builds a scratch length expression from a way to write dims.
pub type DimsLen = Box<dyn Fn(&dyn Fn(Dim) -> TokenStream) -> TokenStream>;

/// Which forward values a VJP reads.
pub struct Reads {
    /// Per input.
    pub inputs: Vec<bool>,
    /// The output.
    pub output: bool,
}

/// A parameter tensor of a layer.
pub struct ParamSpec {
    /// The `state_dict` suffix (`weight`, `out_proj.weight`).
    pub suffix: &'static str,
    /// Whether the runtime layer stores it as an `Option` (PyTorch's optional bias).
    pub optional: bool,
    /// Its shape.
    pub dims: Vec<usize>,
    /// How the runtime layer holds it, when not as the field [`ParamSpec::field`] names
    /// (`weight_ih[1]` for a recurrent layer's second weight).
    pub access: Option<TokenStream>,
}

/// A layer's parameters as the generated struct holds them.
pub struct LayerSpec {
    /// The runtime type, generic over `F` (`::kiln::layers::Linear<F>`).
    pub ty: TokenStream,
    /// An expression initialising it from `rng` with PyTorch's default init.
    pub init: TokenStream,
    /// An expression for an all-zero layer.
    pub zeros: TokenStream,
    /// Its parameters, in `state_dict` order.
    pub params: Vec<ParamSpec>,
    /// Its non-trainable buffers (running statistics), saved and loaded with the parameters.
    pub buffers: Vec<ParamSpec>,
    /// For a block: the models it holds, whose parameters it visits under prefixed names.
    pub nested: Option<NestedSpec>,
}

/// The layer of a block call: a `Vec` of the block's own model type, one per repetition.
pub struct NestedSpec {
    /// The block's model type (`NameBlock<F>`).
    pub model: TokenStream,
    /// How many models (repetitions) the layer holds.
    pub count: usize,
    /// The gradient struct's field type (`Vec<NameBlockGrads<F>>`).
    pub grad_ty: TokenStream,
    /// An expression for zero gradients, given the layer as `layer` (`&Vec<NameBlock<F>>`).
    pub grad_zeros: TokenStream,
    /// Every parameter's `state_dict` name, block by block (`h.0.ln_1.weight`, ...).
    pub param_names: Vec<String>,
    /// Every buffer's `state_dict` name, block by block.
    pub buffer_names: Vec<String>,
    /// Trainable scalars over all blocks.
    pub scalars: usize,
}

/// A non-pointwise op: a kernel call forward and a hand-written VJP.
pub trait Kernel {
    /// The op's name (`linear`).
    fn name(&self) -> &'static str;
    /// The op's attributes for the graph description (`out=128, bias`).
    fn describe(&self) -> String {
        String::new()
    }
    /// Whether the op owns parameters (checked while lowering: one layer per statement).
    fn has_params(&self) -> bool {
        false
    }
    /// The shape rule.
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError>;
    /// Sizes computed from symbolic ones that must be at least 1 for the op to run, besides
    /// its output's dims (always checked): a crop must leave something of a symbolic axis,
    /// a reflection must be shorter than what it reflects. The call boundary checks them,
    /// as the least values of their symbols ([`Graph::symbol_minimums`](crate::ir::Graph::symbol_minimums)).
    fn required_sizes(&self, _inputs: &[&ValueInfo]) -> Vec<Dim> {
        Vec::new()
    }
    /// The layer's parameters, given the input types (only for ops with parameters).
    fn layer(&self, _inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        None
    }
    /// The binding whose layer lends this op its first parameter (`linear(h, 96, tied = wte)`
    /// reuses `wte.weight`), if any.
    fn tied(&self) -> Option<&syn::Ident> {
        None
    }
    /// The shape this op needs of the lent parameter, given its input types.
    fn tied_dims(&self, _inputs: &[&ValueInfo]) -> Vec<usize> {
        Vec::new()
    }
    /// The label a loss leaves out (`cross_entropy(.., ignore_index = 255)`): its labels
    /// input may hold it besides the classes.
    fn ignored_label(&self) -> Option<usize> {
        None
    }
    /// Whether gradients flow to input `i` (not to targets and labels).
    fn differentiable(&self, _input: usize) -> bool {
        true
    }
    /// Whether the forward pass differs between training and inference (dropout, batch norm).
    fn mode_dependent(&self) -> bool {
        false
    }
    /// Whether the op draws random numbers (from the workspace's seeded generator).
    fn needs_rng(&self) -> bool {
        false
    }
    /// A workspace member of its own type, besides `Vec<F>` scratch (a block's per-repetition
    /// buffers): its type and an expression creating it empty.
    fn state(&self) -> Option<(TokenStream, TokenStream)> {
        None
    }
    /// Statements handing the workspace's frozen-parameter filter (`frozen`, a
    /// `&dyn Fn(&str) -> bool` over this model's parameter names) to the op's
    /// [`Kernel::state`], at `state` (`self.h_state`): a block's buffers then skip the frozen
    /// parts of its backward pass.
    fn freeze_state(&self, _state: &TokenStream) -> Option<TokenStream> {
        None
    }
    /// How the op takes part in incremental decoding (`forward_cached`, see
    /// `emit::decode`), given its input types. The default, [`Decoding::Unsupported`], keeps
    /// every model holding the op from having `forward_cached`.
    fn decoding(&self, _inputs: &[&ValueInfo]) -> Decoding {
        Decoding::Unsupported
    }
    /// [`Kernel::decoding`] when some inputs are *static*: the same at every decoding call,
    /// computed from the model's inputs that are not sequences (a recurrence's initial states,
    /// the memory a cross-attention reads), marked in `is_static` by input slot. The default
    /// takes part only without static inputs.
    fn decoding_with(&self, inputs: &[&ValueInfo], is_static: &[bool]) -> Decoding {
        if is_static.iter().any(|&s| s) {
            Decoding::Unsupported
        } else {
            self.decoding(inputs)
        }
    }
    /// Items emitted beside the model (a block's own model type).
    fn items(&self) -> TokenStream {
        TokenStream::new()
    }
    /// Scratch buffers the op needs, given its input and output types.
    fn scratch(&self, _inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        Vec::new()
    }
    /// Which forward values the VJP reads.
    fn backward_reads(&self) -> Reads;
    /// Forward code: reads `cx.inputs`, writes `cx.output`.
    fn forward(&self, cx: &ForwardCx) -> TokenStream;
    /// VJP code: writes every requested `cx.d_inputs` and the layer's gradients.
    fn backward(&self, cx: &BackwardCx) -> TokenStream;
    /// The op's inference-mode ONNX nodes, writing `cx.output`; an `Err` says why the op
    /// cannot be exported (the message is `export`'s error).
    fn onnx(&self, _cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        Err(crate::onnx::unsupported(
            self.name(),
            "the exporter has no ONNX form for it yet",
        ))
    }
}

/// The arguments of one call, handed to [`OpSpec::build`].
pub struct CallArgs<'a> {
    call: &'a ast::Call,
    usage: &'static str,
    /// The arguments the op takes as tensors, in input order (positional arguments, then
    /// tensor options such as `lengths = len`).
    pub(crate) tensors: Vec<&'a ast::Expr>,
    asked: Vec<&'static str>,
}

impl<'a> CallArgs<'a> {
    pub(crate) fn new(call: &'a ast::Call, usage: &'static str) -> Self {
        CallArgs {
            call,
            usage,
            tensors: Vec::new(),
            asked: Vec::new(),
        }
    }

    /// The call's span.
    pub fn span(&self) -> Span {
        self.call.span
    }

    /// Requires between `min` and `max` positional arguments.
    pub fn positional(&self, min: usize, max: usize) -> syn::Result<()> {
        let n = self.call.args.len();
        let name = &self.call.func;
        if n < min {
            return Err(syn::Error::new(
                self.call.span,
                format!(
                    "`{name}` takes {} positional argument{}, got {n}: write `{}`",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("at least {min}")
                    },
                    if min == 1 { "" } else { "s" },
                    self.usage
                ),
            ));
        }
        if n > max {
            return Err(syn::Error::new(
                self.call.args[max].span(),
                format!(
                    "`{name}` takes at most {max} positional argument{}, this is one too many: write `{}`",
                    if max == 1 { "" } else { "s" },
                    self.usage
                ),
            ));
        }
        Ok(())
    }

    /// Takes positional argument `i` as a tensor input; returns its input slot.
    pub fn tensor(&mut self, i: usize) -> usize {
        self.tensors.push(&self.call.args[i]);
        self.tensors.len() - 1
    }

    /// Option `key = name` as a tensor input (`lengths = len`); returns its input slot.
    pub fn tensor_option(&mut self, key: &'static str) -> Option<usize> {
        let e = self.option(key)?;
        self.tensors.push(e);
        Some(self.tensors.len() - 1)
    }

    /// Positional argument `i` as a positive integer.
    pub fn int(&self, i: usize, what: &str) -> syn::Result<usize> {
        literal_int(&self.call.args[i], what, self.usage)
    }

    /// Positional argument `i` as a float literal (integers accepted).
    pub fn float(&self, i: usize, what: &str) -> syn::Result<f64> {
        literal_float(&self.call.args[i], what, self.usage)
    }

    /// Positional argument `i` as a size or a `(height, width)` pair.
    pub fn pair(&self, i: usize, what: &str) -> syn::Result<(usize, usize)> {
        pool::literal_pair(&self.call.args[i], what)
    }

    /// Positional argument `i` as written (for ops that read literal structure, like a shape).
    pub fn raw(&self, i: usize) -> &'a ast::Expr {
        &self.call.args[i]
    }

    /// The number of positional arguments.
    pub fn count(&self) -> usize {
        self.call.args.len()
    }

    /// Whether positional argument `i` exists.
    pub fn has(&self, i: usize) -> bool {
        i < self.call.args.len()
    }

    fn option(&mut self, key: &'static str) -> Option<&'a ast::Expr> {
        // An op may read an option twice (its span, then its value): list it once.
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.written_option(key)
    }

    /// Option `key = ...` as written, without counting `key` among the options the op takes:
    /// for a message about an option of another op.
    pub fn written_option(&self, key: &str) -> Option<&'a ast::Expr> {
        self.call
            .options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Option `key = ...` as written, for ops that read it themselves.
    pub fn option_expr(&mut self, key: &'static str) -> Option<&'a ast::Expr> {
        self.option(key)
    }

    /// Option `key = true|false`.
    pub fn opt_bool(&mut self, key: &'static str, default: bool) -> syn::Result<bool> {
        match self.option(key) {
            None => Ok(default),
            Some(ast::Expr::Bool(b, _)) => Ok(*b),
            Some(ast::Expr::Var(name)) if name == "True" || name == "False" => {
                let rust = name.to_string().to_lowercase();
                Err(syn::Error::new(
                    name.span(),
                    format!("`{key} = {name}` is Python's spelling: write `{key} = {rust}`"),
                ))
            }
            Some(other) => {
                let got = match other {
                    ast::Expr::Int(..) | ast::Expr::Float(..) => "a number",
                    ast::Expr::Var(_) => "a name",
                    _ => "an expression",
                };
                Err(syn::Error::new(
                    other.span(),
                    format!(
                        "`{key}` is a switch, not {got}: write `{key} = true` or `{key} = false`"
                    ),
                ))
            }
        }
    }

    /// Option `key = number`.
    pub fn opt_float(&mut self, key: &'static str) -> syn::Result<Option<f64>> {
        let usage = self.usage;
        self.option(key)
            .map(|e| literal_float(e, key, usage))
            .transpose()
    }

    /// Option `key = name`: a binding named by the option (`tied = wte`).
    pub fn opt_name(&mut self, key: &'static str) -> syn::Result<Option<syn::Ident>> {
        match self.option(key) {
            None => Ok(None),
            Some(ast::Expr::Var(name)) => Ok(Some(name.clone())),
            Some(other) => Err(syn::Error::new(
                other.span(),
                format!("`{key}` takes the name of a binding above, as in `{key} = wte`"),
            )),
        }
    }

    /// Option `key = n`, a non-negative integer (an index: a class, a padding id).
    pub fn opt_index(&mut self, key: &'static str) -> syn::Result<Option<usize>> {
        match self.option(key) {
            None => Ok(None),
            Some(ast::Expr::Int(v, s)) => usize::try_from(*v)
                .map(Some)
                .map_err(|_| syn::Error::new(*s, format!("`{key}` is too large"))),
            Some(other) => Err(syn::Error::new(
                other.span(),
                format!("`{key}` takes an integer index, as in `{key} = 0`"),
            )),
        }
    }

    /// Option `key = k`: an axis, counted from the front (`1`) or, negative, from the back
    /// (`-1` is the last), as PyTorch's `dim`.
    pub fn opt_axis(&mut self, key: &'static str) -> syn::Result<Option<i64>> {
        match self.option(key) {
            None => Ok(None),
            Some(ast::Expr::Int(v, s)) => i64::try_from(*v)
                .map(Some)
                .map_err(|_| syn::Error::new(*s, format!("`{key}` is too large"))),
            Some(ast::Expr::Float(v, _)) if v.fract() == 0.0 && *v < 0.0 && *v > -64.0 => {
                Ok(Some(*v as i64))
            }
            Some(other) => Err(syn::Error::new(
                other.span(),
                format!("`{key}` takes an axis, as in `{key} = 1` or `{key} = -1` (the last)"),
            )),
        }
    }

    /// Positional argument `i` as an axis (`1`, or `-1` for the last).
    pub fn axis(&self, i: usize) -> syn::Result<i64> {
        match &self.call.args[i] {
            ast::Expr::Int(v, s) => {
                i64::try_from(*v).map_err(|_| syn::Error::new(*s, "this axis is too large"))
            }
            ast::Expr::Float(v, _) if v.fract() == 0.0 && *v < 0.0 && *v > -64.0 => Ok(*v as i64),
            other => Err(syn::Error::new(
                other.span(),
                format!("expected an axis as an integer literal: `{}`", self.usage),
            )),
        }
    }

    /// Option `key = n`, a positive integer.
    pub fn opt_int(&mut self, key: &'static str) -> syn::Result<Option<usize>> {
        let usage = self.usage;
        self.option(key)
            .map(|e| literal_int(e, key, usage))
            .transpose()
    }

    /// Option `key = n` or `key = (h, w)`: a pair of non-negative integers (a square `n`
    /// gives `(n, n)`). `min` is the smallest value allowed (1 for kernels and strides, 0 for
    /// padding).
    pub fn opt_pair(&mut self, key: &'static str, min: u64) -> syn::Result<Option<(usize, usize)>> {
        let Some(e) = self.option(key) else {
            return Ok(None);
        };
        let one = |e: &ast::Expr| -> syn::Result<usize> {
            match e {
                ast::Expr::Int(v, s) if *v < min => Err(syn::Error::new(
                    *s,
                    format!("`{key}` must be at least {min}, not {v}"),
                )),
                ast::Expr::Int(v, s) => usize::try_from(*v)
                    .map_err(|_| syn::Error::new(*s, format!("`{key}` is too large"))),
                other => Err(syn::Error::new(
                    other.span(),
                    format!("`{key}` takes an integer or a pair `(height, width)`, as in `{key} = 3` or `{key} = (3, 2)`"),
                )),
            }
        };
        match e {
            ast::Expr::Tuple(items, s) => match items.as_slice() {
                [h, w] => Ok(Some((one(h)?, one(w)?))),
                _ => Err(syn::Error::new(
                    *s,
                    format!(
                        "`{key}` takes a pair `(height, width)`, not {} values",
                        items.len()
                    ),
                )),
            },
            single => {
                let v = one(single)?;
                Ok(Some((v, v)))
            }
        }
    }

    /// Rejects options nobody asked for, suggesting the closest known one. An op calls it
    /// after reading every option it takes and before reporting a required one as missing:
    /// a misspelt required option (`head = 4`) is then an unknown option with its suggestion,
    /// at the typo, instead of a missing one at the op's name.
    pub fn finish(&self) -> syn::Result<()> {
        let mut errors: Option<syn::Error> = None;
        for (key, _) in &self.call.options {
            let k = key.to_string();
            if self.asked.iter().any(|a| *a == k) {
                if self.call.options.iter().filter(|(o, _)| o == key).count() > 1 {
                    push_error(
                        &mut errors,
                        syn::Error::new(key.span(), format!("option `{k}` is given twice")),
                    );
                }
                continue;
            }
            let name = &self.call.func;
            let message = if self.asked.is_empty() {
                format!("`{name}` takes no options: write `{}`", self.usage)
            } else {
                let hint = match (
                    pytorch_name(&k).filter(|ours| self.asked.contains(ours)),
                    pytorch_default(&k),
                ) {
                    (Some(ours), _) => {
                        format!("PyTorch's `{k}` is `{ours}` here: write `{ours} = ..`. ")
                    }
                    (None, Some(why)) => format!("{why}: leave `{k}` out. "),
                    (None, None) if k == "padding_mode" => "pad the input first, as in \
                        `conv2d(pad(x, (1, 1, 1, 1), mode = reflect), 16, kernel = 3)`. "
                        .to_string(),
                    (None, None) => closest(&k, self.asked.iter().copied())
                        // PyTorch's longer names ending in kiln's (`elementwise_affine` for
                        // batch norm's `affine`).
                        .or_else(|| {
                            self.asked
                                .iter()
                                .copied()
                                .find(|c| c.len() >= 4 && k.ends_with(&format!("_{c}")))
                        })
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default(),
                };
                format!(
                    "unknown option `{k}` for `{name}`: {hint}(options: {})",
                    self.asked.join(", ")
                )
            };
            push_error(&mut errors, syn::Error::new(key.span(), message));
        }
        errors.map_or(Ok(()), Err)
    }
}

/// kiln's name for an option PyTorch spells `torch_name`, where they differ.
fn pytorch_name(torch_name: &str) -> Option<&'static str> {
    Some(match torch_name {
        "dim" => "axis",
        "kernel_size" => "kernel",
        "num_heads" => "heads",
        "num_layers" => "layers",
        "scale_factor" => "scale",
        _ => return None,
    })
}

/// Why a PyTorch option kiln does not take is not needed, for the options whose setting kiln
/// always has.
fn pytorch_default(torch_name: &str) -> Option<&'static str> {
    Some(match torch_name {
        "batch_first" => "kiln's sequences are always batch-first, `[B, T, F]`",
        "inplace" => "kiln's ops write their own outputs (and reuse buffers where it is safe)",
        _ => return None,
    })
}

/// kiln's name for an op PyTorch (or `torch.nn.functional`) spells `torch_name`, where they
/// differ.
pub fn pytorch_op(torch_name: &str) -> Option<&'static str> {
    Some(match torch_name {
        "mse_loss" => "mse",
        "l1_loss" => "l1",
        "smooth_l1_loss" => "smooth_l1",
        "huber_loss" => "huber",
        "nll_loss" => "nll",
        "binary_cross_entropy_with_logits" => "bce_with_logits",
        "binary_cross_entropy" => "bce",
        "cat" => "concat",
        "view" => "reshape",
        "interpolate" => "upsample",
        "bmm" | "mm" => "matmul",
        "swish" => "silu",
        _ => return None,
    })
}

fn push_error(errors: &mut Option<syn::Error>, e: syn::Error) {
    match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    }
}

fn literal_int(e: &ast::Expr, what: &str, usage: &str) -> syn::Result<usize> {
    match e {
        ast::Expr::Int(0, s) => Err(syn::Error::new(
            *s,
            format!("{what} must be positive, not 0"),
        )),
        ast::Expr::Int(v, s) => {
            usize::try_from(*v).map_err(|_| syn::Error::new(*s, format!("{what} is too large")))
        }
        other => Err(syn::Error::new(
            other.span(),
            format!("expected {what} as an integer literal: `{usage}`"),
        )),
    }
}

fn literal_float(e: &ast::Expr, what: &str, usage: &str) -> syn::Result<f64> {
    match e {
        ast::Expr::Float(v, _) => Ok(*v),
        ast::Expr::Int(v, _) => Ok(*v as f64),
        other => Err(syn::Error::new(
            other.span(),
            format!("expected {what} as a number literal: `{usage}`"),
        )),
    }
}

/// Every op users can call by name. One line per op.
static REGISTRY: &[&dyn OpSpec] = &[
    &linear::LINEAR,
    &activation::RELU,
    &prelu::PRELU,
    &activation::LEAKY_RELU,
    &activation::SIGMOID,
    &activation::TANH,
    &activation::GELU,
    &activation::SOFTPLUS,
    &activation::SILU,
    &activation::ABS,
    &activation::ELU,
    &activation::SELU,
    &activation::MISH,
    &activation::SOFTSIGN,
    &activation::LOGSIGMOID,
    &activation::CLAMP,
    &activation::HARDTANH,
    &activation::POW,
    &activation::MAXIMUM,
    &activation::MINIMUM,
    &activation::RELU6,
    &activation::HARDSIGMOID,
    &activation::HARDSWISH,
    &activation::EXP,
    &activation::LOG,
    &activation::SQRT,
    &activation::SQUARE,
    &softmax::SOFTMAX,
    &softmax::LOG_SOFTMAX,
    &reduce::SUM,
    &reduce::MEAN,
    &reduce::MAX,
    &loss::MSE,
    &loss::L1,
    &loss::SMOOTH_L1,
    &loss::HUBER,
    &loss::CROSS_ENTROPY,
    &loss::NLL,
    &loss::BCE_WITH_LOGITS,
    &loss::BCE,
    &loss::KL_DIV,
    &conv::CONV1D,
    &conv::CONV2D,
    &conv::CONV_TRANSPOSE2D,
    &pool::MAX_POOL2D,
    &pool::AVG_POOL2D,
    &pool::MAX_POOL1D,
    &pool::AVG_POOL1D,
    &pool::ADAPTIVE_AVG_POOL2D,
    &pool::ADAPTIVE_MAX_POOL2D,
    &upsample::UPSAMPLE,
    &reshape::FLATTEN,
    &reshape::RESHAPE,
    &concat::CONCAT,
    &narrow::NARROW,
    &narrow::SELECT,
    &split::CHUNK,
    &split::SPLIT,
    &dropout::DROPOUT,
    &norm::BATCH_NORM,
    &norm::LAYER_NORM,
    &rms_norm::RMS_NORM,
    &group_norm::GROUP_NORM,
    &group_norm::INSTANCE_NORM,
    &pad::PAD,
    &embedding::EMBEDDING,
    &embedding::POSITION_EMBEDDING,
    &attention::MULTI_HEAD_ATTENTION,
    &recurrent::LSTM,
    &recurrent::GRU,
    &recurrent::RNN,
    &matmul::MATMUL,
    &permute::TRANSPOSE,
    &permute::PERMUTE,
    &mask::CAUSAL_MASK,
];

/// The op called `name`.
pub fn lookup(name: &str) -> Option<&'static dyn OpSpec> {
    REGISTRY.iter().copied().find(|op| op.name() == name)
}

/// Every op name, for suggestions and docs.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|op| op.name())
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&word.to_lowercase(), &c.to_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| {
        *d <= (c.len().max(word.len()) / 3).max(1) || c.contains(word) && word.len() >= 3
    })
    .map(|(_, c)| c)
}

/// Levenshtein distance where swapping two adjacent letters also counts as one edit (optimal
/// string alignment): `inptu` is one typo away from `input`, not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Rows i-2, i-1 and i of the distance table.
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                cur[j + 1] = cur[j + 1].min(before[j - 1] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// Resolves an axis written as PyTorch's `dim` (negative counts from the back) against a rank,
/// or explains why it is out of range.
pub(crate) fn resolve_axis(
    op: &str,
    axis: i64,
    rank: usize,
    shown: &str,
) -> Result<usize, OpError> {
    let resolved = if axis < 0 { rank as i64 + axis } else { axis };
    if resolved < 0 || resolved >= rank as i64 {
        return Err(OpError::input(
            0,
            format!(
                "`{op}` along axis {axis}, but this is {shown}, of rank {rank}: axes run from 0 to {} (or -1 for the last)",
                rank.saturating_sub(1)
            ),
        ));
    }
    Ok(resolved as usize)
}

/// The counts that divide `n`, for a message about a count that does not (`heads` of an
/// attention width, `groups` of a channel count): all of them up to a dozen (`1, 2, 4, 8, 16,
/// 32, 64, 128`), else how many there are and the nearest to `wanted` on either side (a width
/// like 720 has 30, too many to read).
pub(crate) fn divisors_near(n: usize, wanted: usize) -> String {
    // Past 2^40 the pairs up to the square root would be a million trial divisions or more
    // (four billion for a width near 2^64, a minute of an unoptimised compiler): only the
    // nearest divisors are looked for then, each within a million steps of `wanted`.
    const LISTED_UP_TO: usize = 1 << 40;
    const STEPS: usize = 1 << 20;
    if n > LISTED_UP_TO {
        let below = (1..wanted.min(n))
            .rev()
            .take(STEPS)
            .find(|d| n.is_multiple_of(*d))
            .unwrap_or(1);
        let above = (wanted.saturating_add(1)..n)
            .take(STEPS)
            .find(|d| n.is_multiple_of(*d))
            .unwrap_or(n);
        return format!("the nearest to {wanted} are {below} and {above}");
    }
    // Pairs of divisors up to the square root: `n` may be large, and this runs in the
    // compiler.
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut d = 1;
    while d <= n / d {
        if n.is_multiple_of(d) {
            small.push(d);
            if d != n / d {
                large.push(n / d);
            }
        }
        d += 1;
    }
    small.extend(large.into_iter().rev());
    if small.len() <= 12 {
        let all: Vec<String> = small.iter().map(usize::to_string).collect();
        return all.join(", ");
    }
    let below = small.iter().rev().find(|&&d| d < wanted);
    let above = small.iter().find(|&&d| d > wanted);
    let nearest = match (below, above) {
        (Some(b), Some(a)) => format!("the nearest to {wanted} are {b} and {a}"),
        (Some(k), None) | (None, Some(k)) => format!("the nearest to {wanted} is {k}"),
        (None, None) => String::new(),
    };
    format!("{} do, from 1 to {n}; {nearest}", small.len())
}

/// `dim + n` (`n` possibly negative) as generated code writes it: the sum itself when `dim`
/// is a number (saturating at 0), `dim` alone when `n` is 0, else `(dim + n)` or `(dim - n)`.
pub(crate) fn dim_plus(dim: &TokenStream, n: i64) -> TokenStream {
    if n == 0 {
        return dim.clone();
    }
    let magnitude = proc_macro2::Literal::usize_unsuffixed(n.unsigned_abs() as usize);
    match dim.to_string().parse::<usize>() {
        Ok(d) => {
            let sum = usize::try_from((d as i64).saturating_add(n)).unwrap_or(0);
            let sum = proc_macro2::Literal::usize_unsuffixed(sum);
            quote::quote!(#sum)
        }
        Err(_) if n > 0 => quote::quote!((#dim + #magnitude)),
        Err(_) => quote::quote!((#dim - #magnitude)),
    }
}

/// The product of some dims as a `usize` expression (`B * T`; `1` for none).
pub(crate) fn product_of(dims: &[TokenStream]) -> TokenStream {
    match dims.split_first() {
        None => quote::quote!(1),
        Some((first, rest)) => {
            let mut out = first.clone();
            for d in rest {
                out = quote::quote!(#out * #d);
            }
            out
        }
    }
}

/// The info of a float value with the same shape as `like`.
pub(crate) fn float_like(like: &ValueInfo) -> ValueInfo {
    ValueInfo {
        shape: like.shape.clone(),
        kind: ValueKind::Float,
    }
}

/// An error unless input `i` holds floats.
pub(crate) fn require_float(op: &str, i: usize, info: &ValueInfo) -> Result<(), OpError> {
    match info.kind {
        ValueKind::Float => Ok(()),
        kind => Err(OpError::input(i, int_misuse(op, kind))),
    }
}

/// The message for integer values given to an op that computes on floats, saying where such
/// values belong.
pub(crate) fn int_misuse(op: &str, kind: ValueKind) -> String {
    let fix = match kind {
        ValueKind::Labels { .. } => "labels are only the target of `cross_entropy(logits, labels)`",
        ValueKind::Tokens { .. } => "token ids are turned into vectors by `embedding(tokens, dim)` first",
        ValueKind::Lengths { .. } => "sequence lengths are the `lengths = ...` option of `lstm`, `gru`, `mean` and `multi_head_attention`",
        ValueKind::Float => "",
    };
    format!(
        "`{op}` needs float values, but this holds {}: {fix}",
        kind.describe()
    )
}

/// The local holding a convolution's or pooling's geometry in generated code. Its mixed-site
/// hygiene keeps it apart from the model's own names (an input may be called `geometry`).
pub(crate) fn geometry_ident() -> proc_macro2::Ident {
    proc_macro2::Ident::new("geometry", proc_macro2::Span::mixed_site())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors_near_list_every_divisor_up_to_the_count() {
        assert_eq!(divisors_near(128, 3), "1, 2, 4, 8, 16, 32, 64, 128");
        assert_eq!(divisors_near(30, 4), "1, 2, 3, 5, 6, 10, 15, 30");
        assert_eq!(divisors_near(7, 2), "1, 7");
        assert_eq!(
            divisors_near(720, 7),
            "30 do, from 1 to 720; the nearest to 7 are 6 and 8"
        );
        assert_eq!(
            divisors_near(720, 1000),
            "30 do, from 1 to 720; the nearest to 1000 is 720"
        );
        assert_eq!(divisors_near(49, 5), "1, 7, 49");
        // Widths near 2^64 are not factored (that took a minute): 2^64 − 1 = 3 · 5 · 17 · ...,
        // and 2^61 − 1 is prime.
        assert_eq!(
            divisors_near(u64::MAX as usize, 4),
            "the nearest to 4 are 3 and 5"
        );
        assert_eq!(
            divisors_near((1usize << 61) - 1, 4),
            format!("the nearest to 4 are 1 and {}", (1usize << 61) - 1)
        );
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(closest("lienar", names()), Some("linear"));
        assert_eq!(closest("rellu", names()), Some("relu"));
        assert_eq!(closest("relu_6", names()), Some("relu6"));
        assert_eq!(closest("softmx", names()), Some("softmax"));
        assert_eq!(closest("sfotmax", names()), Some("softmax"));
        assert_eq!(edit_distance("inptu", "input"), 1);
        assert_eq!(edit_distance("abc", "ca"), 3);
        assert_eq!(closest("conv9000xyz", names()), None);
    }

    /// A call of every op, with every option it takes.
    const CALLS: &[&str] = &[
        "linear(x, 10, bias = false, tied = wte)",
        "relu(x)",
        "prelu(x, num_parameters = 8, init = 0.1)",
        "leaky_relu(x, slope = 0.1)",
        "sigmoid(x)",
        "tanh(x)",
        "gelu(x)",
        "silu(x)",
        "abs(x)",
        "elu(x, alpha = 0.5)",
        "selu(x)",
        "mish(x)",
        "softsign(x)",
        "logsigmoid(x)",
        "clamp(x, min = -1.0, max = 1.0)",
        "hardtanh(x, min_val = -2.0, max_val = 2.0)",
        "pow(x, 1.5)",
        "maximum(x, y)",
        "minimum(x, 0.5)",
        "relu6(x)",
        "hardsigmoid(x)",
        "hardswish(x)",
        "softplus(x)",
        "exp(x)",
        "log(x)",
        "sqrt(x)",
        "square(x)",
        "softmax(x, axis = 1)",
        "log_softmax(x, axis = -2)",
        "sum(x, axis = 1)",
        "mean(x, axis = 1, lengths = len)",
        "max(x, axis = 1)",
        "mse(y, t)",
        "l1(y, t)",
        "smooth_l1(y, t, beta = 0.5)",
        "huber(y, t, delta = 2.0)",
        "cross_entropy(y, t, ignore_index = 0, label_smoothing = 0.1, weight = (1.0, 2.0))",
        "nll(y, t, ignore_index = 0, weight = (1.0, 2.0))",
        "bce_with_logits(y, t, pos_weight = 2.0, weight = (1.0, 0.5))",
        "bce(p, t, weight = (1.0, 0.5))",
        "kl_div(y, t, reduction = batchmean, log_target = true)",
        "conv1d(x, 8, kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1, bias = true)",
        "conv2d(x, 8, kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1, bias = true)",
        "conv_transpose2d(x, 8, kernel = 2, stride = 2, padding = 0, output_padding = 0, groups = 1, dilation = 1, bias = true)",
        "max_pool2d(x, kernel = 2, stride = 2, padding = 0, ceil_mode = false)",
        "avg_pool2d(x, kernel = 2, stride = 2, padding = 0, ceil_mode = false, count_include_pad = true)",
        "max_pool1d(x, kernel = 2, stride = 2, padding = 0, ceil_mode = false)",
        "avg_pool1d(x, kernel = 2, stride = 2, padding = 0, ceil_mode = false, count_include_pad = true)",
        "adaptive_avg_pool2d(x, 1)",
        "adaptive_max_pool2d(x, (2, 3))",
        "upsample(x, scale = 2, mode = bilinear)",
        "upsample(x, size = (4, 4))",
        "flatten(x)",
        "reshape(x, (B, 4))",
        "concat(a, b, axis = 1)",
        "dropout(x, p = 0.5)",
        "batch_norm(x, eps = 0.001, momentum = 0.1, affine = false)",
        "layer_norm(x, eps = 0.001, dims = 2, bias = true, elementwise_affine = true)",
        "rms_norm(x, eps = 0.000001, elementwise_affine = true)",
        "group_norm(x, groups = 4, eps = 0.001, affine = false)",
        "instance_norm(x, eps = 0.001, affine = true)",
        "embedding(t, 8, padding_idx = 0, vocab = 10)",
        "position_embedding(t, 8, max_len = 16)",
        "multi_head_attention(x, heads = 4, causal = true, bias = true, lengths = len)",
        "multi_head_attention(x, heads = 4, causal = true, rotary = true, rotary_base = 500000)",
        "lstm(x, 8, layers = 2, bidirectional = true, final_state = true, lengths = len, dropout = 0.2)",
        "gru(x, 8, layers = 2, bidirectional = true, final_state = true, lengths = len, dropout = 0.2)",
        "rnn(x, 8, layers = 2, bidirectional = true, nonlinearity = relu, final_state = true, lengths = len, dropout = 0.2)",
        "lstm(x, 8, h0 = h, c0 = c)",
        "lstm(x, 8, final_state = true, final_cells = true)",
        "gru(x, 8, layers = 2, final_state = true, all_layers = true)",
        "gru(x, 8, h0 = h)",
        "matmul(a, b)",
        "transpose(x, 1, 2)",
        "permute(x, (0, 2, 1))",
        "causal_mask(x)",
        "pad(x, (1, 2, 0, 1), mode = constant, value = 0.5)",
        "narrow(x, axis = 1, start = -2, length = 2)",
        "narrow(x, axis = 1, start = 1, end = -1)",
        "select(x, axis = 1, index = 0)",
        "chunk(x, 2, axis = 1, index = 0, unpacked = 2)",
        "split(x, (1, 3), axis = 1, index = 1, unpacked = 2)",
    ];

    fn parse_call(src: &str) -> ast::Call {
        let tokens: TokenStream = src.parse().expect("lexes");
        match syn::parse::Parser::parse2(crate::parse::parse_expr, tokens) {
            Ok(ast::Expr::Call(call)) => call,
            _ => panic!("`{src}` is not a call"),
        }
    }

    fn build(call: &ast::Call) -> syn::Result<Built> {
        let spec = lookup(&call.func.to_string()).expect("a registered op");
        spec.build(&mut CallArgs::new(call, spec.usage()))
    }

    /// Every option of every op, misspelt, is an unknown option that suggests the right one
    /// at the typo: required options too (`head = 4` for `heads`), which an op reporting them
    /// missing before it rejects unknown ones would instead call missing.
    #[test]
    fn misspelt_options_are_suggested_at_the_typo() {
        for name in names() {
            assert!(
                CALLS.iter().any(|c| c.starts_with(&format!("{name}("))),
                "no call of `{name}` in CALLS"
            );
        }
        for src in CALLS {
            let call = parse_call(src);
            assert!(build(&call).is_ok(), "`{src}` builds");
            for (i, (key, _)) in call.options.iter().enumerate() {
                let key = key.to_string();
                // Drop the last letter (`head`), or double it for a short name (`pp`).
                let typo = if key.len() >= 3 {
                    key[..key.len() - 1].to_string()
                } else {
                    format!("{key}{}", &key[key.len() - 1..])
                };
                let mut wrong = call.clone();
                wrong.options[i].0 = proc_macro2::Ident::new(&typo, call.options[i].0.span());
                let Err(e) = build(&wrong) else {
                    panic!("`{src}` with `{typo}` for `{key}` builds");
                };
                assert!(
                    e.to_string().contains(&format!("did you mean `{key}`?")),
                    "`{src}` with `{typo}`: {e}"
                );
                let (at, typo_at) = (e.span().start(), wrong.options[i].0.span().start());
                assert_eq!(
                    (at.line, at.column),
                    (typo_at.line, typo_at.column),
                    "`{src}` with `{typo}`: the error is not at the typo"
                );
            }
        }
    }
}
