//! Branch-free f32 versions of `exp` and `tanh` (within 2 ulp of the correctly rounded value)
//! and `erf` (within 3.6e-7): the library functions are scalar calls that stop a loop from
//! vectorizing, and in the recurrent gates and in `gelu` they cost more than the matrix
//! products around them. f64 keeps the library functions.

/// `c[0]·x^(N−1) + c[1]·x^(N−2) + … + c[N−1]` by Horner's rule: one multiplication and one
/// addition per coefficient, in this order (the order the fitted coefficients' error bounds
/// assume; no fused multiply-add, so that every instruction set computes the same bits).
#[inline(always)]
fn horner<const N: usize>(x: f32, c: [f32; N]) -> f32 {
    c[1..].iter().fold(c[0], |p, &k| p * x + k)
}

/// `e^x` in f32 within 2 ulp (Cephes' `expf`): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// a degree-6 polynomial for `e^r`, and `2^n` applied as two normal factors `2^(n/2)` so that
/// overflow gives infinity and underflow a subnormal or 0, as the library's `expf` does.
/// Branch-free, so that the loops calling it vectorize; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 split so that n · LN2_HI is exact for |n| ≤ 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Beyond these e^x is infinite or 0 in f32; the clamp keeps n within ±150.
    let x = x.clamp(-104.0, 89.0);
    // `shifted`'s low mantissa bits hold n in two's complement: its bits are those of ROUND
    // plus n, which gives 2^n below without a float-to-integer conversion (that one does not
    // vectorize: Rust's saturating `as` is scalar code on x86).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = horner(
        r,
        [
            1.987_569_2e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let e = p * (r * r) + r + 1.0;
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let half = n >> 1;
    let scale = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    e * scale(half) * scale(n - half)
}

/// `tanh` in f32 within 2 ulp: Cephes' odd polynomial below 0.625, else
/// `1 − 2 / (e^{2|x|} + 1)` with the sign of `x`.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let s = x * x;
    let p = horner(
        s,
        [
            -5.704_988_7e-3,
            2.063_909e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328e-1,
        ],
    );
    let small = p * s * x + x;
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// `erf` in f32, within 3.7e-7 absolute everywhere (6 ulp of the values near 1) and 2.5e-7
/// relative below 1: `x·P(x²)/Q(x²)` on `x` clamped to ±3.95 (beyond ±3.92 `erf` is 1 in f32),
/// `P` and `Q` of degree 5, fitted for the least maximum relative error (1.9e-8 in exact
/// arithmetic) and then moved by a few ulp each for the least error of this f32 evaluation.
/// One division and ten multiply-adds, no exponential and no branch: the form with `erfc` for
/// `|x| ≥ 1` (one exponential, a division and two polynomials, both branches computed so that
/// loops vectorize) is more exact near 1 (2e-7) but made a GELU's forward and backward loops
/// 2.5 times slower, a tenth of a small transformer's training step.
// The coefficients are those `runtime/scripts/fit_erf_f32.py` prints, as f32 (the constant term
// is near 2/√π, erf's slope at 0, but is the fit's).
#[allow(clippy::approx_constant, clippy::excessive_precision)]
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    // The fraction passes 1 by an ulp at 3.95: clamped to ±1, the tails are exactly ±1 (so a
    // GELU of a large input is that input). NaN passes through both clamps and the arithmetic.
    let x = x.clamp(-3.95, 3.95);
    let z = x * x;
    let p = horner(
        z,
        [
            2.046_010_6e-6,
            2.848_222_5e-4,
            3.771_971_2e-3,
            5.276_747_4e-2,
            1.905_814_1e-1,
            1.128_379_1,
        ],
    );
    let q = horner(
        z,
        [
            3.804_649_9e-5,
            1.163_702_3e-3,
            1.498_203_9e-2,
            1.141_774_65e-1,
            5.022_311_2e-1,
            1.0,
        ],
    );
    (x * p / q).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest absolute and relative (below 1) errors of `erf_f32` against f64's `erf`
    /// on a dense grid over [-6, 6].
    #[test]
    fn erf_is_within_its_bounds() {
        let (mut abs, mut rel) = (0.0f64, 0.0f64);
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let want = crate::special::erf_f64(f64::from(x));
            let got = f64::from(erf_f32(x));
            abs = abs.max((got - want).abs());
            if x.abs() < 1.0 && x != 0.0 {
                rel = rel.max(((got - want) / want).abs());
            }
        }
        assert!(abs < 3.7e-7, "absolute error {abs:e}");
        assert!(rel < 2.5e-7, "relative error {rel:e}");
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(40.0), 1.0);
        assert_eq!(erf_f32(-40.0), -1.0);
    }

    #[test]
    fn exp_is_within_2_ulp_and_keeps_the_edges() {
        for i in -104_000..=89_000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp_f32(x), f64::from(x).exp());
            if want > f64::from(f32::MAX) {
                assert_eq!(got, f32::INFINITY, "{x}");
            } else if want >= f64::from(f32::MIN_POSITIVE) {
                let ulp = f64::from(f32::EPSILON) * want;
                assert!(
                    (f64::from(got) - want).abs() <= 2.0 * ulp,
                    "{x}: {got} vs {want}"
                );
            } else {
                assert!((f64::from(got) - want).abs() <= 2e-45 + 1e-6 * want, "{x}");
            }
        }
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn tanh_matches_the_library() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (tanh_f32(x), x.tanh());
            assert!(
                (got - want).abs() <= 2.5e-7 * want.abs().max(1e-30) + 1e-9,
                "{x}"
            );
        }
    }
}
