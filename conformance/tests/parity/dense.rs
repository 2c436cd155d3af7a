//! PyTorch parity for the dense fixture cases (`tests/fixtures/<case>/`, see its README):
//! linear, relu, tanh, sigmoid, gelu, softplus, leaky_relu, square, elementwise arithmetic,
//! softmax, log_softmax, MSE, cross-entropy and BCE with logits, in f64 and f32.
//!
//! For each case and dtype the model is declared with `model!` step by step as in the
//! manifest's `forward` list, loaded from `param.*`, and checked against PyTorch: every forward
//! value `output.*` (after `loss_and_grad`, from the workspace, and from `forward`), the
//! `loss`, every parameter gradient `grad.<layer>.*`, three steps of every optimizer in the
//! manifest (`after.<opt>.step<k>.*`), and loading the PyTorch `state_dict` file. The fixtures'
//! `grad.input.*` (d loss / d input) are not compared: kiln computes no gradient with respect
//! to the input data (the backward pass is pruned to what the parameters need).
//!
//! Run with `--nocapture` to see the largest errors per category.

use crate::common::Fixture;
use kiln::ndarray::Array2;
use kiln::Float;

kiln::model! {
    /// `linreg`: pred = linear(x), 1 -> 1; MSE.
    pub struct LinReg {
        input x: [B, 1];
        target y: [B, 1];
        let linear = linear(x, 1);
        output linear;
        loss mse(linear, y);
    }
}

kiln::model! {
    /// `mlp_relu`: 8 -> 16 relu -> 16 relu -> 4; cross-entropy on integer labels.
    pub struct MlpRelu {
        input x: [B, 8];
        target label: [B] classes 4;
        let fc1 = linear(x, 16);
        let h1 = relu(fc1);
        let fc2 = linear(h1, 16);
        let h2 = relu(fc2);
        let fc3 = linear(h2, 4);
        output fc1, h1, fc2, h2, fc3;
        loss cross_entropy(fc3, label);
    }
}

kiln::model! {
    /// `mlp_act`: 6 -> 10 tanh -> 10 sigmoid -> 3; MSE.
    pub struct MlpAct {
        input x: [B, 6];
        target y: [B, 3];
        let fc1 = linear(x, 10);
        let h1 = tanh(fc1);
        let fc2 = linear(h1, 10);
        let h2 = sigmoid(fc2);
        let fc3 = linear(h2, 3);
        output fc1, h1, fc2, h2, fc3;
        loss mse(fc3, y);
    }
}

kiln::model! {
    /// `bce`: 5 -> 7 relu -> 1; BCE with logits on 0/1 targets.
    pub struct Bce {
        input x: [B, 5];
        target y: [B, 1];
        let fc1 = linear(x, 7);
        let h1 = relu(fc1);
        let fc2 = linear(h1, 1);
        output fc1, h1, fc2;
        loss bce_with_logits(fc2, y);
    }
}

kiln::model! {
    /// `more_activations` (`gen_vision.py`): abs, elu, selu, mish, softsign, logsigmoid,
    /// clamp, hardtanh, maximum (with ties) and minimum on a scaled linear layer;
    /// cross-entropy.
    pub struct MoreActivations {
        input x: [B, 6];
        target label: [B] classes 3;
        let fc1 = linear(x, 8);
        let z = 3.0 * fc1;
        let a = abs(z);
        let e = elu(z, alpha = 0.5);
        let s = selu(z);
        let mi = mish(z);
        let ss = softsign(z);
        let ls = logsigmoid(z);
        let c = clamp(z, min = -1.0, max = 0.5);
        let ht = hardtanh(z);
        let mx = maximum(z, ht);
        let mn = minimum(z, 0.25);
        let h = 0.1 * a + e + s * ss + mi - ls + c * ht + 0.3 * mx + mn;
        let fc2 = linear(h, 3);
        output z, a, e, s, mi, ss, ls, c, ht, mx, mn, h, fc2;
        loss cross_entropy(fc2, label);
    }
}

kiln::model! {
    /// `pow_ops` (`gen_vision.py`): `pow` with PyTorch's special exponents (2, 3, -0.5, -1)
    /// and general ones (1.5, 2.5); cross-entropy.
    pub struct PowOps {
        input x: [B, 6];
        target label: [B] classes 3;
        let fc1 = linear(x, 8);
        let u = sigmoid(fc1) + 0.2;
        let a = pow(u, 1.5);
        let b = pow(fc1, 3);
        let c = pow(u, -0.5);
        let d = pow(u, 2.5);
        let e = pow(fc1, 2);
        let f = pow(u, -1);
        let h = a + 0.1 * b + c + d - e + 0.5 * f;
        let fc2 = linear(h, 3);
        output fc1, u, a, b, c, d, e, f, h, fc2;
        loss cross_entropy(fc2, label);
    }
}

kiln::model! {
    /// `softmax_out`: linear 4 -> 5, softmax; loss = sum(probs * r) for a fixed `r`.
    pub struct SoftmaxOut {
        input x: [3, 4];
        target r: [3, 5];
        let fc = linear(x, 5);
        let probs = softmax(fc);
        output fc, probs;
        loss sum(probs * r);
    }
}

