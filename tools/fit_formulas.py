"""Regenerate the fitted tables of fastgd/activation/formulas.py (needs mpmath).

``LOG1P_UNIT``: log1p(e)/e on e in [0, 1] (softplus in float32: e = exp(-|z|)), the
Chebyshev interpolant of the lowest degree with relative error below 5e-9, monomial form.

``ROOTS``: near a simple zero x0 of a derivative, its formula is a sum of O(1) terms that cancel, so
float32 rounding errors of those terms are amplified by |terms|/|dx|. There the float32
kernels use the local expansion dx = d(h) + t·P(t), t = x - h exact (h: x0 rounded to
float32; d(h) ~ 1e-9 is the derivative's value there), with P the Chebyshev interpolant
(mpmath, 50 digits) of (dx(h + t) - d(h))/t for x = h + t in [a, b], in monomial form, of
the lowest degree whose relative error is below 5e-9 (0.1 ULP of float32). [a, b] is where
the terms of the derivative's formula are over 3 times its value (their rounding errors
amplified over 3 times); for silu, narrower (a lower degree): where its plain float32
formula errs by over 4.5 ULP, [-1.66, -1.15] over every float32, with margin.

Run: ``python tools/fit_formulas.py`` (a second); paste its output over the two tables.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 50
K2 = 2 * mp.sqrt(2 / mp.pi)
C = mp.mpf("0.044715")


def sig(z):
    return 1 / (1 + mp.exp(-z))


def silu_d(x):
    s = sig(x)
    return s * (1 + x * (1 - s))


def mish_d(x):
    t = mp.tanh(mp.log1p(mp.exp(x)))
    return t + x * (1 - t * t) * sig(x)


def gelu_tanh_d(x):
    z = K2 * (x + C * x**3)
    s = sig(z)
    return s + x * s * (1 - s) * K2 * (1 + 3 * C * x * x)


def gelu_d(x):
    return mp.erfc(-x / mp.sqrt(2)) / 2 + x * mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)


#: name: (derivative, a point near its root, the interval [a, b] of the expansion)
TARGETS = {
    "silu": (silu_d, -1.28, -1.8, -1.0),
    "mish": (mish_d, -1.19, -2.75, -0.55),
    "gelu_tanh": (gelu_tanh_d, -0.75, -1.6, -0.35),
    "gelu": (gelu_d, -0.75, -1.6, -0.35),
}


def fit(d, guess, a, b):
    x0 = mp.findroot(d, guess)
    h = mp.mpf(float(np.float32(float(x0))))
    d0 = d(h)
    g = lambda t: mp.diff(d, h) if t == 0 else (d(h + t) - d0) / t  # noqa: E731
    grid = [t for t in mp.linspace(a - h, b - h, 400) if t != 0]
    for degree in range(4, 20):
        coeffs = mp.chebyfit(g, [a - h, b - h], degree + 1)
        rel = max(abs(mp.polyval(coeffs, t) / g(t) - 1) for t in grid)
        if rel < 5e-9:
            break
    return x0, float(h), [float(d0)] + [float(c) for c in reversed(coeffs)], rel


def fit_log1p_unit():
    g = lambda e: mp.mpf(1) if e == 0 else mp.log1p(e) / e  # noqa: E731
    for degree in range(4, 20):
        coeffs = mp.chebyfit(g, [0, 1], degree + 1)
        rel = max(abs(mp.polyval(coeffs, e) / g(e) - 1) for e in mp.linspace(0, 1, 400))
        if rel < 5e-9:
            return [float(c) for c in reversed(coeffs)], rel


def main():
    coeffs, rel = fit_log1p_unit()
    print(f"LOG1P_UNIT = (  # log1p(e)/e on [0, 1], relative error ~{mp.nstr(rel, 2)}")
    print("    " + ", ".join(repr(c) for c in coeffs) + ")")
    print("ROOTS = {  # name: (h = x0 in float32, a, b, d(h) then P lowest degree first)")
    for name, (d, guess, a, b) in TARGETS.items():
        x0, h, coeffs, rel = fit(d, guess, a, b)
        print(f"    # x0 = {mp.nstr(x0, 20)}, relative error of P ~{mp.nstr(rel, 2)}")
        print(f"    {name!r}: ({h!r}, {a}, {b}, (")
        print("        " + ", ".join(repr(c) for c in coeffs) + ")),")
    print("}")


if __name__ == "__main__":
    main()
