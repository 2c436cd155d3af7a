//! Elementwise activations and math functions. Each is a term over its one input; the
//! compiler fuses it with its neighbours and derives its derivative (see [`crate::expr`]).

use super::{Built, CallArgs, OpSpec};
use crate::expr::{Arena, Func, TermId};

/// A one-input elementwise op defined by its term.
pub struct Unary {
    name: &'static str,
    usage: &'static str,
    term: fn(&mut Arena, TermId) -> TermId,
}

impl OpSpec for Unary {
    fn name(&self) -> &'static str {
        self.name
    }
    fn usage(&self) -> &'static str {
        self.usage
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        args.finish()?;
        let term = self.term;
        Ok(Built::Pointwise(Box::new(move |a, x| term(a, x[0]))))
    }
}

fn relu(a: &mut Arena, x: TermId) -> TermId {
    let zero = a.constant_of(0.0);
    a.select(x, x, zero)
}

/// `relu(x)`: `max(x, 0)`; its derivative at 0 is 0, as in PyTorch.
pub static RELU: Unary = Unary {
    name: "relu",
    usage: "relu(x)",
    term: relu,
};
/// `sigmoid(x)`: `1 / (1 + e^-x)`, computed without overflow.
pub static SIGMOID: Unary = Unary {
    name: "sigmoid",
    usage: "sigmoid(x)",
    term: |a, x| a.call(Func::Sigmoid, x),
};
/// `tanh(x)`.
pub static TANH: Unary = Unary {
    name: "tanh",
    usage: "tanh(x)",
    term: |a, x| a.call(Func::Tanh, x),
};
/// `softplus(x)`: `ln(1 + e^x)`, computed without overflow.
pub static SOFTPLUS: Unary = Unary {
    name: "softplus",
    usage: "softplus(x)",
    term: |a, x| a.call(Func::Softplus, x),
};
/// `exp(x)`.
pub static EXP: Unary = Unary {
    name: "exp",
    usage: "exp(x)",
    term: |a, x| a.call(Func::Exp, x),
};
/// `log(x)`: the natural logarithm.
pub static LOG: Unary = Unary {
    name: "log",
    usage: "log(x)",
    term: |a, x| a.call(Func::Ln, x),
};
/// `sqrt(x)`.
pub static SQRT: Unary = Unary {
    name: "sqrt",
    usage: "sqrt(x)",
    term: |a, x| a.call(Func::Sqrt, x),
};
/// `square(x)`: `x * x`.
pub static SQUARE: Unary = Unary {
    name: "square",
    usage: "square(x)",
    term: |a, x| a.mul(x, x),
};

/// `silu(x)`: `x * sigmoid(x)` (PyTorch's `nn.SiLU`, also called swish).
pub static SILU: Unary = Unary {
    name: "silu",
    usage: "silu(x)",
    term: |a, x| {
        let s = a.call(Func::Sigmoid, x);
        a.mul(x, s)
    },
};

/// `min(max(x, 0), 6)`, written so that a NaN `x` stays NaN (it reaches the inner `relu`).
/// The derivative is 1 strictly between 0 and 6; at 6 itself it is 1 where PyTorch's kernel
/// takes 0, a difference only at that one point.
fn relu6(a: &mut Arena, x: TermId) -> TermId {
    let six = a.constant_of(6.0);
    let over = a.sub(x, six);
    let r = relu(a, x);
    a.select(over, six, r)
}

/// `relu6(x)`: `min(max(x, 0), 6)` (PyTorch's `nn.ReLU6`, MobileNetV2's activation).
pub static RELU6: Unary = Unary {
    name: "relu6",
    usage: "relu6(x)",
    term: relu6,
};

/// `relu6(x + 3) / 6`. At `x = 3` exactly its derivative is 1/6 (relu6's at 6), where
/// PyTorch's kernel gives 0.
fn hardsigmoid(a: &mut Arena, x: TermId) -> TermId {
    let three = a.constant_of(3.0);
    let shifted = a.add(x, three);
    let r = relu6(a, shifted);
    let sixth = a.constant_of(1.0 / 6.0);
    a.mul(sixth, r)
}

/// `hardsigmoid(x)`: `relu6(x + 3) / 6` (PyTorch's `nn.Hardsigmoid`).
pub static HARDSIGMOID: Unary = Unary {
    name: "hardsigmoid",
    usage: "hardsigmoid(x)",
    term: hardsigmoid,
};

