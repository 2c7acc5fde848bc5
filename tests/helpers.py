"""Shared test helpers: ULP distances, contract checks, inputs that reach the tails."""

from __future__ import annotations

import sys
import threading

import numpy as np

_ULP_PARAMS = {np.dtype(np.float32): (24, -125), np.dtype(np.float64): (53, -1021)}


def ulp_error(actual, expected, dtype):
    """|actual - expected| in ULPs of ``dtype`` at the expected value (subnormal spacing
    below the normal range); ``expected`` is float64, or np.longdouble for float64 results.

    NaN against NaN and equal infinities count as 0, NaN against a number as inf; an
    expected value past ``dtype``'s range counts as infinite, so ``inf`` there is 0 ULP.
    """
    dtype = np.dtype(dtype)
    digits, emin = _ULP_PARAMS[dtype]
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    wide = np.longdouble if expected.dtype == np.longdouble else np.float64
    expected = expected.astype(wide)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = expected.astype(dtype)  # overflow -> inf
        expected = np.where(np.isinf(rounded) & np.isfinite(expected),
                            rounded.astype(wide), expected)
        exponent = np.where(expected == 0, emin, np.frexp(expected)[1])  # frexp(0): 0
        ulp = np.ldexp(np.ones_like(expected), np.maximum(exponent, emin) - digits)
        err = (np.abs(actual.astype(wide) - expected) / ulp).astype(np.float64)
    same = (np.isnan(actual) & np.isnan(expected)) | (actual.astype(wide) == expected)
    err = np.where(same, 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


def assert_forward_contract(actual, expected, dtype, what=""):
    """float32: ≤ 4 ULP; float64: ≤ 1e-12 relative (of the float64 reference)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if np.dtype(dtype) == np.float32:
        err = ulp_error(actual, expected, np.float32)
        worst = int(np.argmax(err)) if err.size else 0
        assert err.size == 0 or err.max() <= 4, (
            f"{what}: {err.max():.1f} ULP at index {worst}: got {actual.flat[worst]!r}, "
            f"expected {expected.flat[worst]!r}"
        )
    else:
        _assert_rel(actual, expected, 1e-12, np.zeros_like(expected), what)


def assert_backward_contract(actual, expected, dy, dtype, what=""):
    """Where |dx| ≥ 1e-3·|dy|: ≤ 8 ULP (float32) or 1e-12 relative (float64); elsewhere the
    error is at most 1e-6·|dy| (float32) or 1e-12·|dy| (float64)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    dy = np.abs(np.asarray(dy, np.float64))
    with np.errstate(all="ignore"):
        big = np.abs(expected) >= 1e-3 * dy
    if np.dtype(dtype) == np.float32:
        err = np.where(big, ulp_error(actual, expected, np.float32), 0.0)
        worst = int(np.argmax(err)) if err.size else 0
        assert err.size == 0 or err.max() <= 8, (
            f"{what}: {err.max():.1f} ULP at index {worst}: got {actual.flat[worst]!r}, "
            f"expected {expected.flat[worst]!r}"
        )
        small_tol = 1e-6
    else:
        _assert_rel(np.where(big, actual, 0), np.where(big, expected, 0), 1e-12, 0 * dy, what)
        small_tol = 1e-12
    with np.errstate(all="ignore"):
        diff = np.abs(actual - expected)
    diff = np.where(np.isnan(actual) & np.isnan(expected), 0.0, diff)
    diff = np.where(actual == expected, 0.0, diff)
    bad = ~big & ~(diff <= small_tol * dy)
    assert not bad.any(), f"{what}: abs error {diff[bad].max()} where |dx| < 1e-3|dy|"


def _assert_rel(actual, expected, rtol, atol, what):
    with np.errstate(all="ignore"):
        diff = np.abs(actual - expected)
        ok = (diff <= rtol * np.abs(expected) + atol) | (actual == expected)
    ok |= np.isnan(actual) & np.isnan(expected)
    ok |= (np.abs(expected) < 1e-300) & (np.abs(actual) < 1e-300)
    if not ok.all():
        worst = int(np.argmax(~ok))
        raise AssertionError(
            f"{what}: got {actual.flat[worst]!r}, expected {expected.flat[worst]!r} "
            f"(relative tolerance {rtol})"
        )


def central_difference(f, a, h=1e-6):
    """∂f/∂a by central differences, ``f(a) -> float``. Each element of ``a`` is perturbed in
    place and restored, so ``f`` may take ``a`` as its argument or read it by reference (a
    model's own parameter array)."""
    grad = np.zeros(np.shape(a))
    for i in np.ndindex(np.shape(a)):
        old = a[i]
        a[i] = old + h
        up = f(a)
        a[i] = old - h
        down = f(a)
        a[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def special_values(dtype):
    info = np.finfo(dtype)
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, info.smallest_normal, -info.smallest_normal,
            info.max, -info.max, info.eps, -info.eps, 1.0, -1.0, 3.0, -3.0, 20.0, -20.0]
    return np.array(vals, dtype)


def tail_inputs(dtype, n=20000, seed=0):
    """Uniform [-100, 100], normal·3, log-spaced magnitudes of both signs, special values."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    top = np.log10(float(info.max)) - 1
    bottom = np.log10(float(info.smallest_normal))
    mags = 10.0 ** rng.uniform(bottom, top, n // 4)
    parts = [
        rng.uniform(-100, 100, n // 4),
        rng.normal(0, 3, n // 4),
        mags * rng.choice([-1.0, 1.0], n // 4),
        rng.uniform(-1, 1, n // 4) * 1e-3,
    ]
    return np.concatenate(parts + [special_values(dtype)]).astype(dtype)


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: counts timed calls, reports a best time."""

    def __init__(self, best=1e-3):
        self.calls, self.extra_info, self.group = 0, {}, None
        self._best = best
        self.stats = None

    def __call__(self, fn):
        self.calls += 1
        fn()
        self.stats = type("M", (), {"stats": type("S", (), {"min": self._best})()})()

    def pedantic(self, fn, rounds, iterations):
        self.rounds = rounds
        self(fn)


def run_threads(target, args_list, switch_interval=1e-5):
    """``target(*args)`` in a thread for each ``args``, waited for, with Python switching
    threads every ``switch_interval`` seconds (so that races show in short runs)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    try:
        threads = [threading.Thread(target=target, args=args) for args in args_list]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
