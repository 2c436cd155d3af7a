//! The error function in f64, for `gelu` on f64 models (f32 has its own, vectorizable one in
//! `fast_math`): the C library's `erf`, which Rust's standard library already links for its
//! own float functions (`exp`, `tanh` and the rest come from the same library). It is the
//! function PyTorch's f64 `gelu` calls (`std::erf`), so on the same system the two agree to
//! the bit, and it costs a program no crate to compile (the `libm` crate, which kiln took it
//! from before, was a twentieth of a clean build of a user's program).

extern "C" {
    /// C99's `double erf(double)`.
    #[link_name = "erf"]
    fn c_erf(x: f64) -> f64;
}

/// The error function `erf x = (2/√π) ∫₀ˣ e^{−t²} dt`, from the C library: odd, NaN for
/// NaN, `±1` for `±∞`.
#[inline]
pub(crate) fn erf_f64(x: f64) -> f64 {
    // SAFETY: `erf` is a pure function of the C math library that the standard library links
    // on every platform it supports; it takes and returns a double, reads and writes no
    // memory and has no precondition (every double is a valid argument).
    unsafe { c_erf(x) }
}

#[cfg(test)]
mod tests {
    use super::erf_f64;

    /// Values to 17 significant digits (mpmath at 50 digits, rounded to the nearest f64), and
    /// the symmetry, the limits and NaN.
    #[test]
    fn known_values() {
        let cases = [
            (0.0, 0.0),
            (1e-300, 1.128_379_167_095_512_6e-300),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_6),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!(
                (got - want).abs() <= f64::EPSILON * want,
                "erf({x}) = {got}"
            );
            assert_eq!(erf_f64(-x), -got);
        }
        assert_eq!(erf_f64(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(erf_f64(6.0), 1.0);
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }
}
