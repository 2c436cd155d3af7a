//! Helpers shared by the kernel and loss unit tests.

/// Deterministic, non-trivial test values in about `[-2, 2]`: no two equal, mixed signs.
pub(crate) fn values(len: usize, seed: f64) -> Vec<f64> {
    (0..len)
        .map(|i| ((i as f64 + seed) * 0.7371).sin() * 2.0 + 0.01 * seed)
        .collect()
}

/// Asserts `|got - want| <= atol + rtol * |want|` element by element.
#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g:e}, want {w:e} (diff {:e})",
            (g - w).abs()
        );
    }
}

/// Runs `backward` once overwriting and once accumulating onto `base`, and checks both
/// against `want` (the true gradient).
#[track_caller]
pub(crate) fn check_both_modes(
    want: &[f64],
    rtol: f64,
    atol: f64,
    what: &str,
    mut backward: impl FnMut(&mut [f64], bool),
) {
    let mut out = vec![f64::NAN; want.len()];
    backward(&mut out, false);
    assert_close(&out, want, rtol, atol, &format!("{what} (overwrite)"));
    let base = values(want.len(), 42.0);
    let mut out = base.clone();
    backward(&mut out, true);
    let shifted: Vec<f64> = want.iter().zip(&base).map(|(w, b)| w + b).collect();
    assert_close(&out, &shifted, rtol, atol, &format!("{what} (accumulate)"));
}