// The generated code spells gelu's 1/sqrt(2) as a literal, which clippy's `approx_constant`
// (deny by default) rejects; the macro's own allow lists do not cover it yet.
#[allow(clippy::approx_constant)]
mod pointwise_model {
    kiln::model! {
        /// `pointwise`: linear 6 -> 8, a graph of elementwise ops, linear 8 -> 3; MSE.
        pub struct Pointwise {
            input x: [B, 6];
            target y: [B, 3];
            let fc1 = linear(x, 8);
            let g = gelu(fc1);
            let s = softplus(fc1);
            let l = leaky_relu(fc1, 0.1);
            let t = tanh(fc1);
            let q = square(t);
            let m = l * q;
            let a = g + 0.5 * s;
            let b = a - m;
            let fc2 = linear(b, 3);
            output fc1, g, s, l, t, q, m, a, b, fc2;
            loss mse(fc2, y);
        }
    }
}
use pointwise_model::Pointwise;

kiln::model! {
    /// `logsoftmax`: linear 4 -> 5, log_softmax; loss = sum(lp * r) for a fixed `r`.
    pub struct LogSoftmax {
        input x: [3, 4];
        target r: [3, 5];
        let fc = linear(x, 5);
        let lp = log_softmax(fc);
        output fc, lp;
        loss sum(lp * r);
    }
}

/// One module per case with an `f64` and an `f32` test. The target is a `float` matrix or
/// class `labels`. `outputs` maps each model output to the fixture's step name: a layer's
/// value is bound to the layer's name (`fc1`) so that its parameters are `fc1.weight`, where
/// the fixture calls the value `z1`.
macro_rules! parity_case {
    (@target float, $fixture:ident, $name:expr) => {
        $fixture.array::<F, kiln::ndarray::Ix2>($name)
    };
    (@target labels, $fixture:ident, $name:expr) => {
        $fixture.labels($name)
    };
    (
        $case:ident, $Model:ident,
        target $target:ident: $kind:ident,
        outputs { $($out:ident => $step:ident),+ $(,)? },
        optimizers: $optimizers:literal $(,)?
    ) => {
        mod $case {
            use super::*;

            fn run<F: Float>() {
                open_case!($case, $Model => fixture, report, fresh);
                let mut model = fresh();
                let x: Array2<F> = fixture.array("input.x");
                let target = parity_case!(@target $kind, fixture, concat!("target.", stringify!($target)));

                check_training_step!(fixture, report, model: $Model, (x.view(), target.view()), ws, { $($out => $step),+ });

                // Inference returns the same values.
                #[allow(unused_parens)]
                let ($($out),+) = model.forward(x.view()).expect("forward");
                $(
                    fixture.check_output(&mut report, "output (forward)", stringify!($step), $out.view().into_dyn());
                )+
                let steps = fixture.names_with("output.");
                report.require_checked("forward values", steps);

                fixture.check_state_dict(&mut report, $Model::<F>::zeros());

                if $optimizers {
                    check_trajectories!(fixture, report, fresh, (x.view(), target.view()), ws);
                } else {
                    assert!(
                        fixture.manifest["optimizers"]
                            .as_object()
                            .is_none_or(|o| o.is_empty()),
                        "{}: the manifest lists optimizers the test does not run",
                        fixture.title()
                    );
                }
                report.finish();
            }

            in_f64_and_f32!();
        }
    };
}

parity_case! {
    linreg, LinReg,
    target y: float,
    outputs { linear => pred },
    optimizers: true,
}

parity_case! {
    mlp_relu, MlpRelu,
    target label: labels,
    outputs { fc1 => z1, h1 => h1, fc2 => z2, h2 => h2, fc3 => logits },
    optimizers: true,
}

parity_case! {
    mlp_act, MlpAct,
    target y: float,
    outputs { fc1 => z1, h1 => h1, fc2 => z2, h2 => h2, fc3 => pred },
    optimizers: true,
}

parity_case! {
    bce, Bce,
    target y: float,
    outputs { fc1 => z1, h1 => h1, fc2 => logits },
    optimizers: true,
}

parity_case! {
    more_activations, MoreActivations,
    target label: labels,
    outputs {
        z => z, a => a, e => e, s => s, mi => mi, ss => ss, ls => ls, c => c, ht => ht, mx => mx,
        mn => mn, h => h, fc2 => logits,
    },
    optimizers: true,
}

parity_case! {
    pow_ops, PowOps,
    target label: labels,
    outputs {
        fc1 => z, u => u, a => a, b => b, c => c, d => d, e => e, f => f, h => h, fc2 => logits,
    },
    optimizers: true,
}

parity_case! {
    softmax_out, SoftmaxOut,
    target r: float,
    outputs { fc => logits, probs => probs },
    optimizers: false,
}

parity_case! {
    pointwise, Pointwise,
    target y: float,
    outputs {
        fc1 => z, g => g, s => s, l => l, t => t, q => q, m => m, a => a, b => b, fc2 => pred,
    },
    optimizers: true,
}

parity_case! {
    logsoftmax, LogSoftmax,
    target r: float,
    outputs { fc => logits, lp => lp },
    optimizers: false,
}
