"""The scalar language every op's math is written in, and how a backend compiles it.

An op's math (an activation's forward and backward, an optimizer's update rule) is a plain
Python function of scalars. It spells its float type and its transcendental functions with
the names defined here (``F(0.5)``, ``exp(x)``, ``erfc(z)``...; ``W`` is the wide type of
sums that must keep their digits). Written once, it is then
*specialized* per backend and dtype: :func:`specialize` rebuilds the function with these
names bound to that backend's implementations (vectorizable polynomials on the Numba CPU
backend, the device math library on CUDA, NumPy in the CUDA simulator) and to the working
float type, so a float32 kernel never drifts to float64 through a stray Python constant.

Scalar helpers that call each other are marked with :func:`scalar`; specializing a function
specializes (and compiles, with the backend's ``jit``) every marked helper it calls.
"""

from __future__ import annotations

import functools
import math
import types
from fractions import Fraction

# Default bindings: plain Python, so the math also runs (slowly) uncompiled.
F = float
W = float
exp = math.exp
expm1 = math.expm1
log = math.log
log1p = math.log1p
sqrt = math.sqrt
tanh = math.tanh
erf = math.erf
erfc = math.erfc
isfinite = math.isfinite


def in_order(fn):
    """Mark op math whose order of operations is part of its contract: the Numba CPU backend
    compiles it in IEEE arithmetic (``config.FASTMATH_IN_ORDER``), so that ``(c·g)·g`` stays
    as written and each operation is rounded as written. (The CUDA backend keeps every op's
    order, but NVVM's default FMA contraction may fuse a·b + c: last-bit differences.)"""
    fn.in_order = True
    return fn


def grouped(fn):
    """Mark op math whose products must keep their grouping: the Numba CPU backend compiles
    it without ``reassoc`` (``config.FASTMATH`` less it), so that ``dy·(4·e/q)`` is not
    computed as ``(dy·4)·e/q``, which overflowed where the gradient is finite (tanh's
    backward gave NaN for float32 |dy| past a quarter of the float range). Every
    elementwise activation's backward is marked (``activation.registry``): their loops run
    as fast without it (measured). Math that sums along a row (a loop over ``lanes``) is
    not: its reductions need it to vectorize (the losses and the gradient norm 2-3.5x
    slower without, softmax's and prelu's backwards 5x), and its products are of two
    factors, or of factors at most 1 (softmax's e^(x - max) and 1/Σ), in any grouping."""
    fn.grouped = True
    return fn


def output_first(fn):
    """Mark a row function that writes its output before it last reads its input (it keeps
    terms there between two loops): it must not run in place. ``out=x`` runs into a new
    array, copied into ``x`` after (``activation.registry``)."""
    fn.output_first = True
    return fn


def fma(a, b, c):
    """``a*b + c`` rounded once, in the type of ``a`` (Python float or NumPy scalar).

    Op math uses it for error-free products: ``fma(a, b, -(a*b))`` is the exact rounding
    error of ``a*b``. A product of two float32 is exact in float64, so float32 needs no more;
    float64 uses ``math.fma`` (Python 3.13+) or exact rational arithmetic.
    """
    kind = type(a)
    if getattr(a, "dtype", None) is not None and a.dtype.itemsize == 4:
        wide = float(a) * float(b) + float(c)  # a*b exact; the sum is rounded twice, harmlessly
        return kind(wide)
    if not all(math.isfinite(float(v)) for v in (a, b, c)):
        return kind(float(a) * float(b) + float(c))
    try:
        if hasattr(math, "fma"):
            return kind(math.fma(float(a), float(b), float(c)))
        return kind(float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))))
    except OverflowError:  # finite arguments, a result beyond the float range: ±inf
        return kind(math.copysign(math.inf, float(a) * float(b) + float(c)))


def normal_tail(m, c, x, hi, lo):
    """(m·erfcx(|x|/√2)/2 + c/√(2π))·e^(hi + lo), erfcx(a) = e^(a²)·erfc(a), for exact ``hi``
    and small ``lo`` (hi + lo <= 0): with hi + lo = -x²/2 split exactly, m·Φ(-|x|) + c·φ(x)
    (Φ, φ: the standard normal cdf and pdf) from one exponential, and keeping its digits
    where Φ alone would be subnormal (GELU: m = x, c = 0 for x·Φ(x), x < 0).

    Plain float64 math here: erfcx from erfc·e^(a²) where that is exact enough (a < 25),
    else its asymptotic series; e^(hi + lo) scaled by e^600 where it would be subnormal, so
    the product rounds once.
    """
    a = abs(float(x)) * 0.7071067811865476
    if a < 25.0:
        ex = math.erfc(a) * math.exp(a * a)
    else:  # 1/(a√π)·(1 - u + 3u² - 15u³ + 105u⁴ - 945u⁵), u = 1/(2a²) < 1e-3
        u = 0.5 / (a * a)
        ex = (1 - u * (1 - 3 * u * (1 - 5 * u * (1 - 7 * u * (1 - 9 * u))))) * (
            0.5641895835477563 / a)
    v = float(m) * 0.5 * ex + float(c) * 0.3989422804014327
    s = float(hi) + float(lo)
    shift = 600.0 if s < -600.0 else 0.0
    return (v * math.exp(s + shift)) * math.exp(-shift)


