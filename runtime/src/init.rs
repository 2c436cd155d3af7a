//! Re-initialising parameters, as `torch.nn.init` does: fill a tensor in place from a
//! distribution, with the fan-based scales of Xavier (Glorot) and Kaiming (He).
//!
//! Every model starts from PyTorch's default initialisation (`Model::new`); these functions
//! are for the recipes that change it, such as GPT-2's `N(0, 0.02)` for every matrix, applied
//! through the model's parameter visitor:
//!
//! ```
//! use kiln_runtime::init;
//! use kiln_runtime::layers::Embedding;
//! use rand::SeedableRng;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let mut table = Embedding::<f32>::new(96, 128, None, &mut rng);
//! init::normal_(table.weight.view_mut(), 0.0, 0.02, &mut rng);
//! assert!(table.weight.iter().all(|w| w.abs() < 0.2));
//! // A whole model: `model.visit_params_mut(&mut |name, w| if w.ndim() >= 2 { init::normal_(w, 0.0, 0.02, &mut rng) });`
//! ```
//!
//! Values are drawn in f64 and rounded to the tensor's float type, in the tensor's logical
//! (row-major) order. The draws are kiln's own: the same distribution as PyTorch's, not the
//! same numbers.

use crate::{Error, Float, Result};
use ndarray::{ArrayViewMut, Dimension};
use rand::{Rng, RngExt};

/// Draws standard normal values in f64 by the Box–Muller transform, both values of each pair
/// used in turn (the `rand` crate alone has no normal distribution).
pub(crate) struct StandardNormal {
    spare: Option<f64>,
}

impl StandardNormal {
    /// A generator with no value held back.
    pub(crate) fn new() -> Self {
        Self { spare: None }
    }

    /// The next standard normal value.
    pub(crate) fn sample<R: Rng + ?Sized>(&mut self, rng: &mut R) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 ∈ (0, 1], so that its logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }
}

/// The nonlinearity that follows a layer, for [`calculate_gain`] and the Kaiming
/// initialisations (PyTorch's `nonlinearity` strings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// No nonlinearity, or a convolution without one (`"linear"`, `"conv2d"`): gain 1.
    Linear,
    /// `"sigmoid"`: gain 1.
    Sigmoid,
    /// `"tanh"`: gain 5/3.
    Tanh,
    /// `"relu"`: gain √2.
    Relu,
    /// `"leaky_relu"` with its negative slope: gain √(2 / (1 + slope²)).
    LeakyRelu(f64),
    /// `"selu"`: gain 3/4.
    Selu,
}

/// The recommended gain for a layer followed by `nonlinearity`
/// (`torch.nn.init.calculate_gain`).
///
/// ```
/// use kiln_runtime::init::{calculate_gain, Nonlinearity};
/// assert_eq!(calculate_gain(Nonlinearity::Relu), 2f64.sqrt());
/// assert_eq!(calculate_gain(Nonlinearity::LeakyRelu(0.0)), 2f64.sqrt());
/// ```
pub fn calculate_gain(nonlinearity: Nonlinearity) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// Which fan a Kaiming initialisation keeps the variance of: the inputs' (`FanIn`, the
/// forward pass) or the outputs' (`FanOut`, the backward pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// `mode="fan_in"` (PyTorch's default).
    FanIn,
    /// `mode="fan_out"`.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight of `shape`, as PyTorch computes them: a `[out, in]` matrix
/// has `(in, out)`; a convolution's `[out, in / groups, kh, kw]` has `(in / groups · kh · kw,
/// out · kh · kw)`.
///
/// # Errors
/// [`Error::Init`] for a tensor of fewer than two dimensions (a bias or a norm's scale has no
/// fans).
///
/// ```
/// use kiln_runtime::init::fans;
/// assert_eq!(fans(&[128, 512])?, (512, 128));
/// assert_eq!(fans(&[16, 8, 3, 3])?, (72, 144));
/// assert!(fans(&[16]).is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    let [out, inputs, receptive @ ..] = shape else {
        return Err(Error::Init {
            problem: format!(
                "fan in and fan out need a tensor of at least two dimensions, not {shape:?}"
            ),
        });
    };
    let receptive: usize = receptive.iter().product();
    Ok((inputs * receptive, out * receptive))
}

