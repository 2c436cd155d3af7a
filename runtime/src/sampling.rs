//! Drawing the next token from a language model's logits: temperature, top-k and nucleus
//! (top-p) sampling, or the most likely token, as Hugging Face's `generate` offers them
//! (`temperature`, `top_k`, `top_p`, `do_sample=False`).
//!
//! A sampling loop feeds the model's incremental decoding (`forward_cached`) one drawn token
//! at a time:
//!
//! ```
//! use kiln_runtime::sampling::Sampling;
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let sampling = Sampling::new().temperature(0.8).top_k(20).top_p(0.95);
//! let mut rng = StdRng::seed_from_u64(0);
//! // The logits of the last position, e.g. `logits.slice(s![0, -1, ..])` of forward_cached's.
//! let logits = [2.0f32, 0.5, f32::NEG_INFINITY, 1.0];
//! let next = sampling.draw(&logits, &mut rng)?;
//! assert!(next != 2, "an id whose logit is -inf is never drawn");
//! assert_eq!(Sampling::greedy().draw(&logits, &mut rng)?, 0);
//! # Ok::<(), kiln_runtime::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::Float;
use rand::{Rng, RngExt};

/// How to pick a token from logits: the distribution `softmax(logits / temperature)`, cut to
/// the `top_k` most likely tokens and then to the nucleus holding `top_p` of the probability,
/// renormalised; or, at temperature 0, the most likely token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 picks
    /// the most likely token (the first, on a tie). Default 1.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (and any tied with the `k`-th, as PyTorch's and
    /// Hugging Face's top-k keep them). Default: all.
    pub top_k: Option<usize>,
    /// Keep only the smallest set of most likely tokens whose probabilities add up to at
    /// least `p` (nucleus sampling; in `(0, 1]`). Default: all.
    pub top_p: Option<f64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampling {
    /// Sampling from the model's distribution as it is: temperature 1, no cuts.
    pub fn new() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }

    /// Always the most likely token (greedy decoding).
    pub fn greedy() -> Self {
        Self::new().temperature(0.0)
    }

    /// Divides the logits by `temperature` (≥ 0; 0 is greedy).
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Keeps the `k` most likely tokens (≥ 1).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Keeps the nucleus holding probability `p` (in `(0, 1]`).
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Checks the settings: a temperature that is a number ≥ 0, `top_k` ≥ 1, `top_p` in
    /// `(0, 1]`.
    ///
    /// # Errors
    /// [`Error::Data`] naming the setting and its value.
    pub fn check(&self) -> Result<()> {
        let problem = if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            format!(
                "the temperature must be a number ≥ 0 (0 picks the most likely token), not {}",
                self.temperature
            )
        } else if self.top_k == Some(0) {
            "top_k must be at least 1".to_string()
        } else if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            format!("top_p must be in (0, 1], not {p}")
        } else {
            return Ok(());
        };
        Err(Error::Data {
            what: "Sampling",
            problem,
        })
    }

    /// Draws a token id from `logits` (one score per token; `−∞` for a token that must not
    /// be drawn), using `rng` once (not at all when greedy).
    ///
    /// # Errors
    /// [`Error::Data`] if the settings are invalid ([`check`](Self::check)), if `logits` is
    /// empty, holds a NaN or `+∞`, or is `−∞` everywhere.
    pub fn draw<F: Float, R: Rng + ?Sized>(&self, logits: &[F], rng: &mut R) -> Result<usize> {
        self.check()?;
        let fail = |problem: String| Error::Data {
            what: "Sampling",
            problem,
        };
        if let Some(i) = logits
            .iter()
            .position(|l| l.to_f64().is_nan() || l.to_f64() == f64::INFINITY)
        {
            return Err(fail(format!(
                "logit {i} is {}: the model's output is not finite",
                logits[i].to_f64()
            )));
        }
        // The most likely token, the first of a tie.
        let best = logits
            .iter()
            .enumerate()
            .fold(None, |best: Option<(usize, f64)>, (i, l)| {
                let l = l.to_f64();
                match best {
                    Some((_, b)) if b >= l => best,
                    _ => Some((i, l)),
                }
            })
            .filter(|&(_, l)| l > f64::NEG_INFINITY)
            .ok_or_else(|| {
                fail(format!(
                    "no token can be drawn from {} logits: every one is -inf",
                    logits.len()
                ))
            })?;
        if self.temperature == 0.0 {
            return Ok(best.0);
        }
        let scaled: Vec<f64> = logits
            .iter()
            .map(|l| l.to_f64() / self.temperature)
            .collect();
        let mut cutoff = f64::NEG_INFINITY;
        if let Some(k) = self.top_k.filter(|&k| k < scaled.len()) {
            let mut sorted = scaled.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            cutoff = sorted[k - 1];
        }
        let max = best.1 / self.temperature;
        let mut probs: Vec<f64> = scaled
            .iter()
            .map(|&l| {
                if l >= cutoff && l > f64::NEG_INFINITY {
                    (l - max).exp()
                } else {
                    0.0
                }
            })
            .collect();
        if let Some(p) = self.top_p.filter(|&p| p < 1.0) {
            nucleus(&mut probs, p);
        }
        let total: f64 = probs.iter().sum();
        let mut left = rng.random::<f64>() * total;
        // Rounding may leave a sliver past the last kept token: it falls to that token.
        let mut drawn = probs.iter().rposition(|&q| q > 0.0).unwrap_or(best.0);
        for (id, &q) in probs.iter().enumerate() {
            if q > 0.0 && left < q {
                drawn = id;
                break;
            }
            left -= q;
        }
        Ok(drawn)
    }
}

