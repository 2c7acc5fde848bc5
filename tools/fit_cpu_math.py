"""Regenerate the coefficient tables of fastgd/backends/cpu_math.py (needs mpmath).

Polynomials: Chebyshev interpolants (``mpmath.chebyfit``, 150 digits) of smooth, O(1)
auxiliary functions on the reduced range, converted to monomial form (lowest degree
first); Chebyshev interpolation is within a small factor of the minimax polynomial and
the degrees leave the approximation error far below half an ULP.

erfc: h(a) = (1/sqrt(pi)) / erfcx(a) - a on [0, a_max] as a rational P(a)/Q(a), q0 = 1
(printed as p0 and P1 = (P - p0*Q)/a), fitted by Sanathanan-Koerner iteration with Lawson weights
(near-minimax) for the relative error of erfcx = (1/sqrt(pi)) / (a + h).

Run: ``python tools/fit_cpu_math.py`` (a few seconds).
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 60
LN2_HALF = mp.log(2) / 2 * mp.mpf("1.03")  # slack for the rounded reduction
LOG_ZMAX = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2 * mp.mpf("1.03")


def q_exp(r):  # (e^r - 1 - r) / r^2
    return mp.mpf(1) / 2 if r == 0 else (mp.expm1(r) - r) / r**2


def r_log(z):  # (2*atanh(s)/s - 2) / z, s = sqrt(z)
    s = mp.sqrt(z)
    return mp.mpf(2) / 3 if z == 0 else (2 * mp.atanh(s) / s - 2) / z


def g_erf(z):  # erf(x)/x - 1, z = x^2
    x = mp.sqrt(z)
    return 2 / mp.sqrt(mp.pi) - 1 if z == 0 else mp.erf(x) / x - 1


def h_erfc(a):
    return 1 / (mp.sqrt(mp.pi) * mp.erfc(a) * mp.exp(a * a)) - a


def show(name, dtype, coeffs, err):
    c = [float(dtype(float(v))) for v in coeffs]
    print(f"{name} ({np.dtype(dtype).name}, {len(c)} coefficients, fit error {float(err):.1e}):")
    print("    (" + ", ".join(repr(v) for v in c) + ")", flush=True)


def fit_poly(name, f, a, b, deg, dtype):
    def g(v):  # extra digits: the auxiliary functions cancel badly near 0
        with mp.workdps(150):
            return +f(v)

    coef, err = mp.chebyfit(g, [a, b], deg + 1, error=True)
    show(name, dtype, coef[::-1], err)


def fit_rational(f, w, lo, hi, m, n, npts=200, iters=20):
    """Near-minimax P(t)/Q(t), t = x - lo, q0 = 1, minimizing max |w*(P/Q - f)|."""
    lo, hi = mp.mpf(lo), mp.mpf(hi)
    xs = [(lo + hi) / 2 + (hi - lo) / 2 * mp.cos(mp.pi * (2 * i + 1) / (2 * npts))
          for i in range(npts)] + [lo, hi]
    ts = [x - lo for x in xs]
    fs, ws = [f(x) for x in xs], [w(x) for x in xs]
    qprev, lw = [mp.mpf(1)] * len(xs), [mp.mpf(1)] * len(xs)
    best = None
    for _ in range(iters):
        rows, rhs = [], []
        for t, fv, wv, qp, lv in zip(ts, fs, ws, qprev, lw, strict=True):
            s = wv * mp.sqrt(lv) / qp  # Sanathanan-Koerner linearization, Lawson weight
            rows.append([s * t**j for j in range(m + 1)]
                        + [-s * fv * t**k for k in range(1, n + 1)])
            rhs.append(s * fv)
        a, b = mp.matrix(rows), mp.matrix(rhs)
        sol = mp.lu_solve(a.T * a, a.T * b)
        p = [sol[j] for j in range(m + 1)]
        q = [mp.mpf(1)] + [sol[m + k] for k in range(1, n + 1)]
        qprev = [mp.polyval(q[::-1], t) for t in ts]
        errs = [wv * (mp.polyval(p[::-1], t) / qv - fv)
                for t, fv, wv, qv in zip(ts, fs, ws, qprev, strict=True)]
        e = max(abs(v) for v in errs)
        if best is None or e < best[0]:
            best = (e, p, q)
        tot = sum(lv * abs(v) for lv, v in zip(lw, errs, strict=True))
        lw = [lv * abs(v) / tot for lv, v in zip(lw, errs, strict=True)]
    return best


def fit_erfc(dtype, amax, deg):
    e, p, q = fit_rational(h_erfc, lambda a: 1 / (a + h_erfc(a)), 0, amax, deg, deg)
    # evaluated as h = p0 + t*P1(t)/Q(t): the rounding errors of the quotient are damped
    p1 = [p[j] - p[0] * q[j] for j in range(1, deg + 1)]
    show("ERFC_H0", dtype, p[:1], e)
    show("ERFC_HP", dtype, p1, e)
    show("ERFC_HQ", dtype, q, e)


if __name__ == "__main__":
    for dt, (de, dl, dr) in {np.float32: (4, 3, 5), np.float64: (10, 6, 9)}.items():
        fit_poly("EXP_Q", q_exp, -LN2_HALF, LN2_HALF, de, dt)
        fit_poly("LOG_R", r_log, 0, LOG_ZMAX, dl, dt)
        fit_poly("ERF_P", g_erf, 0, mp.mpf("0.25"), dr, dt)
    fit_erfc(np.float32, "10.1", 5)
    fit_erfc(np.float64, "27.5", 10)
