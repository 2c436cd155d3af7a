//! Losses: `mse(pred, target)`, `l1(pred, target)`, `smooth_l1(pred, target, beta = 1.0)`,
//! `huber(pred, target, delta = 1.0)`, `cross_entropy(logits, labels)`,
//! `nll(log_probs, labels)`, `bce_with_logits(logits, target)`, `bce(probs, target)`. Each
//! reduces to a scalar by the mean, as PyTorch's default `reduction='mean'`.
//!
//! `nll` is PyTorch's `nll_loss` on log-probabilities (`nll(log_softmax(logits), y)` is
//! `cross_entropy(logits, y)` in two steps): the same shapes and labels as `cross_entropy`,
//! its `ignore_index` and `weight`, no label smoothing.
//!
//! The regression losses (`mse`, `l1`, `smooth_l1`, `huber`: PyTorch's `mse_loss`, `l1_loss`,
//! `smooth_l1_loss`, `huber_loss`) take a float target of the prediction's shape and are
//! differentiable in both (a target computed by the model gets a gradient too). `smooth_l1`'s
//! `beta = 0` is `l1`, as in PyTorch, and generates the `l1` kernels.
//!
//! `cross_entropy` takes its classes on the last axis of `[B, C]` and `[B, T, C]` logits, and
//! on axis 1 of `[B, C, H, W]` image logits (PyTorch's per-pixel layout, labels `[B, H, W]`).
//! Its options are PyTorch's `ignore_index`, `label_smoothing = eps` and `weight = (w0, w1,
//! ...)` (constant class weights, baked into the generated code). Without weights and
//! smoothing it calls the plain kernels, with them the `*_with_options` ones. `bce_with_logits`
//! takes PyTorch's `pos_weight` and `weight`, each a number or one number per column of the
//! last axis, likewise constants; `bce` (PyTorch's `binary_cross_entropy` on probabilities,
//! `nn.BCELoss`) its `weight`, and differentiates its target too, as PyTorch does.
//!
//! `cross_entropy(logits, probs)` with a float target of the logits' shape (`[B, C]`,
//! `[B, T, C]`, or image logits `[B, C, H, W]` with the classes on axis 1) is PyTorch's
//! cross-entropy against class probabilities (mixup targets, soft labels, a teacher's
//! per-pixel probabilities): the mean over the rows (or pixels) of `−Σ w_c t'_c
//! log_softmax(x)_c`, `t'` the target after label smoothing, differentiable in both arguments.
//!
//! `kl_div(log_probs, target)` is PyTorch's `kl_div` (`nn.KLDivLoss`) on log-probabilities
//! against a float target of their shape, with its `reduction` (`mean`, the default as in
//! PyTorch; `batchmean`, the divergence per sample; `sum`) and `log_target`; differentiable in
//! both, as PyTorch's.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::{Literal, Span, TokenStream};
use quote::quote;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mse,
    L1,
    SmoothL1,
    Huber,
    CrossEntropy,
    /// PyTorch's `nll_loss`: cross-entropy's label term read off log-probabilities.
    Nll,
    BceWithLogits,
    /// PyTorch's `binary_cross_entropy` on probabilities.
    Bce,
    /// PyTorch's `kl_div` on log-probabilities.
    KlDiv,
}

/// `kl_div`'s `reduction`, PyTorch's names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KlReduction {
    Mean,
    BatchMean,
    Sum,
}

impl Kind {
    /// A loss of the difference between a prediction and a float target of its shape.
    fn is_regression(self) -> bool {
        matches!(self, Kind::Mse | Kind::L1 | Kind::SmoothL1 | Kind::Huber)
    }
}

/// The registry entry of one loss.
pub struct LossSpec {
    kind: Kind,
}
/// `mse(pred, target)`.
pub static MSE: LossSpec = LossSpec { kind: Kind::Mse };
/// `l1(pred, target)`.
pub static L1: LossSpec = LossSpec { kind: Kind::L1 };
/// `smooth_l1(pred, target, beta = 1.0)`.
pub static SMOOTH_L1: LossSpec = LossSpec {
    kind: Kind::SmoothL1,
};
/// `huber(pred, target, delta = 1.0)`.
pub static HUBER: LossSpec = LossSpec { kind: Kind::Huber };
/// `cross_entropy(logits, labels)`.
pub static CROSS_ENTROPY: LossSpec = LossSpec {
    kind: Kind::CrossEntropy,
};
/// `nll(log_probs, labels)`.
pub static NLL: LossSpec = LossSpec { kind: Kind::Nll };
/// `bce_with_logits(logits, target)`.
pub static BCE_WITH_LOGITS: LossSpec = LossSpec {
    kind: Kind::BceWithLogits,
};
/// `bce(probs, target)`.
pub static BCE: LossSpec = LossSpec { kind: Kind::Bce };
/// `kl_div(log_probs, target)`.
pub static KL_DIV: LossSpec = LossSpec { kind: Kind::KlDiv };

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Mse => "mse",
        Kind::L1 => "l1",
        Kind::SmoothL1 => "smooth_l1",
        Kind::Huber => "huber",
        Kind::CrossEntropy => "cross_entropy",
        Kind::Nll => "nll",
        Kind::BceWithLogits => "bce_with_logits",
        Kind::Bce => "bce",
        Kind::KlDiv => "kl_div",
    }
}