/// Zeroes every weight outside the smallest set of largest weights (ties by lower id first)
/// that holds at least `p` of their sum.
fn nucleus(weights: &mut [f64], p: f64) {
    let total: f64 = weights.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut held = 0.0;
    let mut kept = order.len();
    for (n, &i) in order.iter().enumerate() {
        held += weights[i] / total;
        if held >= p {
            kept = n + 1;
            break;
        }
    }
    for &i in &order[kept..] {
        weights[i] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Draw frequencies over many draws.
    fn frequencies(s: &Sampling, logits: &[f64], draws: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[s.draw(logits, &mut rng).expect("draw")] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn softmax(l: &[f64]) -> Vec<f64> {
        let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = l.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    fn assert_near(got: &[f64], want: &[f64], tol: f64) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < tol, "token {i}: drawn {g}, expected {w}");
        }
    }

    const LOGITS: [f64; 5] = [1.0, 2.0, 0.5, -1.0, 1.5];

    #[test]
    fn draws_follow_the_tempered_distribution() {
        let want = softmax(&LOGITS.map(|l| l / 0.7));
        let got = frequencies(&Sampling::new().temperature(0.7), &LOGITS, 200_000);
        assert_near(&got, &want, 0.005);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely_renormalised() {
        // 2.0, 1.5 and 1.0 are the three largest.
        let kept = softmax(&[1.0, 2.0, 1.5]);
        let want = [kept[0], kept[1], 0.0, 0.0, kept[2]];
        let got = frequencies(&Sampling::new().top_k(3), &LOGITS, 200_000);
        assert_near(&got, &want, 0.005);
        // A tie with the k-th is kept.
        let got = frequencies(&Sampling::new().top_k(1), &[3.0, 1.0, 3.0], 20_000);
        assert_near(&got, &[0.5, 0.0, 0.5], 0.02);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let p = softmax(&LOGITS);
        // Sorted: 2.0 (0.445), 1.5 (0.270), 1.0 (0.164), 0.5 (0.099), -1.0 (0.022).
        let mut w = p.clone();
        nucleus(&mut w, p[1] + p[4] - 1e-9);
        assert_eq!(w.iter().filter(|&&v| v > 0.0).count(), 2);
        let mut w = p.clone();
        nucleus(&mut w, p[1] + p[4] + 1e-9);
        assert_eq!(w.iter().filter(|&&v| v > 0.0).count(), 3);
        let mut w = p.clone();
        nucleus(&mut w, 1e-6);
        assert_eq!(w.iter().position(|&v| v > 0.0), Some(1));
        let kept = softmax(&[1.0, 2.0, 1.5]);
        let want = [kept[0], kept[1], 0.0, 0.0, kept[2]];
        let got = frequencies(&Sampling::new().top_p(0.8), &LOGITS, 200_000);
        assert_near(&got, &want, 0.005);
    }

    #[test]
    fn greedy_takes_the_first_maximum_without_the_rng() {
        let mut rng = StdRng::seed_from_u64(1);
        let g = Sampling::greedy();
        assert_eq!(g.draw(&[0.5f32, 3.0, 3.0, -1.0], &mut rng).ok(), Some(1));
        let untouched = StdRng::seed_from_u64(1).random::<u64>();
        assert_eq!(rng.random::<u64>(), untouched);
    }

    #[test]
    fn banned_tokens_and_bad_inputs() {
        let mut rng = StdRng::seed_from_u64(2);
        let logits = [f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY];
        for _ in 0..100 {
            assert_eq!(Sampling::new().draw(&logits, &mut rng).ok(), Some(1));
        }
        let err = |s: Sampling, l: &[f64]| {
            s.draw(l, &mut StdRng::seed_from_u64(0))
                .expect_err("refused")
                .to_string()
        };
        assert!(err(Sampling::new(), &[]).contains("from 0 logits"));
        assert!(err(Sampling::new(), &[f64::NEG_INFINITY; 2]).contains("every one is -inf"));
        assert!(err(Sampling::new(), &[0.0, f64::NAN]).contains("logit 1 is NaN"));
        assert!(err(Sampling::new().temperature(-1.0), &[0.0]).contains("temperature"));
        assert!(err(Sampling::new().top_k(0), &[0.0]).contains("top_k"));
        assert!(err(Sampling::new().top_p(1.5), &[0.0]).contains("top_p must be in (0, 1]"));
    }
}
