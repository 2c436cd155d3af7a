"""Fits the coefficients of `erf_f32` in `runtime/src/fast_math.rs`.

erf(x) ~ x * P(x^2) / Q(x^2) on [0, 3.925], P and Q of degree 5 with Q(0) = 1:
1. the least maximum relative error in exact arithmetic, by linearised least squares
   (x P - erf(x) Q = 0, weighted by 1 / (erf(x) Q_previous)) with Lawson's reweighting;
2. then, as f32, each coefficient moved by up to 16 ulp at a time while that lowers the largest
   absolute error of the f32 evaluation (the order of operations of the Rust code: no fused
   multiply-add, Horner's rule, then x * P / Q).

Run with numpy and scipy: `python3 runtime/scripts/fit_erf_f32.py` (a few seconds).
"""

import numpy as np
from scipy.special import erf

F32 = np.float32
C = 3.925
DEGREE = 5


def fit_exact():
    n = 20000
    x = np.sort((np.cos(np.pi * (np.arange(n) + 0.5) / n) + 1) / 2 * C)
    z, f = x * x, erf(x)
    weight, q_prev, best = np.ones_like(x), np.ones_like(x), None
    for _ in range(60):
        a = np.hstack([np.stack([x * z**i for i in range(DEGREE + 1)], 1),
                       np.stack([-f * z**i for i in range(1, DEGREE + 1)], 1)])
        scale = weight / (f * q_prev)
        sol, *_ = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)
        p, q = sol[:DEGREE + 1], np.concatenate([[1.0], sol[DEGREE + 1:]])
        q_prev = np.polyval(q[::-1], z)
        err = np.abs(x * np.polyval(p[::-1], z) / q_prev / f - 1)
        if best is None or err.max() < best[0]:
            best = (err.max(), np.concatenate([p, q[1:]]))
        weight = weight * np.sqrt(err / err.max()) + 1e-30
        weight /= weight.sum()
    return best


def evaluate_f32(coef, x):
    z = x * x
    p, q = coef[:DEGREE + 1], np.concatenate([[F32(1)], coef[DEGREE + 1:]]).astype(F32)
    num = np.full_like(z, p[-1])
    for c in p[-2::-1]:
        num = num * z + c
    den = np.full_like(z, q[-1])
    for c in q[-2::-1]:
        den = den * z + c
    return ((x * num) / den).astype(np.float64)


def main():
    exact_error, coef = fit_exact()
    print(f"exact arithmetic: largest relative error {exact_error:.3e}")
    coef = coef.astype(F32)
    x = np.unique(np.concatenate([np.linspace(0, C, 300000, dtype=F32),
                                  np.linspace(3.0, C, 100000, dtype=F32)]))[1:]
    want = erf(x.astype(np.float64))
    score = lambda c: np.abs(evaluate_f32(c, x) - want).max()
    best = score(coef)
    improved = True
    while improved:
        improved = False
        for i in range(len(coef)):
            for steps in [1, -1, 2, -2, 4, -4, 8, -8, 16, -16]:
                moved = coef.copy()
                toward = F32(np.inf) if steps > 0 else F32(-np.inf)
                for _ in range(abs(steps)):
                    moved[i] = np.nextafter(moved[i], toward)
                s = score(moved)
                if s < best:
                    best, coef, improved = s, moved, True
    print(f"f32 evaluation: largest absolute error {best:.3e}")
    print("P (constant first):", [str(F32(c)) for c in coef[:DEGREE + 1]])
    print("Q (after the constant 1):", [str(F32(c)) for c in coef[DEGREE + 1:]])


if __name__ == "__main__":
    main()