impl OpSpec for LossSpec {
    fn name(&self) -> &'static str {
        name(self.kind)
    }
    fn usage(&self) -> &'static str {
        match self.kind {
            Kind::Mse => "mse(pred, target)",
            Kind::L1 => "l1(pred, target)",
            Kind::SmoothL1 => "smooth_l1(pred, target, beta = 1.0)",
            Kind::Huber => "huber(pred, target, delta = 1.0)",
            Kind::CrossEntropy => "cross_entropy(logits, labels)",
            Kind::Nll => "nll(log_softmax(logits), labels)",
            Kind::BceWithLogits => {
                "bce_with_logits(logits, target)` or `bce_with_logits(logits, target, pos_weight = (2.0, 1.0), weight = 0.5)"
            }
            Kind::Bce => "bce(probs, target)` or `bce(probs, target, weight = (2.0, 1.0))",
            Kind::KlDiv => {
                "kl_div(log_softmax(logits), target)` or `kl_div(log_probs, target, reduction = batchmean, log_target = true)"
            }
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        args.tensor(1);
        let (mut ignore_index, mut label_smoothing, mut weight) = (None, 0.0, None);
        let (mut pos_weight, mut threshold) = (None, None);
        let (mut kl_reduction, mut log_target) = (KlReduction::Mean, false);
        match self.kind {
            Kind::Nll => {
                if let Some(e) = args.written_option("label_smoothing") {
                    return Err(syn::Error::new(
                        e.span(),
                        "`nll` reads the label's log-probability alone, as PyTorch's `nll_loss`: label smoothing is an option of `cross_entropy`, which takes the logits themselves (`cross_entropy(logits, y, label_smoothing = 0.1)`)",
                    ));
                }
                ignore_index = args.opt_index("ignore_index")?;
                weight = args.option_expr("weight").map(weight_option).transpose()?;
            }
            Kind::CrossEntropy => {
                ignore_index = args.opt_index("ignore_index")?;
                if let Some(e) = args.option_expr("label_smoothing") {
                    label_smoothing = smoothing_option(e)?;
                }
                weight = args.option_expr("weight").map(weight_option).transpose()?;
            }
            Kind::BceWithLogits => {
                pos_weight = args
                    .option_expr("pos_weight")
                    .map(|e| column_option(e, "pos_weight"))
                    .transpose()?;
                weight = args
                    .option_expr("weight")
                    .map(|e| column_option(e, "weight"))
                    .transpose()?;
            }
            Kind::Bce => {
                if let Some(e) = args.written_option("pos_weight") {
                    return Err(syn::Error::new(
                        e.span(),
                        "`pos_weight` weighs the positive term of `bce_with_logits`, as PyTorch's `BCEWithLogitsLoss` (`nn.BCELoss` has none): write `bce_with_logits(logits, target, pos_weight = ..)` on the logits before the sigmoid",
                    ));
                }
                weight = args
                    .option_expr("weight")
                    .map(|e| column_option(e, "weight"))
                    .transpose()?;
            }
            Kind::KlDiv => {
                if let Some(e) = args.option_expr("reduction") {
                    kl_reduction = reduction_option(e)?;
                }
                log_target = args.opt_bool("log_target", false)?;
            }
            Kind::SmoothL1 => threshold = Some(threshold_option(args, "beta", true)?),
            Kind::Huber => threshold = Some(threshold_option(args, "delta", false)?),
            Kind::Mse | Kind::L1 => {}
        }
        args.finish()?;
        // PyTorch's `smooth_l1_loss` with `beta = 0` is `l1_loss`.
        let (kind, threshold) = match (self.kind, threshold) {
            (Kind::SmoothL1, Some(0.0)) => (Kind::L1, None),
            other => other,
        };
        Ok(Built::Kernel(Box::new(Loss {
            kind,
            ignore_index,
            label_smoothing,
            weight,
            pos_weight,
            threshold,
            kl_reduction,
            log_target,
            soft: std::cell::Cell::new(false),
        })))
    }
}

/// `reduction = mean | batchmean | sum` of `kl_div`.
fn reduction_option(e: &ast::Expr) -> syn::Result<KlReduction> {
    match e {
        ast::Expr::Var(name) if name == "mean" => Ok(KlReduction::Mean),
        ast::Expr::Var(name) if name == "batchmean" => Ok(KlReduction::BatchMean),
        ast::Expr::Var(name) if name == "sum" => Ok(KlReduction::Sum),
        ast::Expr::Var(name) if name == "none" => Err(syn::Error::new(
            name.span(),
            "`kl_div` is a model's loss, a single number: `reduction = none` (one value per element) is not a loss; use `mean`, `batchmean` or `sum`",
        )),
        other => Err(syn::Error::new(
            other.span(),
            "`reduction` is `mean` (the default, PyTorch's: the mean over every element), `batchmean` (the sum over each sample, averaged over the batch: the KL divergence PyTorch recommends) or `sum`, as in `reduction = batchmean`",
        )),
    }
}

/// A number literal's value (`0.5`, `2`; the parser reads `-1` as a negative float), or
/// `None` for anything else.
fn number(e: &ast::Expr) -> Option<f64> {
    match e {
        ast::Expr::Float(v, _) => Some(*v),
        ast::Expr::Int(v, _) => Some(*v as f64),
        _ => None,
    }
}