/// Fills `w` with `value` (`torch.nn.init.constant_`).
pub fn constant_<F: Float, D: Dimension>(mut w: ArrayViewMut<'_, F, D>, value: f64) {
    w.fill(F::from_f64(value));
}

/// Fills `w` with zeros (`torch.nn.init.zeros_`).
pub fn zeros_<F: Float, D: Dimension>(w: ArrayViewMut<'_, F, D>) {
    constant_(w, 0.0);
}

/// Fills `w` with ones (`torch.nn.init.ones_`).
pub fn ones_<F: Float, D: Dimension>(w: ArrayViewMut<'_, F, D>) {
    constant_(w, 1.0);
}

/// Fills `w` with values drawn from `U(low, high)` (`torch.nn.init.uniform_`).
///
/// ```
/// use kiln_runtime::init::uniform_;
/// use rand::SeedableRng;
/// let mut w = ndarray::Array2::<f64>::zeros((4, 4));
/// uniform_(w.view_mut(), -0.1, 0.1, &mut rand::rngs::StdRng::seed_from_u64(1));
/// assert!(w.iter().all(|&v| (-0.1..0.1).contains(&v)));
/// ```
pub fn uniform_<F: Float, D: Dimension, R: Rng + ?Sized>(
    mut w: ArrayViewMut<'_, F, D>,
    low: f64,
    high: f64,
    rng: &mut R,
) {
    // u ∈ [0, 1) mapped onto [low, high); unlike `random_range`, fine when low = high.
    w.map_inplace(|v| *v = F::from_f64(low + (high - low) * rng.random::<f64>()));
}

/// Fills `w` with values drawn from `N(mean, std²)` (`torch.nn.init.normal_`).
pub fn normal_<F: Float, D: Dimension, R: Rng + ?Sized>(
    mut w: ArrayViewMut<'_, F, D>,
    mean: f64,
    std: f64,
    rng: &mut R,
) {
    let mut normal = StandardNormal::new();
    w.map_inplace(|v| *v = F::from_f64(mean + std * normal.sample(rng)));
}

/// Fills `w` with values drawn from `N(mean, std²)` restricted to `[a, b]`
/// (`torch.nn.init.trunc_normal_`; its defaults are `a = -2`, `b = 2`, absolute bounds, not
/// in standard deviations).
///
/// # Errors
/// [`Error::Init`] if `a ≥ b`, or if `[a, b]` lies so far in a tail (more than 6 standard
/// deviations from `mean` on the near side) that drawing from it would take too long.
pub fn trunc_normal_<F: Float, D: Dimension, R: Rng + ?Sized>(
    mut w: ArrayViewMut<'_, F, D>,
    mean: f64,
    std: f64,
    a: f64,
    b: f64,
    rng: &mut R,
) -> Result<()> {
    let (lo, hi) = ((a - mean) / std, (b - mean) / std);
    // Written so that a NaN bound or parameter counts as unusable too.
    let usable = lo < hi && lo <= 6.0 && hi >= -6.0;
    if !usable {
        return Err(Error::Init {
            problem: format!(
                "trunc_normal_: the interval [{a}, {b}] does not hold a usable part of N({mean}, {std}²)"
            ),
        });
    }
    // Rejection: at worst (an interval of one point's width near ±6σ excluded above) a
    // handful of draws per value for the intervals in use (±2σ keeps 95%).
    let mut normal = StandardNormal::new();
    w.map_inplace(|v| {
        let z = loop {
            let z = normal.sample(rng);
            if (lo..=hi).contains(&z) {
                break z;
            }
        };
        *v = F::from_f64(mean + std * z);
    });
    Ok(())
}

/// Fills `w` from `U(−r, r)` with `r = gain · √(6 / (fan_in + fan_out))`
/// (`torch.nn.init.xavier_uniform_`, Glorot's initialisation).
///
/// # Errors
/// [`Error::Init`] for a tensor of fewer than two dimensions (see [`fans`]).
pub fn xavier_uniform_<F: Float, D: Dimension, R: Rng + ?Sized>(
    w: ArrayViewMut<'_, F, D>,
    gain: f64,
    rng: &mut R,
) -> Result<()> {
    let (fan_in, fan_out) = fans(w.shape())?;
    let bound = gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    uniform_(w, -bound, bound, rng);
    Ok(())
}