/// `hardswish(x)`: `x * relu6(x + 3) / 6` (PyTorch's `nn.Hardswish`, MobileNetV3's). Its
/// derivative is the formula's: at `x = -3` exactly it is 0, where PyTorch's kernel gives
/// -0.5 (the right-hand limit).
pub static HARDSWISH: Unary = Unary {
    name: "hardswish",
    usage: "hardswish(x)",
    term: |a, x| {
        let h = hardsigmoid(a, x);
        a.mul(x, h)
    },
};

/// `gelu(x)`: the exact form `x/2 * (1 + erf(x/sqrt 2))`, PyTorch's default (not the tanh
/// approximation). Its derivative `Phi(x) + x phi(x)` is derived, not written.
pub static GELU: Unary = Unary {
    name: "gelu",
    usage: "gelu(x)",
    term: gelu,
};

fn gelu(a: &mut Arena, x: TermId) -> TermId {
    let inv_sqrt2 = a.constant_of(std::f64::consts::FRAC_1_SQRT_2);
    let u = a.mul(inv_sqrt2, x);
    let erf = a.call(Func::Erf, u);
    let one = a.constant_of(1.0);
    let cdf = a.add(one, erf);
    let half = a.constant_of(0.5);
    let half_x = a.mul(half, x);
    a.mul(half_x, cdf)
}

/// `|x|` as `if -x > 0 { -x } else { relu(x) }`: a NaN stays NaN (it reaches `relu`), and the
/// derivative at 0 is 0, as PyTorch's `sgn(0)`.
fn abs(a: &mut Arena, x: TermId) -> TermId {
    let neg = a.neg(x);
    let r = relu(a, x);
    a.select(neg, neg, r)
}

/// `abs(x)`: `|x|`; its derivative at 0 is 0, as in PyTorch.
pub static ABS: Unary = Unary {
    name: "abs",
    usage: "abs(x)",
    term: abs,
};

/// `alpha · (e^x − 1)` where `x ≤ 0`, `x` elsewhere; at 0 the derivative is `alpha`, as in
/// PyTorch's kernel (which tests `x <= 0`).
fn elu(a: &mut Arena, x: TermId, alpha: f64) -> TermId {
    let e = a.call(Func::Exp, x);
    let one = a.constant_of(1.0);
    let em1 = a.sub(e, one);
    let al = a.constant_of(alpha);
    let neg = a.mul(al, em1);
    a.select(x, x, neg)
}

/// PyTorch's `nn.SELU` constants.
const SELU_ALPHA: f64 = 1.6732632423543772848170429916717;
const SELU_SCALE: f64 = 1.0507009873554804934193349852946;

/// `selu(x)`: `scale · elu(x, alpha)` with PyTorch's `nn.SELU` constants.
pub static SELU: Unary = Unary {
    name: "selu",
    usage: "selu(x)",
    term: |a, x| {
        let e = elu(a, x, SELU_ALPHA);
        let scale = a.constant_of(SELU_SCALE);
        a.mul(scale, e)
    },
};

/// `mish(x)`: `x · tanh(softplus(x))` (PyTorch's `nn.Mish`).
pub static MISH: Unary = Unary {
    name: "mish",
    usage: "mish(x)",
    term: |a, x| {
        let sp = a.call(Func::Softplus, x);
        let t = a.call(Func::Tanh, sp);
        a.mul(x, t)
    },
};

/// `softsign(x)`: `x / (1 + |x|)` (PyTorch's `nn.Softsign`).
pub static SOFTSIGN: Unary = Unary {
    name: "softsign",
    usage: "softsign(x)",
    term: |a, x| {
        let m = abs(a, x);
        let one = a.constant_of(1.0);
        let d = a.add(one, m);
        a.div(x, d)
    },
};

/// `logsigmoid(x)`: `log σ(x) = −softplus(−x)`, without overflow (PyTorch's `nn.LogSigmoid`).
pub static LOGSIGMOID: Unary = Unary {
    name: "logsigmoid",
    usage: "logsigmoid(x)",
    term: |a, x| {
        let neg = a.neg(x);
        let sp = a.call(Func::Softplus, neg);
        a.neg(sp)
    },
};