def mul_exp(m, a, b, c):
    """m·e^(a - b + c) for small ``c``, with the rounding of ``a - b`` put back (TwoSum: the exact
    difference is d + d_lo, and e^(d + d_lo + c) = e^d·(1 + d_lo + c) to first order). A
    rounded difference would reach exp with an error that exp multiplies by |a - b|:
    softmax's x - max in float32, GELU-tanh's argument. The Numba CPU kernel is within
    1.56 ULP of the product; here e^d is scaled by e^64 where it would be subnormal."""
    d = a - b
    if d > 709.782712893384:  # e^d overflows even float64 (where math.exp would raise)
        return float(m) * math.inf
    bb = d - a
    d_lo = (a - (d - bb)) - (b + bb)
    shift = 64.0 if d < -600.0 else 0.0
    e = exp(d + shift)
    if e == 0 or e == math.inf:  # no 0·NaN or inf·0
        return float(m) * e
    return (float(m) * (e + e * (float(d_lo) + float(c)))) * math.exp(-shift)


def fmax(a, b):
    """The larger of ``a`` and ``b``, ignoring a NaN (C's ``fmax``); vectorizes as a
    reduction where ``a if a > b else b`` does not (no ``nnan`` flag)."""
    return a if a > b or b != b else b


#: The names a backend binds. ``F`` is the working float type (``numpy.float32``...), ``W``
#: the wide one for sums that must not lose digits (float64 on every backend).
NAMES = ("F", "W", "exp", "expm1", "log", "log1p", "sqrt", "tanh", "erf", "erfc", "normal_tail",
         "mul_exp", "isfinite", "fma", "fmax", "lanes", "lanes_sum", "lanes_max")


#: The functions that make op math compute-bound on a CPU (a polynomial of dozens of operations
#: each, where ``sqrt`` and division are single instructions).
TRANSCENDENTAL = ("exp", "expm1", "log", "log1p", "tanh", "erf", "erfc", "normal_tail",
                  "mul_exp")


def scalar(fn):
    """Mark ``fn`` as a scalar helper that :func:`specialize` must follow."""
    fn._fastgd_scalar = True
    return fn


#: A row function's loop over its row: all of it here, one thread's share of it where a
#: block of threads runs each row (``backends/cuda_rows``).
lanes = range


@scalar
def lanes_sum(v):
    """A row's partial sum combined over the threads that run the row (here: one)."""
    return v


@scalar
def lanes_max(v):
    """A row's partial maximum combined over the threads that run the row (here: one)."""
    return v


def _helpers(fn) -> dict:
    """The globals ``fn`` calls that are marked :func:`scalar`, by name."""
    return {name: helper for name in fn.__code__.co_names
            if getattr(helper := fn.__globals__.get(name), "_fastgd_scalar", False)}


@functools.cache  # asked on every parallel ``map`` call: op math never changes
def calls(fn, names: tuple) -> bool:
    """Whether ``fn``, or a :func:`scalar` helper it calls, uses one of ``names``."""
    return any(n in names for n in fn.__code__.co_names) or any(
        calls(helper, names) for helper in _helpers(fn).values())


def with_globals(fn, glb: dict):
    """``fn`` rebuilt over the globals ``glb``: the same code, defaults and closure."""
    new = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__qualname__, new.__doc__ = fn.__qualname__, fn.__doc__
    return new


def specialize(fn, bindings: dict, jit, _memo: dict | None = None):
    """Return ``fn`` rebuilt with ``bindings`` for the names in :data:`NAMES`.

    Every global that ``fn`` calls and that is marked :func:`scalar` is specialized the same
    way and compiled with ``jit`` (``numba.njit`` or ``cuda.jit(device=True)``), so the
    result is ready to be compiled by the same ``jit``.
    """
    memo = {} if _memo is None else _memo
    if fn in memo:
        return memo[fn]
    unknown = set(bindings) - set(NAMES)
    if unknown:
        raise ValueError(f"cannot bind {sorted(unknown)}: the scalar names are {NAMES}")
    glb = dict(fn.__globals__)
    glb.update(bindings)
    for name, helper in _helpers(fn).items():
        if name not in bindings:  # a bound name is the backend's, not the helper
            glb[name] = jit(specialize(helper, bindings, jit, memo))
    new = with_globals(fn, glb)
    memo[fn] = new
    return new