/// `beta = b` of `smooth_l1` (at least 0; 1 when not given) or `delta = d` of `huber`
/// (positive; 1 when not given), PyTorch's ranges.
fn threshold_option(
    args: &mut CallArgs,
    key: &'static str,
    zero_allowed: bool,
) -> syn::Result<f64> {
    let Some(e) = args.option_expr(key) else {
        return Ok(1.0);
    };
    let range = if zero_allowed {
        "at least 0"
    } else {
        "positive"
    };
    let Some(v) = number(e) else {
        return Err(syn::Error::new(
            e.span(),
            format!("`{key}` takes a number ({range}), as in `{key} = 0.5`"),
        ));
    };
    let meaning = if zero_allowed {
        "where the loss turns from squared to absolute (0 is `l1`)"
    } else {
        "where the loss turns from squared to linear"
    };
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_allowed) {
        return Err(syn::Error::new(
            e.span(),
            format!("`{key}` must be {range}, not {v}: it is the size of difference {meaning}"),
        ));
    }
    Ok(v)
}

/// `label_smoothing = eps`: a number in [0, 1].
fn smoothing_option(e: &ast::Expr) -> syn::Result<f64> {
    let Some(v) = number(e) else {
        return Err(syn::Error::new(
            e.span(),
            "`label_smoothing` takes a number in [0, 1], as in `label_smoothing = 0.1`",
        ));
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(syn::Error::new(
            e.span(),
            format!("`label_smoothing` must be in [0, 1], not {v}: it is the share of the target spread evenly over the classes (0.1 is usual, 0 is none)"),
        ));
    }
    Ok(v)
}

/// `weight = (w0, w1, ...)`: one number per class, none negative and not all 0. The count is
/// checked against the classes by the shape rule.
fn weight_option(e: &ast::Expr) -> syn::Result<ClassWeights> {
    let ast::Expr::Tuple(items, span) = e else {
        return Err(syn::Error::new(
            e.span(),
            "`weight` takes one number per class, in class order, as in `weight = (1.0, 2.0, 0.5)`",
        ));
    };
    let mut values = Vec::with_capacity(items.len());
    for (class, item) in items.iter().enumerate() {
        let Some(v) = number(item) else {
            return Err(syn::Error::new(
                item.span(),
                format!("the weight of class {class} is not a number: `weight` takes number literals, one per class, as in `weight = (1.0, 2.0, 0.5)`"),
            ));
        };
        if v < 0.0 {
            return Err(syn::Error::new(
                item.span(),
                format!("the weight of class {class} is {v}: class weights cannot be negative (0 leaves the class out of the loss)"),
            ));
        }
        // `-0.0` passes the sign check: it is a weight of 0, and is written as one.
        values.push(if v == 0.0 { 0.0 } else { v });
    }
    if !values.is_empty() && values.iter().all(|&v| v == 0.0) {
        return Err(syn::Error::new(
            *span,
            "every class weight is 0: the loss, a mean weighted by the labels' classes, would divide by 0 (give at least one class a positive weight)",
        ));
    }
    Ok(ClassWeights {
        values,
        span: *span,
    })
}

/// `bce_with_logits`'s `pos_weight` and `weight`: a number for every element, or a tuple of
/// one number per column of the last axis; none negative. The count is checked against the
/// columns by the shape rule.
fn column_option(e: &ast::Expr, key: &str) -> syn::Result<ClassWeights> {
    let number = |item: &ast::Expr| {
        number(item).ok_or_else(|| {
            syn::Error::new(
                item.span(),
                format!("`{key}` takes a number, or one number per column of the logits' last axis, as in `{key} = 2.0` or `{key} = (2.0, 1.0, 0.5)`"),
            )
        })
    };
    let (items, span) = match e {
        ast::Expr::Tuple(items, span) => (items.iter().collect::<Vec<_>>(), *span),
        single => (vec![single], single.span()),
    };
    let single = items.len() == 1 && !matches!(e, ast::Expr::Tuple(..));
    let mut values = Vec::with_capacity(items.len());
    for (column, item) in items.into_iter().enumerate() {
        let v = number(item)?;
        if v < 0.0 {
            let which = if single {
                String::new()
            } else {
                format!(" (column {column})")
            };
            return Err(syn::Error::new(
                item.span(),
                format!("`{key}` cannot be negative, but it is {v}{which}: 0 drops what it weighs, 1 is the plain loss"),
            ));
        }
        values.push(if v == 0.0 { 0.0 } else { v });
    }
    if values.is_empty() {
        return Err(syn::Error::new(
            span,
            format!("`{key} = ()` gives no value: give a number, or one per column"),
        ));
    }
    Ok(ClassWeights { values, span })
}

/// `cross_entropy`'s `weight = (...)` (or `bce_with_logits`'s per-column values) as written:
/// the values and the span of their tuple.
struct ClassWeights {
    values: Vec<f64>,
    span: Span,
}