/// `x` clamped to `[lo, hi]` (either bound may be absent), as PyTorch's `clamp`: the derivative
/// is 1 strictly inside the interval and 0 at the bounds and outside, and a NaN stays NaN.
/// Each bound is `if x − lo > 0 { x } else { lo + relu(x − lo) }`: the branch keeps `x` exactly
/// inside; the other is `lo` where `x ≤ lo` (`relu` of a non-positive number is 0, with
/// derivative 0) and NaN where `x` is NaN (`relu` keeps it).
fn clamp(a: &mut Arena, x: TermId, lo: Option<f64>, hi: Option<f64>) -> TermId {
    let mut y = x;
    if let Some(lo) = lo {
        let l = a.constant_of(lo);
        let above = a.sub(y, l);
        let r = relu(a, above);
        let floor = a.add(l, r);
        y = a.select(above, y, floor);
    }
    if let Some(hi) = hi {
        let h = a.constant_of(hi);
        let below = a.sub(h, y);
        let r = relu(a, below);
        let ceiling = a.sub(h, r);
        y = a.select(below, y, ceiling);
    }
    y
}

/// `elu(x)`, `elu(x, alpha = 0.5)`: PyTorch's `nn.ELU` (alpha defaults to 1).
pub struct Elu;
/// The registry entry.
pub static ELU: Elu = Elu;

impl OpSpec for Elu {
    fn name(&self) -> &'static str {
        "elu"
    }
    fn usage(&self) -> &'static str {
        "elu(x)` or `elu(x, alpha = 1.0)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let alpha = args.opt_float("alpha")?.unwrap_or(1.0);
        args.finish()?;
        Ok(Built::Pointwise(Box::new(move |a, x| elu(a, x[0], alpha))))
    }
}

/// `clamp(x, min = a, max = b)` (either bound alone too) and `hardtanh(x)` (`clamp` to
/// `[min_val, max_val]`, by default `[-1, 1]`, PyTorch's `nn.Hardtanh`); at the bounds the
/// derivative is 0, as PyTorch's.
pub struct Clamp {
    hardtanh: bool,
}
/// `clamp`.
pub static CLAMP: Clamp = Clamp { hardtanh: false };
/// `hardtanh`.
pub static HARDTANH: Clamp = Clamp { hardtanh: true };

impl OpSpec for Clamp {
    fn name(&self) -> &'static str {
        if self.hardtanh {
            "hardtanh"
        } else {
            "clamp"
        }
    }
    fn usage(&self) -> &'static str {
        if self.hardtanh {
            "hardtanh(x)` or `hardtanh(x, min_val = -1.0, max_val = 1.0)"
        } else {
            "clamp(x, min = -1.0, max = 1.0)` (or one of the bounds"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let (lo, hi) = if self.hardtanh {
            (
                Some(args.opt_float("min_val")?.unwrap_or(-1.0)),
                Some(args.opt_float("max_val")?.unwrap_or(1.0)),
            )
        } else {
            (args.opt_float("min")?, args.opt_float("max")?)
        };
        args.finish()?;
        match (lo, hi) {
            (None, None) => {
                return Err(syn::Error::new(
                    args.span(),
                    "`clamp` needs a bound: `clamp(x, min = 0.0)`, `clamp(x, max = 1.0)` or both",
                ))
            }
            (Some(lo), Some(hi)) if lo > hi => {
                return Err(syn::Error::new(
                    args.span(),
                    format!(
                        "`{}` would clamp to an empty range: the lower bound {lo} is above the upper bound {hi}",
                        self.name()
                    ),
                ))
            }
            _ => {}
        }
        Ok(Built::Pointwise(Box::new(move |a, x| {
            clamp(a, x[0], lo, hi)
        })))
    }
}

/// `pow(x, p)`: `x^p` for a constant real `p` (PyTorch's `torch.pow(x, p)`, `x ** p`). The
/// exponents PyTorch computes without `pow` are written as it writes them (`2`: `x·x`, `3`:
/// `x·x·x`, `0.5`: `sqrt`, `-0.5`: `1/sqrt`, `-1`: `1/x`, `-2`: `1/(x·x)`, `1`: `x`, `0`: 1);
/// any other exponent calls `pow`, with the derivative `p·x^(p−1)`.
pub struct Pow;
/// The registry entry.
pub static POW: Pow = Pow;

impl OpSpec for Pow {
    fn name(&self) -> &'static str {
        "pow"
    }
    fn usage(&self) -> &'static str {
        "pow(x, 3)` or `pow(x, 1.5)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let p = args.float(1, "the exponent")?;
        args.finish()?;
        if !p.is_finite() {
            return Err(syn::Error::new(
                args.raw(1).span(),
                format!("the exponent must be a finite number, not {p}"),
            ));
        }
        Ok(Built::Pointwise(Box::new(move |a, x| power(a, x[0], p))))
    }
}