/// Fills `w` from `N(0, σ²)` with `σ = gain · √(2 / (fan_in + fan_out))`
/// (`torch.nn.init.xavier_normal_`).
///
/// # Errors
/// [`Error::Init`] for a tensor of fewer than two dimensions (see [`fans`]).
pub fn xavier_normal_<F: Float, D: Dimension, R: Rng + ?Sized>(
    w: ArrayViewMut<'_, F, D>,
    gain: f64,
    rng: &mut R,
) -> Result<()> {
    let (fan_in, fan_out) = fans(w.shape())?;
    let std = gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    normal_(w, 0.0, std, rng);
    Ok(())
}

/// The standard deviation of a Kaiming initialisation of a weight of `shape`.
fn kaiming_std(shape: &[usize], mode: FanMode, nonlinearity: Nonlinearity) -> Result<f64> {
    let (fan_in, fan_out) = fans(shape)?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    if fan == 0 {
        return Err(Error::Init {
            problem: format!("a Kaiming initialisation of a {shape:?} tensor: its fan is 0"),
        });
    }
    Ok(calculate_gain(nonlinearity) / (fan as f64).sqrt())
}

/// Fills `w` from `U(−r, r)` with `r = √3 · gain / √fan`
/// (`torch.nn.init.kaiming_uniform_`, He's initialisation). PyTorch's defaults are
/// `FanMode::FanIn` and `Nonlinearity::LeakyRelu(0.0)`; `nn.Linear` and `nn.Conv2d` use
/// `LeakyRelu(√5)`, which gives their `U(±1/√fan_in)`.
///
/// ```
/// use kiln_runtime::init::{kaiming_uniform_, FanMode, Nonlinearity};
/// use rand::SeedableRng;
/// let mut w = ndarray::Array2::<f32>::zeros((64, 100));
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// kaiming_uniform_(w.view_mut(), FanMode::FanIn, Nonlinearity::LeakyRelu(5f64.sqrt()), &mut rng)?;
/// assert!(w.iter().all(|&v| v.abs() < 0.1)); // nn.Linear(100, 64)'s bound, 1/√100
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
///
/// # Errors
/// [`Error::Init`] for a tensor of fewer than two dimensions or with a fan of 0.
pub fn kaiming_uniform_<F: Float, D: Dimension, R: Rng + ?Sized>(
    w: ArrayViewMut<'_, F, D>,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Result<()> {
    let bound = 3f64.sqrt() * kaiming_std(w.shape(), mode, nonlinearity)?;
    uniform_(w, -bound, bound, rng);
    Ok(())
}