/// A loss kernel.
pub struct Loss {
    kind: Kind,
    /// Cross-entropy only: the label whose positions are left out of the loss and its mean
    /// (PyTorch's `ignore_index`, typically the padding id).
    ignore_index: Option<usize>,
    /// Cross-entropy only: PyTorch's `label_smoothing` (0 when not given).
    label_smoothing: f64,
    /// PyTorch's `weight`: cross-entropy's one per class, or BCE's factor per column.
    weight: Option<ClassWeights>,
    /// BCE only: PyTorch's `pos_weight`, per column.
    pos_weight: Option<ClassWeights>,
    /// `smooth_l1`'s `beta` or `huber`'s `delta`: the size of difference where the loss
    /// turns from squared to linear.
    threshold: Option<f64>,
    /// `kl_div` only: how the sum is reduced.
    kl_reduction: KlReduction,
    /// `kl_div` only: the target holds log-probabilities.
    log_target: bool,
    /// `cross_entropy` only: the target holds class probabilities of the logits' shape
    /// (PyTorch's float target), not labels; set by the shape rule.
    soft: std::cell::Cell<bool>,
}

impl Loss {
    /// Whether the loss needs the kernels with options (class weights or smoothing): without
    /// them it calls the plain ones, as before the options existed.
    fn has_options(&self) -> bool {
        self.label_smoothing != 0.0 || self.weight.is_some() || self.pos_weight.is_some()
    }