fn power(a: &mut Arena, x: TermId, p: f64) -> TermId {
    let one = a.constant_of(1.0);
    match p {
        0.0 => one,
        1.0 => x,
        2.0 => a.mul(x, x),
        3.0 => {
            let sq = a.mul(x, x);
            a.mul(sq, x)
        }
        0.5 => a.call(Func::Sqrt, x),
        -0.5 => {
            let root = a.call(Func::Sqrt, x);
            a.div(one, root)
        }
        -1.0 => a.div(one, x),
        -2.0 => {
            let sq = a.mul(x, x);
            a.div(one, sq)
        }
        _ => a.call(Func::Pow(p.to_bits()), x),
    }
}

/// `maximum(a, b)` and `minimum(a, b)`: PyTorch's `torch.maximum` / `torch.minimum`, elementwise
/// over two tensors of one shape, or a tensor and a number. Where the two are equal each gets
/// half the gradient, as in PyTorch; a NaN on either side gives NaN.
pub struct Extremum {
    max: bool,
}
/// `maximum`.
pub static MAXIMUM: Extremum = Extremum { max: true };
/// `minimum`.
pub static MINIMUM: Extremum = Extremum { max: false };

impl OpSpec for Extremum {
    fn name(&self) -> &'static str {
        if self.max {
            "maximum"
        } else {
            "minimum"
        }
    }
    fn usage(&self) -> &'static str {
        if self.max {
            "maximum(a, b)` or `maximum(x, 0.5)"
        } else {
            "minimum(a, b)` or `minimum(x, 0.5)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        // Each operand is a tensor (the next term the closure receives) or a number.
        let mut operands = [None, None];
        for (i, slot) in operands.iter_mut().enumerate() {
            *slot = match args.raw(i) {
                crate::ast::Expr::Float(v, _) => Some(*v),
                crate::ast::Expr::Int(v, _) => Some(*v as f64),
                _ => {
                    args.tensor(i);
                    None
                }
            };
        }
        args.finish()?;
        if let [Some(_), Some(_)] = operands {
            return Err(syn::Error::new(
                args.span(),
                format!(
                    "`{}` of two numbers is a constant: write the number",
                    self.name()
                ),
            ));
        }
        let max = self.max;
        Ok(Built::Pointwise(Box::new(move |a, x| {
            let mut tensors = x.iter();
            let mut operand = |value: Option<f64>| match value {
                Some(v) => a.constant_of(v),
                None => *tensors.next().expect("one term per tensor operand"),
            };
            let (p, q) = (operand(operands[0]), operand(operands[1]));
            extremum(a, p, q, max)
        })))
    }
}

/// `if p − q > 0 { p } else if q − p > 0 { q } else { (p + q) / 2 }` for the maximum, and
/// the same with each difference's sign turned for the minimum: the tie's branch has PyTorch's
/// half gradients, and is the NaN branch too.
fn extremum(a: &mut Arena, p: TermId, q: TermId, max: bool) -> TermId {
    let (p_over_q, q_over_p) = (a.sub(p, q), a.sub(q, p));
    let (p_wins, q_wins) = if max {
        (p_over_q, q_over_p)
    } else {
        (q_over_p, p_over_q)
    };
    let sum = a.add(p, q);
    let half = a.constant_of(0.5);
    let tie = a.mul(half, sum);
    let inner = a.select(q_wins, q, tie);
    a.select(p_wins, p, inner)
}

/// `leaky_relu(x, slope)`: `x` where `x > 0`, `slope * x` elsewhere (slope defaults to 0.01,
/// as in PyTorch).
pub struct LeakyRelu;
/// The registry entry.
pub static LEAKY_RELU: LeakyRelu = LeakyRelu;

impl OpSpec for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky_relu"
    }
    fn usage(&self) -> &'static str {
        "leaky_relu(x, 0.01)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 2)?;
        args.tensor(0);
        let positional = if args.has(1) {
            Some(args.float(1, "the negative slope")?)
        } else {
            None
        };
        let option = args.opt_float("slope")?;
        args.finish()?;
        if positional.is_some() && option.is_some() {
            return Err(syn::Error::new(
                args.span(),
                "give the slope once: `leaky_relu(x, 0.1)`",
            ));
        }
        let slope = positional.or(option).unwrap_or(0.01);
        Ok(Built::Pointwise(Box::new(move |a, x| {
            let s = a.constant_of(slope);
            let neg = a.mul(s, x[0]);
            a.select(x[0], x[0], neg)
        })))
    }
}
