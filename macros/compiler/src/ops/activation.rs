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