    /// `bce`'s weights, `Some(&[..])` or `None`.
    fn bce_weight_tokens(&self) -> TokenStream {
        match &self.weight {
            Some(w) => {
                let values = w.values.iter().map(|&v| Literal::f64_suffixed(v));
                quote!(::core::option::Option::Some(&[#(#values),*]))
            }
            None => quote!(::core::option::Option::None),
        }
    }

    /// `&::kiln::loss::BceOptions { .. }`, with the values as constant slices.
    fn bce_options_tokens(&self) -> TokenStream {
        let slice = |values: &Option<ClassWeights>| match values {
            Some(w) => {
                let values = w.values.iter().map(|&v| Literal::f64_suffixed(v));
                quote!(::core::option::Option::Some(&[#(#values),*]))
            }
            None => quote!(::core::option::Option::None),
        };
        let (pos_weight, weight) = (slice(&self.pos_weight), slice(&self.weight));
        quote! {
            &::kiln::loss::BceOptions {
                pos_weight: #pos_weight,
                weight: #weight,
            }
        }
    }

    /// `&::kiln::loss::KlDivOptions { .. }` for `kl_div` on `input`: `batchmean` divides by
    /// its first axis (a scalar's batch is 1, as PyTorch divides a 0-d input by nothing).
    fn kl_options_tokens(&self, input: &super::Operand) -> TokenStream {
        let reduction = match self.kl_reduction {
            KlReduction::Mean => quote!(::kiln::loss::KlReduction::Mean),
            KlReduction::Sum => quote!(::kiln::loss::KlReduction::Sum),
            KlReduction::BatchMean => {
                let batch = input
                    .dims
                    .first()
                    .cloned()
                    .unwrap_or_else(|| quote!(1usize));
                quote!(::kiln::loss::KlReduction::BatchMean { batch: #batch })
            }
        };
        let log_target = self.log_target;
        quote! {
            &::kiln::loss::KlDivOptions {
                reduction: #reduction,
                log_target: #log_target,
            }
        }
    }

    /// `(batch, classes, pixels)` of `nll`'s input as its kernel takes it: `[B, C, H, W]` per
    /// pixel, and any other rank as rows of classes (one pixel each).
    fn nll_sizes(&self, input: &super::Operand) -> (TokenStream, TokenStream, TokenStream) {
        if input.dims.len() == 4 {
            batch_classes_pixels(input)
        } else {
            let (rows, classes) = rows_and_classes(input);
            (rows, classes, quote!(1usize))
        }
    }

    /// `smooth_l1`'s `beta` or `huber`'s `delta` as an `F` in generated code.
    fn threshold_tokens(&self) -> TokenStream {
        let v = Literal::f64_suffixed(self.threshold.unwrap_or(1.0));
        quote!(F::from_f64(#v))
    }

    /// The gradient of a regression loss with respect to `a`, the other operand `b`: `d_a`
    /// written (or added, with `acc`) into `out`.
    fn regression_backward(
        &self,
        a: &TokenStream,
        b: &TokenStream,
        dl: &TokenStream,
        out: &TokenStream,
        acc: bool,
    ) -> TokenStream {
        match self.kind {
            Kind::Mse => quote! { ::kiln::loss::mse_backward(#a, #b, #dl, #out, #acc); },
            Kind::L1 => quote! { ::kiln::loss::l1_backward(#a, #b, #dl, #out, #acc); },
            Kind::SmoothL1 => {
                let beta = self.threshold_tokens();
                quote! { ::kiln::loss::smooth_l1_backward(#a, #b, #beta, #dl, #out, #acc); }
            }
            Kind::Huber => {
                let delta = self.threshold_tokens();
                quote! { ::kiln::loss::huber_backward(#a, #b, #delta, #dl, #out, #acc); }
            }
            Kind::CrossEntropy | Kind::Nll | Kind::BceWithLogits | Kind::Bce | Kind::KlDiv => {
                unreachable!("called for the regression losses only")
            }
        }
    }

    /// With BCE's options, checks that each has one value or one per column of `pred`'s last
    /// axis.
    fn check_column_counts(&self, pred: &Shape, symbols: &[String]) -> Result<(), OpError> {
        let columns = pred.0.last().copied();
        for (key, values) in [("pos_weight", &self.pos_weight), ("weight", &self.weight)] {
            let Some(w) = values else { continue };
            let n = w.values.len();
            if n == 1 || columns == Some(Dim::Fixed(n)) {
                continue;
            }
            let shown = pred.display(symbols);
            let noun = if self.kind == Kind::Bce {
                "probabilities"
            } else {
                "logits"
            };
            let last = match columns {
                Some(Dim::Fixed(c)) => format!("{c} columns"),
                Some(symbolic) => format!("the symbolic `{}` columns", symbolic.display(symbols)),
                None => "no axes".to_string(),
            };
            return Err(OpError::at(
                w.span,
                format!(
                    "`{key}` gives {n} values, but the {noun} {shown} have {last} on their last axis: give one value per column, or a single number for all"
                ),
            ));
        }
        Ok(())
    }

    /// `&::kiln::loss::CrossEntropyOptions { .. }`, with the weights as a constant slice.
    fn options_tokens(&self) -> TokenStream {
        let ignore = option_tokens(self.ignore_index);
        let weight = match &self.weight {
            Some(w) => {
                let values = w.values.iter().map(|&v| Literal::f64_suffixed(v));
                quote!(::core::option::Option::Some(&[#(#values),*]))
            }
            None => quote!(::core::option::Option::None),
        };
        let eps = Literal::f64_suffixed(self.label_smoothing);
        quote! {
            &::kiln::loss::CrossEntropyOptions {
                ignore: #ignore,
                weight: #weight,
                label_smoothing: #eps,
            }
        }
    }

    /// The shape rule of `cross_entropy` against class probabilities: the logits' own shape,
    /// classes on the last axis (on axis 1 for image logits `[B, C, H, W]`, as with labels),
    /// no `ignore_index` (PyTorch refuses it there), and one weight per class.
    fn soft_target_shape(
        &self,
        pred: &Shape,
        target: &Shape,
        symbols: &[String],
    ) -> Result<(), OpError> {
        let (ps, ts) = (pred.display(symbols), target.display(symbols));
        let class_axis = if pred.rank() == 4 { 1 } else { pred.rank() - 1 };
        if target.rank() + 1 == pred.rank() {
            let classes = pred.0[class_axis].display(symbols);
            return Err(OpError::input(
                1,
                format!("`cross_entropy` takes class labels (integers: declare them as `target y: {ts} classes {classes};`) or class probabilities of the logits' shape {ps}, but this is a float tensor {ts}: labels stored as floats are still labels"),
            ));
        }
        if pred != target {
            let mut labels = pred.0.clone();
            labels.remove(class_axis);
            return Err(OpError::input(
                1,
                format!("`cross_entropy` against class probabilities needs them in the logits' shape {ps}, one probability per class, but these are {ts}: declare the target as {ps}, or give class labels `target y: {} classes N;`", Shape(labels).display(symbols)),
            ));
        }
        if self.ignore_index.is_some() {
            return Err(OpError::call(
                "`ignore_index` leaves out the rows of one class label, and this target holds class probabilities (PyTorch refuses it with them too): drop `ignore_index` (a row of all-zero probabilities adds nothing to the sum, though it still counts in the mean)",
            ));
        }
        match pred.0[class_axis] {
            Dim::Fixed(classes) => self.check_weight_count(classes),
            symbolic => {
                let axis = if class_axis == 1 {
                    "axis 1"
                } else {
                    "last axis"
                };
                Err(OpError::input(
                    0,
                    format!("`cross_entropy` needs a fixed number of classes on the logits' {axis}, but in {ps} it is the symbolic `{}`", symbolic.display(symbols)),
                ))
            }
        }
    }

    /// With `weight`, checks that it has one weight per class.
    fn check_weight_count(&self, classes: usize) -> Result<(), OpError> {
        match &self.weight {
            Some(w) if w.values.len() != classes => Err(OpError::at(
                w.span,
                format!(
                    "`weight` gives {} class weight{} but the labels have {classes} classes: give one weight per class, in class order",
                    w.values.len(),
                    if w.values.len() == 1 { "" } else { "s" }
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Logits `[.., C]` as a matrix: the rows (every leading dim multiplied) and the classes.
fn rows_and_classes(logits: &super::Operand) -> (TokenStream, TokenStream) {
    let (leading, last) = logits.dims.split_at(logits.dims.len() - 1);
    (super::product_of(leading), last[0].clone())
}

/// An `Option<usize>` literal.
fn option_tokens(value: Option<usize>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn scalar() -> ValueInfo {
    ValueInfo {
        shape: Shape(vec![]),
        kind: ValueKind::Float,
    }
}

/// Checks per-pixel labels against `[B, C, H, W]` logits (or log-probabilities): labels
/// `[B, H, W]` with `C` classes, naming the dims that differ; `op` and `noun` name the loss
/// and its input in the messages.
fn per_pixel_labels(
    (op, noun): (&str, &str),
    pred: &Shape,
    target: &Shape,
    classes: usize,
    symbols: &[String],
) -> Result<(), OpError> {
    let (ps, ts) = (pred.display(symbols), target.display(symbols));
    let expected = Shape(vec![pred.0[0], pred.0[2], pred.0[3]]);
    let es = expected.display(symbols);
    if target.rank() != 3 {
        return Err(OpError::input(
            1,
            format!("`{op}` on image {noun} {ps} (classes on axis 1) expects one label per pixel, i.e. labels of shape {es} (the {noun} without the class axis), but these are {ts}, of rank {}: declare them as `target y: {es} classes {classes};`, or to classify whole images pool the logits first, as in `flatten(adaptive_avg_pool2d(logits, 1))`", target.rank()),
        ));
    }
    if *target != expected {
        let names = ["batch", "height", "width"];
        let one = |d: Dim| d.display(symbols);
        let differ: Vec<String> = (0..3)
            .filter(|&i| target.0[i] != expected.0[i])
            .map(|i| {
                format!(
                    "{} is {} in the labels but {} in the {noun}",
                    names[i],
                    one(target.0[i]),
                    one(expected.0[i])
                )
            })
            .collect();
        return Err(OpError::input(
            1,
            format!("`{op}` on image {noun} {ps} (classes on axis 1) expects labels of shape {es} (the {noun} without the class axis), but these are {ts}: {}", differ.join(", ")),
        ));
    }
    if pred.0[1] != Dim::Fixed(classes) {
        return Err(OpError::input(
            0,
            format!("the labels have {classes} classes but these image {noun} {ps} have {} channels (the class axis is 1): make `{{arg0}}` output {classes} channels (e.g. `conv2d(..., {classes}, kernel = 1)`)", pred.0[1].display(symbols)),
        ));
    }
    Ok(())
}

/// Per-pixel logits `[B, C, H, W]` as the spatial kernel takes them: batch, classes and pixels.
fn batch_classes_pixels(logits: &super::Operand) -> (TokenStream, TokenStream, TokenStream) {
    let d = &logits.dims;
    (d[0].clone(), d[1].clone(), super::product_of(&d[2..]))
}

impl Kernel for Loss {
    fn name(&self) -> &'static str {
        name(self.kind)
    }
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.threshold {
            let key = if self.kind == Kind::Huber {
                "delta"
            } else {
                "beta"
            };
            parts.push(format!("{key}={t:?}"));
        }
        if let Some(i) = self.ignore_index {
            parts.push(format!("ignore_index={i}"));
        }
        match self.kl_reduction {
            KlReduction::Mean => {}
            KlReduction::BatchMean => parts.push("reduction=batchmean".to_string()),
            KlReduction::Sum => parts.push("reduction=sum".to_string()),
        }
        if self.log_target {
            parts.push("log_target=true".to_string());
        }
        if self.label_smoothing != 0.0 {
            parts.push(format!("label_smoothing={:?}", self.label_smoothing));
        }
        for (key, values) in [("pos_weight", &self.pos_weight), ("weight", &self.weight)] {
            if let Some(w) = values {
                let values: Vec<String> = w.values.iter().map(|v| format!("{v:?}")).collect();
                parts.push(format!("{key}=({})", values.join(", ")));
            }
        }
        parts.join(", ")
    }
    fn ignored_label(&self) -> Option<usize> {
        self.ignore_index
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.name();
        require_float(op, 0, inputs[0])?;
        let (pred, target) = (&inputs[0].shape, &inputs[1].shape);
        let (ps, ts) = (pred.display(symbols), target.display(symbols));
        let noun = if matches!(self.kind, Kind::Nll | Kind::KlDiv) {
            "log-probabilities"
        } else {
            "logits"
        };
        match (self.kind, inputs[1].kind) {
            (Kind::CrossEntropy | Kind::Nll, ValueKind::Labels { classes }) if pred.rank() == 4 => {
                per_pixel_labels((op, noun), pred, target, classes, symbols)?;
                self.check_weight_count(classes)?;
                Ok(scalar())
            }
            (Kind::CrossEntropy | Kind::Nll, ValueKind::Labels { classes }) => {
                if pred.rank() < 2 {
                    return Err(OpError::input(
                        0,
                        format!("`{op}` expects {noun} of shape [batch, classes] (or [batch, time, classes], or [batch, classes, height, width]), but these are {ps}"),
                    ));
                }
                let leading = Shape(pred.0[..pred.rank() - 1].to_vec());
                if *target != leading {
                    // PyTorch's layout for sequences, [B, C, L] with labels [B, L], is kiln's
                    // [B, T, C] transposed: say so when the shapes fit it.
                    let classes_first = pred.rank() == 3
                        && pred.0[1] == Dim::Fixed(classes)
                        && target.0 == [pred.0[0], pred.0[2]];
                    let hint = if classes_first {
                        format!(
                            "; these {noun} have the {classes} classes on axis 1, as PyTorch's `{op}` takes them ([batch, classes, length]), but kiln takes sequence {noun} as [batch, length, classes]: write `{op}(transpose({{arg0}}, 1, 2), {{arg1}})`"
                        )
                    } else {
                        String::new()
                    };
                    return Err(OpError::input(
                        1,
                        format!(
                            "`{op}` expects one label per row of the {noun} {ps}, i.e. labels of shape {}, but these are {ts}{hint}",
                            leading.display(symbols)
                        ),
                    ));
                }
                let columns = pred.0[pred.rank() - 1];
                if columns != Dim::Fixed(classes) {
                    return Err(OpError::input(
                        0,
                        format!("the labels have {classes} classes but these {noun} {ps} have {} columns: make `{{arg0}}` output {classes} features (e.g. `linear(..., {classes})`)", columns.display(symbols)),
                    ));
                }
                self.check_weight_count(classes)?;
                Ok(scalar())
            }
            (Kind::CrossEntropy | Kind::Nll, ValueKind::Tokens { vocab }) => Err(OpError::input(
                1,
                format!("`{op}` takes class labels declared as a target, but this is an input of token ids: declare the next tokens as `target next: {ts} classes {vocab};`"),
            )),
            (Kind::CrossEntropy | Kind::Nll, ValueKind::Lengths { .. }) => Err(OpError::input(
                1,
                format!("`{op}` takes class labels, but these are sequence lengths: declare the labels as `target y: {} classes N;`", Shape(pred.0[..pred.rank().saturating_sub(1)].to_vec()).display(symbols)),
            )),
            (Kind::CrossEntropy, ValueKind::Float) if pred.rank() >= 2 => {
                self.soft_target_shape(pred, target, symbols)?;
                self.soft.set(true);
                Ok(scalar())
            }
            (Kind::CrossEntropy | Kind::Nll, ValueKind::Float) => Err(OpError::input(
                1,
                format!("`{op}` needs integer class labels as its target, but this is a float tensor {ts}: declare it as `target y: [B] classes N;` (for float targets use `mse` or `bce_with_logits`)"),
            )),
            (_, kind @ (ValueKind::Labels { .. } | ValueKind::Tokens { .. } | ValueKind::Lengths { .. })) => Err(OpError::input(
                1,
                format!("`{op}` needs a float target of the same shape as the prediction {ps}, but this holds {}: use `cross_entropy(logits, labels)` for class labels, or declare a float target `target y: {ps};`", kind.describe()),
            )),
            (_, ValueKind::Float) => {
                if pred != target {
                    return Err(OpError::input(
                        1,
                        format!("`{op}` needs the prediction and the target to have the same shape, but the prediction is {ps} and the target is {ts}: make the prediction {ts}, or declare the target as {ps}"),
                    ));
                }
                self.check_column_counts(pred, symbols)?;
                Ok(scalar())
            }
        }
    }
    fn differentiable(&self, input: usize) -> bool {
        // PyTorch's `binary_cross_entropy`, `kl_div` and `cross_entropy` on probabilities
        // also differentiate their (soft) target.
        input == 0
            || self.kind.is_regression()
            || matches!(self.kind, Kind::Bce | Kind::KlDiv)
            || self.soft.get()
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true, true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (p, t, out) = (&cx.inputs[0].data, &cx.inputs[1].data, &cx.output.first);
        match self.kind {
            Kind::Mse => quote! { #out = ::kiln::loss::mse(#p, #t); },
            Kind::L1 => quote! { #out = ::kiln::loss::l1(#p, #t); },
            Kind::SmoothL1 => {
                let beta = self.threshold_tokens();
                quote! { #out = ::kiln::loss::smooth_l1(#p, #t, #beta); }
            }
            Kind::Huber => {
                let delta = self.threshold_tokens();
                quote! { #out = ::kiln::loss::huber(#p, #t, #delta); }
            }
            Kind::BceWithLogits if self.has_options() => {
                let options = self.bce_options_tokens();
                quote! { #out = ::kiln::loss::bce_with_logits_with_options(#p, #t, #options); }
            }
            Kind::BceWithLogits => quote! { #out = ::kiln::loss::bce_with_logits(#p, #t); },
            Kind::Bce => {
                let weight = self.bce_weight_tokens();
                let layer = &cx.layer_name;
                quote! {
                    ::kiln::loss::check_probabilities(#p, #layer)?;
                    #out = ::kiln::loss::bce(#p, #t, #weight);
                }
            }
            Kind::KlDiv => {
                let options = self.kl_options_tokens(&cx.inputs[0]);
                quote! { #out = ::kiln::loss::kl_div(#p, #t, #options); }
            }
            Kind::Nll => {
                let (batch, classes, pixels) = self.nll_sizes(&cx.inputs[0]);
                let options = self.options_tokens();
                quote! { #out = ::kiln::loss::nll(#p, #batch, #classes, #pixels, #t, #options); }
            }
            Kind::CrossEntropy if self.soft.get() && cx.inputs[0].dims.len() == 4 => {
                let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                let options = self.options_tokens();
                quote! {
                    #out = ::kiln::loss::cross_entropy_soft_spatial(#p, #batch, #classes, #pixels, #t, #options);
                }
            }
            Kind::CrossEntropy if self.soft.get() => {
                let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                let options = self.options_tokens();
                quote! { #out = ::kiln::loss::cross_entropy_soft(#p, #rows, #classes, #t, #options); }
            }
            Kind::CrossEntropy if cx.inputs[0].dims.len() == 4 && self.has_options() => {
                let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                let options = self.options_tokens();
                quote! {
                    #out = ::kiln::loss::cross_entropy_spatial_with_options(#p, #batch, #classes, #pixels, #t, #options);
                }
            }
            Kind::CrossEntropy if cx.inputs[0].dims.len() == 4 => {
                let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                let ignore = option_tokens(self.ignore_index);
                quote! {
                    #out = ::kiln::loss::cross_entropy_spatial(#p, #batch, #classes, #pixels, #t, #ignore);
                }
            }
            Kind::CrossEntropy if self.has_options() => {
                let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                let options = self.options_tokens();
                quote! {
                    #out = ::kiln::loss::cross_entropy_with_options(#p, #rows, #classes, #t, #options);
                }
            }
            Kind::CrossEntropy => {
                let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                match self.ignore_index {
                    None => quote! { #out = ::kiln::loss::cross_entropy(#p, #rows, #classes, #t); },
                    Some(ig) => quote! {
                        #out = ::kiln::loss::cross_entropy_ignore(#p, #rows, #classes, #t, Some(#ig));
                    },
                }
            }
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (p, t, dl) = (&cx.inputs[0].data, &cx.inputs[1].data, &cx.d_output_first);
        let mut code = TokenStream::new();
        if self.kind.is_regression() {
            // The gradient is odd in `pred − target`: the target's is the prediction's kernel
            // with the two swapped.
            for (d, (a, b)) in cx.d_inputs.iter().zip([(p, t), (t, p)]) {
                if let Some(d) = d {
                    code.extend(self.regression_backward(a, b, dl, &d.data, d.accumulate));
                }
            }
            return code;
        }
        if self.kind == Kind::Bce {
            let weight = self.bce_weight_tokens();
            for (d, kernel) in cx.d_inputs.iter().zip([
                quote!(::kiln::loss::bce_backward),
                quote!(::kiln::loss::bce_target_backward),
            ]) {
                if let Some(d) = d {
                    let (out, acc) = (&d.data, d.accumulate);
                    code.extend(quote! { #kernel(#p, #t, #weight, #dl, #out, #acc); });
                }
            }
            return code;
        }
        if self.soft.get() {
            let options = self.options_tokens();
            let (sizes, kernels) = if cx.inputs[0].dims.len() == 4 {
                let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                (
                    quote!(#batch, #classes, #pixels),
                    [
                        quote!(::kiln::loss::cross_entropy_soft_spatial_backward),
                        quote!(::kiln::loss::cross_entropy_soft_spatial_target_backward),
                    ],
                )
            } else {
                let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                (
                    quote!(#rows, #classes),
                    [
                        quote!(::kiln::loss::cross_entropy_soft_backward),
                        quote!(::kiln::loss::cross_entropy_soft_target_backward),
                    ],
                )
            };
            for (d, kernel) in cx.d_inputs.iter().zip(kernels) {
                if let Some(d) = d {
                    let (out, acc) = (&d.data, d.accumulate);
                    code.extend(quote! {
                        #kernel(#p, #sizes, #t, #options, #dl, #out, #acc);
                    });
                }
            }
            return code;
        }
        if self.kind == Kind::KlDiv {
            let options = self.kl_options_tokens(&cx.inputs[0]);
            for (d, kernel) in cx.d_inputs.iter().zip([
                quote!(::kiln::loss::kl_div_backward),
                quote!(::kiln::loss::kl_div_target_backward),
            ]) {
                if let Some(d) = d {
                    let (out, acc) = (&d.data, d.accumulate);
                    code.extend(quote! { #kernel(#p, #t, #options, #dl, #out, #acc); });
                }
            }
            return code;
        }
        if let Some(dp) = &cx.d_inputs[0] {
            let (dpd, acc) = (&dp.data, dp.accumulate);
            code.extend(match self.kind {
                Kind::Mse | Kind::L1 | Kind::SmoothL1 | Kind::Huber | Kind::Bce | Kind::KlDiv => {
                    unreachable!("the regression losses, `bce` and `kl_div` return above")
                }
                Kind::BceWithLogits if self.has_options() => {
                    let options = self.bce_options_tokens();
                    quote! { ::kiln::loss::bce_with_logits_with_options_backward(#p, #t, #options, #dl, #dpd, #acc); }
                }
                Kind::BceWithLogits => {
                    quote! { ::kiln::loss::bce_with_logits_backward(#p, #t, #dl, #dpd, #acc); }
                }
                Kind::Nll => {
                    let (batch, classes, pixels) = self.nll_sizes(&cx.inputs[0]);
                    let options = self.options_tokens();
                    quote! {
                        ::kiln::loss::nll_backward(#p, #batch, #classes, #pixels, #t, #options, #dl, #dpd, #acc);
                    }
                }
                Kind::CrossEntropy if cx.inputs[0].dims.len() == 4 && self.has_options() => {
                    let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                    let options = self.options_tokens();
                    quote! {
                        ::kiln::loss::cross_entropy_spatial_with_options_backward(#p, #batch, #classes, #pixels, #t, #options, #dl, #dpd, #acc);
                    }
                }
                Kind::CrossEntropy if self.has_options() => {
                    let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                    let options = self.options_tokens();
                    quote! {
                        ::kiln::loss::cross_entropy_with_options_backward(#p, #rows, #classes, #t, #options, #dl, #dpd, #acc);
                    }
                }
                Kind::CrossEntropy if cx.inputs[0].dims.len() == 4 => {
                    let (batch, classes, pixels) = batch_classes_pixels(&cx.inputs[0]);
                    let ignore = option_tokens(self.ignore_index);
                    quote! {
                        ::kiln::loss::cross_entropy_spatial_backward(#p, #batch, #classes, #pixels, #t, #ignore, #dl, #dpd, #acc);
                    }
                }
                Kind::CrossEntropy => {
                    let (rows, classes) = rows_and_classes(&cx.inputs[0]);
                    match self.ignore_index {
                        None => quote! { ::kiln::loss::cross_entropy_backward(#p, #rows, #classes, #t, #dl, #dpd, #acc); },
                        Some(ig) => quote! {
                            ::kiln::loss::cross_entropy_ignore_backward(#p, #rows, #classes, #t, Some(#ig), #dl, #dpd, #acc);
                        },
                    }
                }
            });
        }
        code
    }
}
