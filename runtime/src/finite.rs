//! Tracing non-finite values to their source: the check that generated models run after each
//! value of the forward pass and each adjoint of the backward pass when a workspace's
//! `check_finite(true)` is on (what `Trainer::detect_anomaly` turns on), as PyTorch's
//! `torch.autograd.detect_anomaly` does, but naming the model's own binding and line.
//!
//! With the check off, a pass costs one well-predicted branch per node and nothing per
//! element.

use crate::{Error, Float, Result};
use std::fmt;

/// Which pass computed a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The forward pass (up to the outputs and the loss).
    Forward,
    /// The backward pass (adjoints, the gradients of the loss).
    Backward,
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pass::Forward => "forward pass",
            Pass::Backward => "backward pass",
        })
    }
}

/// Where a checked value comes from in the model's source, as the `model!` macro knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// The binding of the statement that computes the value (`h2`).
    pub binding: &'static str,
    /// The statement's right-hand side (`relu(linear(h1, out=64))`).
    pub source: &'static str,
    /// The op that computed the value (`linear`), or whose backward step computed the
    /// gradient.
    pub op: &'static str,
    /// In the backward pass, the value whose gradient it is (`h1`, or an inner expression
    /// such as `linear(h1, out=64)`); empty in the forward pass.
    pub gradient_of: &'static str,
    /// The statement's line in the source file (0 when unknown).
    pub line: u32,
    /// The pass.
    pub pass: Pass,
}

impl Site {
    /// A value of the forward pass, computed by `op` in `binding = source`.
    pub const fn forward(
        binding: &'static str,
        source: &'static str,
        op: &'static str,
        line: u32,
    ) -> Self {
        Self {
            binding,
            source,
            op,
            gradient_of: "",
            line,
            pass: Pass::Forward,
        }
    }

    /// The gradient of `gradient_of`, computed by the backward step of `op` in
    /// `binding = source`.
    pub const fn backward(
        binding: &'static str,
        source: &'static str,
        op: &'static str,
        gradient_of: &'static str,
        line: u32,
    ) -> Self {
        Self {
            binding,
            source,
            op,
            gradient_of,
            line,
            pass: Pass::Backward,
        }
    }
}

/// The first NaN or infinity found, where it was found, and (from the trainer) when.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// Where the value was computed.
    pub site: Site,
    /// The value: NaN, +inf or -inf.
    pub value: f64,
    /// Its index in the value's buffer (row-major over the value's shape).
    pub index: usize,
    /// The epoch (counting from 1), when the trainer knows it.
    pub epoch: Option<usize>,
    /// The optimizer step (counting from 1 over the whole run), when the trainer knows it.
    pub step: Option<usize>,
    /// The batch within the epoch (counting from 1), when the trainer knows it.
    pub batch: Option<usize>,
}

impl NonFinite {
    /// `NaN`, `inf` or `-inf`.
    fn kind(&self) -> &'static str {
        if self.value.is_nan() {
            "NaN"
        } else if self.value > 0.0 {
            "inf"
        } else {
            "-inf"
        }
    }
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let site = &self.site;
        match site.pass {
            Pass::Forward => write!(f, "non-finite value ({})", self.kind())?,
            Pass::Backward => write!(
                f,
                "non-finite gradient ({}) of `{}`",
                self.kind(),
                site.gradient_of
            )?,
        }
        write!(f, " in `{}` = {}", site.binding, site.source)?;
        if site.line > 0 {
            write!(f, " at line {}", site.line)?;
        }
        match site.pass {
            Pass::Forward => write!(f, ", from `{}`", site.op)?,
            Pass::Backward => write!(f, ", from the backward of `{}`", site.op)?,
        }
        write!(f, ", {}", site.pass)?;
        if let Some(epoch) = self.epoch {
            write!(f, ", epoch {epoch}")?;
        }
        if let Some(step) = self.step {
            write!(f, ", step {step}")?;
        }
        if let Some(batch) = self.batch {
            write!(f, ", batch {batch}")?;
        }
        write!(f, " (element {})", self.index)
    }
}

/// Checks that every element of `values` is finite; the first that is not is reported as
/// [`Error::NonFinite`] with `site`. Generated models call it when their workspace's check
/// is on.
///
/// # Errors
/// [`Error::NonFinite`] for the first NaN or infinity.
pub fn check<F: Float>(values: &[F], site: Site) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite(Box::new(NonFinite {
            site,
            value: values[index].to_f64(),
            index,
            epoch: None,
            step: None,
            batch: None,
        }))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_non_finite_value_and_names_its_site() {
        let site = Site::forward("h2", "log(h1)", "log", 7);
        assert!(check(&[1.0f32, -3.0, 0.0], site).is_ok());
        assert!(check::<f32>(&[], site).is_ok());
        let err = check(&[1.0f32, f32::NAN, f32::INFINITY], site).expect_err("NaN");
        let Error::NonFinite(found) = &err else {
            panic!("{err:?}")
        };
        assert_eq!((found.index, found.site), (1, site));
        assert_eq!(
            err.to_string(),
            "non-finite value (NaN) in `h2` = log(h1) at line 7, from `log`, forward pass \
             (element 1)"
        );
        let site = Site::backward("h2", "relu(linear(h1, out=4))", "linear", "h1", 0);
        let err = check(&[0.5f64, f64::NEG_INFINITY], site).expect_err("-inf");
        assert_eq!(
            err.to_string(),
            "non-finite gradient (-inf) of `h1` in `h2` = relu(linear(h1, out=4)), from the \
             backward of `linear`, backward pass (element 1)"
        );
    }

    #[test]
    fn the_trainer_context_is_part_of_the_message() {
        let mut found = NonFinite {
            site: Site::forward("loss", "mse(out, y)", "mse", 12),
            value: f64::INFINITY,
            index: 0,
            epoch: Some(2),
            step: Some(14),
            batch: Some(3),
        };
        assert_eq!(
            found.to_string(),
            "non-finite value (inf) in `loss` = mse(out, y) at line 12, from `mse`, forward \
             pass, epoch 2, step 14, batch 3 (element 0)"
        );
        found.value = f64::NAN;
        assert!(found.to_string().contains("(NaN)"));
    }
}