/// Fills `w` from `N(0, σ²)` with `σ = gain / √fan` (`torch.nn.init.kaiming_normal_`).
///
/// # Errors
/// [`Error::Init`] for a tensor of fewer than two dimensions or with a fan of 0.
pub fn kaiming_normal_<F: Float, D: Dimension, R: Rng + ?Sized>(
    w: ArrayViewMut<'_, F, D>,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Result<()> {
    let std = kaiming_std(w.shape(), mode, nonlinearity)?;
    normal_(w, 0.0, std, rng);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    /// Mean and standard deviation of `values`.
    fn moments<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64) {
        let v: Vec<f64> = values.copied().collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn normal_has_its_mean_and_spread() {
        let mut w = Array2::<f64>::zeros((400, 250));
        normal_(w.view_mut(), 0.5, 0.02, &mut rng());
        let (mean, std) = moments(w.iter());
        assert!((mean - 0.5).abs() < 0.0005, "mean {mean}");
        assert!((std - 0.02).abs() < 0.0005, "std {std}");
    }

    #[test]
    fn uniform_stays_in_its_interval_and_spreads_over_it() {
        let mut w = Array2::<f64>::zeros((300, 300));
        uniform_(w.view_mut(), -0.3, 0.1, &mut rng());
        assert!(w.iter().all(|v| (-0.3..0.1).contains(v)));
        let (mean, std) = moments(w.iter());
        assert!((mean + 0.1).abs() < 0.002, "mean {mean}");
        // U(a, b) has standard deviation (b − a)/√12.
        assert!((std - 0.4 / 12f64.sqrt()).abs() < 0.002, "std {std}");
    }

    #[test]
    fn trunc_normal_keeps_to_its_bounds() {
        let mut w = Array2::<f64>::zeros((200, 200));
        trunc_normal_(w.view_mut(), 0.0, 1.0, -0.5, 2.0, &mut rng()).expect("a usable interval");
        assert!(w.iter().all(|v| (-0.5..=2.0).contains(v)));
        assert!(w.iter().any(|&v| v > 1.5) && w.iter().any(|&v| v < -0.45));
        let empty = trunc_normal_(w.view_mut(), 0.0, 1.0, 1.0, 1.0, &mut rng());
        assert!(matches!(empty, Err(Error::Init { .. })));
        let far = trunc_normal_(w.view_mut(), 0.0, 1.0, 10.0, 11.0, &mut rng());
        assert!(matches!(far, Err(Error::Init { .. })));
    }

    /// The fans of `torch.nn.init._calculate_fan_in_and_fan_out` and the scales that follow
    /// from them, checked on the spread of a large draw.
    #[test]
    fn fan_based_scales_are_pytorchs() {
        assert_eq!(fans(&[10, 20]).ok(), Some((20, 10)));
        assert_eq!(fans(&[32, 16, 3, 3]).ok(), Some((144, 288)));
        assert_eq!(fans(&[4, 2, 5]).ok(), Some((10, 20)));
        assert!(matches!(fans(&[3]), Err(Error::Init { .. })));
        assert!(matches!(fans(&[]), Err(Error::Init { .. })));

        let mut w = Array4::<f64>::zeros((64, 32, 3, 3)); // fan_in 288, fan_out 576
        xavier_uniform_(w.view_mut(), 1.0, &mut rng()).expect("a 4-d weight");
        let bound = (6.0f64 / 864.0).sqrt();
        assert!(w.iter().all(|v| v.abs() < bound));
        assert!(w.iter().any(|v| v.abs() > 0.99 * bound));

        xavier_normal_(w.view_mut(), 2.0, &mut rng()).expect("a 4-d weight");
        let (_, std) = moments(w.iter());
        assert!(
            (std / (2.0 * (2.0f64 / 864.0).sqrt()) - 1.0).abs() < 0.02,
            "std {std}"
        );

        kaiming_normal_(
            w.view_mut(),
            FanMode::FanOut,
            Nonlinearity::Relu,
            &mut rng(),
        )
        .expect("a 4-d weight");
        let (_, std) = moments(w.iter());
        assert!(
            (std / (2.0f64 / 576.0).sqrt() - 1.0).abs() < 0.02,
            "std {std}"
        );

        // nn.Linear's and nn.Conv2d's own bound: 1/√fan_in.
        kaiming_uniform_(
            w.view_mut(),
            FanMode::FanIn,
            Nonlinearity::LeakyRelu(5f64.sqrt()),
            &mut rng(),
        )
        .expect("a 4-d weight");
        let bound = 1.0 / 288f64.sqrt();
        assert!(w.iter().all(|v| v.abs() < bound * (1.0 + 1e-12)));
        assert!(w.iter().any(|v| v.abs() > 0.99 * bound));

        let mut bias = ndarray::Array1::<f32>::zeros(8);
        let err = kaiming_uniform_(
            bias.view_mut(),
            FanMode::FanIn,
            Nonlinearity::Relu,
            &mut rng(),
        );
        assert!(matches!(err, Err(Error::Init { .. })));
        assert!(bias.iter().all(|&v| v == 0.0), "left alone on error");
    }

    #[test]
    fn gains_are_pytorchs() {
        assert_eq!(calculate_gain(Nonlinearity::Linear), 1.0);
        assert_eq!(calculate_gain(Nonlinearity::Sigmoid), 1.0);
        assert_eq!(calculate_gain(Nonlinearity::Tanh), 5.0 / 3.0);
        assert_eq!(calculate_gain(Nonlinearity::Selu), 0.75);
        let leaky = calculate_gain(Nonlinearity::LeakyRelu(0.01));
        assert!((leaky - (2.0f64 / 1.0001).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn constants_fill() {
        let mut w = Array2::<f32>::from_elem((2, 3), 9.0);
        zeros_(w.view_mut());
        assert!(w.iter().all(|&v| v == 0.0));
        ones_(w.view_mut());
        assert!(w.iter().all(|&v| v == 1.0));
        constant_(w.view_mut(), 0.25);
        assert!(w.iter().all(|&v| v == 0.25));
    }
}
