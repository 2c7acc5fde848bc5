"""Accuracy, special values, dtype and vectorization of fastgd.backends.cpu_math.

All kernels are exercised inside an ``@njit`` loop compiled with the aggressive
fastmath flags the activation kernels use (no nnan/ninf), so these tests also check
that the caller's flags cannot break the kernels.  References: NumPy in float64
(float32 results) or in x87 long double (float64 results), ``math.erf``/``math.erfc``
in float64 (float32 results) and mpmath (float64 erf/erfc).
"""

import math
import re

import numpy as np
import pytest
from numba import njit, types

from fastgd.backends import cpu_math as cm
from tests.helpers import ulp_error

FM = {"nsz", "arcp", "contract", "afn", "reassoc"}
NAMES = ["exp", "expm1", "log", "log1p", "tanh", "erf", "erfc"]
DTYPES = [np.float32, np.float64]
MAX_ULP = 2.0
TANH_MAX_ULP = 2.47  # one path, e/(e + 2): the roundings of p, e + 2 and the division add up
LONG_OK = np.finfo(np.longdouble).nmant >= 63  # x87 extended precision available

_loops = {}


def kernel_loop(name):
    """Serial map loop ``out[i] = cm.<name>(x[i])`` compiled with fastmath flags FM."""
    if name not in _loops:
        fn = getattr(cm, name)

        @njit(fastmath=FM, error_model="numpy")
        def loop(out, x):
            for i in range(x.size):
                out[i] = fn(x[i])

        _loops[name] = loop
    return _loops[name]


def apply(name, x):
    out = np.empty_like(x)
    kernel_loop(name)(out, x)
    return out


def _frompy(f):
    return lambda x: np.frompyfunc(f, 1, 1)(x).astype(np.float64)


REF64 = {  # float64 references, accurate enough for float32 results
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "erf": _frompy(math.erf), "erfc": _frompy(math.erfc),
}


def sweep(dtype, n_log=150_000, n_bits=100_000, seed=0):
    """Log-spaced magnitudes over the whole finite range (both signs, subnormals
    included), a dense linear sweep of the interesting range and random bit patterns."""
    fi = np.finfo(dtype)
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        mag = np.geomspace(float(fi.smallest_subnormal), float(fi.max), n_log).astype(dtype)
    lin = np.linspace(-30, 30, n_log).astype(dtype)
    ity = np.int32 if dtype == np.float32 else np.int64
    bits = rng.integers(np.iinfo(ity).min, np.iinfo(ity).max, n_bits, dtype=ity).view(dtype)
    return np.concatenate([mag, -mag, lin, bits[np.isfinite(bits)]])


def check_ulp(name, x, y, ref, dtype):
    err = ulp_error(y, ref, dtype)
    i = int(np.argmax(err))
    bound = TANH_MAX_ULP if name == "tanh" else MAX_ULP
    assert err[i] <= bound, f"{name}({x[i]!r}) = {y[i]!r}, want {ref[i]!r}: {err[i]:.2f} ULP"
    return err[i]


@pytest.mark.parametrize("name", NAMES)
def test_float32_accuracy(name):
    x = sweep(np.float32)
    if name in ("erf", "erfc"):  # math.erf is slow: thin the sweep, densify the core
        x = np.concatenate([x[::4], np.linspace(-10.5, 10.5, 200_001, dtype=np.float32)])
    y = apply(name, x)
    with np.errstate(all="ignore"):
        ref = REF64[name](x.astype(np.float64))
    check_ulp(name, x, y, ref, np.float32)


@pytest.mark.skipif(not LONG_OK, reason="needs x87 long double for a float64 reference")
@pytest.mark.parametrize("name", ["exp", "expm1", "log", "log1p", "tanh"])
def test_float64_accuracy(name):
    x = sweep(np.float64)
    y = apply(name, x)
    with np.errstate(all="ignore"):
        ref = getattr(np, name)(x.astype(np.longdouble))
    check_ulp(name, x, y, ref, np.float64)


@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_float64_accuracy_erf(name):
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.uniform(-6.5, 27.5, 6000), np.geomspace(1e-300, 27.3, 1500),
        -np.geomspace(1e-300, 6.5, 1000), [0.46875, 0.5, 1.0, 4.0, 26.5, 27.2],
    ])
    y = apply(name, x)
    f = getattr(mp, name)
    with mp.workprec(128):
        exact = [f(mp.mpf(float(v))) for v in x]
        hi = np.array([float(v) for v in exact])
        lo = np.array([float(v - mp.mpf(h)) for v, h in zip(exact, hi, strict=True)])
    ref = hi.astype(np.longdouble) + lo.astype(np.longdouble) if LONG_OK else hi
    bound = MAX_ULP if LONG_OK else MAX_ULP + 0.5
    err = ulp_error(y, ref, np.float64)
    i = int(np.argmax(err))
    assert err[i] <= bound, f"{name}({x[i]!r}) = {y[i]!r}: {err[i]:.2f} ULP"


INF, NAN = np.inf, np.nan
SPECIAL = {  # (input, exact expected)
    "exp": [(NAN, NAN), (INF, 1 * INF), (-INF, 0.0), (0.0, 1.0), (-0.0, 1.0), (1e4, INF),
            (-1e4, 0.0)],
    "expm1": [(NAN, NAN), (INF, INF), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0), (1e4, INF),
              (-1e4, -1.0)],
    "log": [(NAN, NAN), (INF, INF), (-INF, NAN), (0.0, -INF), (-0.0, -INF), (1.0, 0.0),
            (-1.0, NAN)],
    "log1p": [(NAN, NAN), (INF, INF), (-INF, NAN), (0.0, 0.0), (-0.0, -0.0), (-1.0, -INF),
              (-2.0, NAN)],
    "tanh": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0), (50.0, 1.0),
             (-50.0, -1.0)],
    "erf": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0), (30.0, 1.0),
            (-30.0, -1.0)],
    "erfc": [(NAN, NAN), (INF, 0.0), (-INF, 2.0), (0.0, 1.0), (-0.0, 1.0), (30.0, 0.0),
             (-30.0, 2.0)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_special_values(name, dtype):
    x = np.array([v for v, _ in SPECIAL[name]], dtype=dtype)
    want = np.array([w for _, w in SPECIAL[name]], dtype=dtype)
    y = apply(name, x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want))  # signed zeros


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_arguments(dtype):
    fi = np.finfo(dtype)
    x = np.array([fi.smallest_subnormal, fi.tiny, 1e-30, 2e-9, 1e-7], dtype=dtype)
    x = np.concatenate([x, -x])
    for name in ("tanh", "expm1", "log1p", "erf"):  # f(x) ~ c*x, relatively accurate
        y = apply(name, x)
        with np.errstate(all="ignore"):
            ref = REF64[name](x.astype(np.float64))
        if dtype == np.float64:
            xl = x.astype(np.longdouble)
            ref = (getattr(np, name)(xl) if name != "erf"
                   else xl * (1 - xl * xl / 3) * (2 / np.sqrt(np.longdouble(np.pi))))
        assert ulp_error(y, ref, dtype).max() <= (TANH_MAX_ULP if name == "tanh" else 1.0), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflow_underflow_edges(dtype):
    big = 88.72 if dtype == np.float32 else 709.78
    x = np.array([big, big + 0.01, -big, -(big + 15), -(big + 40)], dtype=dtype)
    y = apply("exp", x)
    assert np.isfinite(y[0]) and y[1] == np.inf
    assert np.all(y[2:] >= 0) and y[-1] == 0 and np.isfinite(y).sum() == 4
    # subnormal results: approximate but sane (non-negative, monotone)
    xs = np.linspace(-big - 16, -big, 10_001).astype(dtype)
    ys = apply("exp", xs)
    assert np.all(ys >= 0) and np.all(np.diff(ys) >= 0)
    # erfc tail down to the underflow threshold, monotone and non-negative
    xs = np.linspace(0, 10.1 if dtype == np.float32 else 27.3, 10_001).astype(dtype)
    ys = apply("erfc", xs)
    assert np.all(ys >= 0) and np.all(np.diff(ys) <= 0)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_preserved(name):
    x32 = np.array([0.5, 1.5], dtype=np.float32)
    assert apply(name, x32).dtype == np.float32
    fn = getattr(cm, name)

    @njit
    def three(a, b, c):
        return fn(a), fn(b), fn(c)

    three(np.float32(0.5), 0.5, 2)
    ret = three.nopython_signatures[0].return_type
    assert [t.name for t in ret] == ["float32", "float64", "float64"]


@pytest.mark.parametrize("name", NAMES)
def test_float32_kernels_use_no_double_and_vectorize(name):
    loop = kernel_loop(name)
    x = np.ones(64, np.float32)
    loop(np.empty_like(x), x)
    # the float32 loop: a float64 test before this one in the process compiled it first
    ir = loop.inspect_llvm(next(s for s in loop.signatures if s[1].dtype == types.float32))
    assert not re.search(r"\b(fpext|fptrunc)\b|\bf(add|sub|mul|div) [\w ]*double\b", ir), name
    assert re.search(r"<\d+ x float>", ir), f"{name}: loop was not vectorized"


def test_python_call_path():
    assert cm.exp(1.0) == pytest.approx(math.e, rel=1e-15)
    y = cm.erfc(np.array([0.0, 1.0], dtype=np.float32))
    assert y.dtype == np.float32 and y[0] == 1
    assert isinstance(cm.tanh(np.float32(0.5)), np.float32)


def test_ulp_error_helper():
    one = np.float32(1)
    nxt = np.nextafter(one, np.float32(2))
    act = np.array([nxt, np.nan, np.inf, -np.inf, np.inf, 0.0], dtype=np.float32)
    exp_ = np.array([1.0, np.nan, np.inf, -np.inf, 1e39, 1e-46])
    err = ulp_error(act, exp_, np.float32)
    np.testing.assert_allclose(err[:5], [1, 0, 0, 0, 0])
    assert err[5] == pytest.approx(1e-46 / 2.0**-149)
    assert ulp_error(np.array([np.nan]), np.array([1.0]), np.float64)[0] == np.inf
    # at an exact 0 the unit is the smallest subnormal: 1e-7 is far off, not 1.7 ULP
    assert ulp_error(np.float32([1e-7, 0.0, -0.0]), np.zeros(3), np.float32).tolist() == [
        pytest.approx(1e-7 / 2.0**-149), 0, 0]
    assert ulp_error(np.array([2.0**-1074]), np.zeros(1), np.float64)[0] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fmax_is_c_fmax_compiled_and_in_python(dtype):
    from fastgd.scalar import fmax as py_fmax

    @njit(fastmath=FM)
    def pairwise(a, b, out):
        for i in range(a.size):
            out[i] = cm.fmax(a[i], b[i])

    a = np.array([1, np.nan, 2, np.nan, -np.inf, 3], dtype)
    b = np.array([2, 1, np.nan, np.nan, -5, np.inf], dtype)
    out = np.empty_like(a)
    pairwise(a, b, out)
    np.testing.assert_array_equal(out, np.fmax(a, b))
    np.testing.assert_array_equal([py_fmax(x, y) for x, y in zip(a, b)], np.fmax(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_keeps_normal_tail_within_its_range(dtype):
    """normal_tail's kernel has no clamps: its hi = -x²/2 must stay within the exponential's
    range, [-150, 89] in float32 and [-800, 710] in float64, for every x that GELU and its
    derivative compute on (gelu_inside: others compute on x = 1). Widening GELU's limits
    past that would break the kernel's scaling (2**k as two normal factors) on the GPU."""
    from fastgd import scalar
    from fastgd.activation import formulas

    def bound(fn):
        return float(scalar.specialize(fn, {"F": dtype, "W": np.float64}, jit=lambda f: f)())

    widest = max(bound(formulas.gelu_zero), bound(formulas.gelu_backward_zero),
                 formulas.GELU_ONE)
    assert widest**2 / 2 <= (150 if dtype == np.float32 else 800)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_tail_against_mpmath(dtype):
    """(m·erfcx(|x|/√2)/2 + c/√(2π))·e^(hi + lo) against mpmath: with e^(hi + lo) far from 1
    (a rounding of the exponential's argument would show), and as GELU calls it, m = x and
    hi + lo = -x²/2 split exactly, down into subnormal results; the Python default too."""
    mp = pytest.importorskip("mpmath")
    from fastgd.scalar import normal_tail as py_normal_tail

    @njit(fastmath=FM, error_model="numpy")
    def loop(out, m, c, x, hi, lo):
        for i in range(x.size):
            out[i] = cm.normal_tail(m[i], c[i], x[i], hi[i], lo[i])

    rng = np.random.default_rng(2)
    f32 = dtype == np.float32
    n = 3000
    top_x = 14.2 if f32 else 38.8
    x = rng.uniform(-top_x, top_x, 2 * n).astype(dtype)
    m = (rng.choice([-1.0, 1.0], 2 * n) * 10.0 ** rng.uniform(-3, 3, 2 * n)).astype(dtype)
    c = (np.sign(m) * 10.0 ** rng.uniform(-3, 3, 2 * n)).astype(dtype)  # no cancellation
    c[: n // 2] = 0
    hi = rng.uniform(-60 if f32 else -600, 30 if f32 else 300, 2 * n).astype(dtype)
    lo = (hi * rng.uniform(-1, 1, 2 * n) * (2.0**-26 if f32 else 2.0**-55)).astype(dtype)
    # GELU's calls: x·Φ(x), x < 0
    x[n:] = -np.abs(x[n:])
    m[n:], c[n:] = x[n:], 0
    p = x[n:] * x[n:]
    hi[n:] = -0.5 * p
    lo[n:] = -0.5 * (x[n:].astype(np.float64) ** 2 - p).astype(dtype)  # exact for float32
    out = np.empty_like(x)
    loop(out, m, c, x, hi, lo)
    with mp.workprec(160):
        exact = []
        for mi, ci, xi, h, e in zip(m, c, x, hi, lo, strict=True):
            a = abs(mp.mpf(float(xi))) / mp.sqrt(2)
            pdf = mp.exp(float(h) + mp.mpf(float(e))) / mp.sqrt(2 * mp.pi)
            exact.append(float(mi) * mp.erfc(a) / 2 * mp.exp(a * a + h + mp.mpf(float(e)))
                         + float(ci) * pdf)
        ref = np.array([float(v) for v in exact])
    err = ulp_error(out, ref, dtype)
    i = int(np.argmax(err))
    assert err[i] <= 4.0, (  # GELU's forward contract: its calls reach 3.74 (every float32)
        f"normal_tail({m[i]!r}, {c[i]!r}, {x[i]!r}, {hi[i]!r}, {lo[i]!r}) = {out[i]!r}, "
        f"want {ref[i]!r}: {err[i]:.2f} ULP")
    assert np.any(np.abs(out[n:]) < np.finfo(dtype).tiny)  # subnormal results were checked
    py = np.array([py_normal_tail(*v) for v in zip(m.astype(float), c.astype(float),
                                                   x.astype(float), hi.astype(float),
                                                   lo.astype(float), strict=True)])
    np.testing.assert_allclose(py, ref, rtol=1e-13, atol=1e-320)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mul_exp_rounds_once_and_not_the_difference_first(dtype):
    """m·e^(a - b + c) for a <= b far apart (softmax's x - max), a small c and m of any size,
    within MAX_ULP of the exact value, subnormal results included, where exp of the rounded
    difference is off by up to |a - b|/2 ULP; the limits (0, inf, NaN) and the Python
    default (scalar.py) too."""
    from fastgd.scalar import mul_exp as py_mul_exp

    @njit(fastmath=FM, error_model="numpy")
    def loop(out, m, a, b, c):
        for i in range(a.size):
            out[i] = cm.mul_exp(m[i], a[i], b[i], c[i])

    rng = np.random.default_rng(3)
    f32 = dtype == np.float32
    n = 200_000
    b = (rng.standard_normal(n) * (30 if f32 else 200)).astype(dtype)
    a = (b - rng.uniform(0, 100 if f32 else 740, n)).astype(dtype)
    c = (rng.uniform(-1, 1, n) * np.spacing(a - b)).astype(dtype)  # a rounding's size
    m = (rng.choice([-1, 1], n) * np.exp(rng.uniform(-5, 30, n))).astype(dtype)
    c[: n // 2] = 0
    m[: n // 4] = 1
    out = np.empty_like(a)
    loop(out, m, a, b, c)
    wide = np.float64 if f32 else np.longdouble  # a - b and the product are exact in float64
    if not (f32 or LONG_OK):
        pytest.skip("needs x87 long double for a float64 reference")
    ref = m.astype(wide) * np.exp(a.astype(wide) - b.astype(wide) + c.astype(wide))
    err = ulp_error(out, ref, dtype)
    i = int(np.argmax(err))
    assert err[i] <= MAX_ULP, (
        f"mul_exp({m[i]!r}, {a[i]!r}, {b[i]!r}, {c[i]!r}) = {out[i]!r}: {err[i]:.2f} ULP")
    assert np.max(ulp_error(apply("exp", a - b), ref / m, dtype)[m == 1]) > 4 * MAX_ULP  # why

    inf, nan = dtype(np.inf), dtype(np.nan)
    edge_a = np.array([-inf, -inf, inf, nan, 0, 1, 3], dtype)
    edge_b = np.array([0, -inf, inf, 0, nan, 1, -200 if f32 else -800], dtype)
    want = np.array([0, nan, nan, nan, nan, 1, inf], dtype)
    got = np.empty_like(edge_a)
    zero = np.zeros_like(edge_a)
    loop(got, np.ones_like(edge_a), edge_a, edge_b, zero)
    np.testing.assert_array_equal(got, want)
    with np.errstate(all="ignore"):
        py = np.array([py_mul_exp(dtype(1), x, y, dtype(0))
                       for x, y in zip(edge_a, edge_b, strict=True)], dtype)
    np.testing.assert_array_equal(py, want)
    k = np.arange(0, n, n // 200)
    py = np.array([py_mul_exp(*v) for v in zip(m[k], a[k], b[k], c[k], strict=True)], dtype)
    assert np.max(ulp_error(py, ref[k], dtype)) <= MAX_ULP


def test_float32_tanh_every_float_of_the_worst_binades():
    """tanh(|x|) = e/(e + 2), e = e^(2|x|) - 1: every float32 of [2^-3, 2^-2] (its worst case,
    2.46 ULP at 0.2039, from a run over every float32 of [1e-30, 9.2]) and of [0.5, 10]
    (k of the reduction from 0 to 14, and the clamp at 9.1)."""
    for lo, hi in ((2.0**-3, 2.0**-2), (0.5, 10.0)):
        a, b = np.array([lo, hi], np.float32).view(np.int32)
        x = np.arange(a, b, dtype=np.int32).view(np.float32)
        err = ulp_error(apply("tanh", x), np.tanh(x.astype(np.float64)), np.float32)
        i = int(np.argmax(err))
        assert err[i] <= TANH_MAX_ULP, f"tanh({x[i]!r}): {err[i]:.2f} ULP"
        assert np.array_equal(apply("tanh", -x), -apply("tanh", x))


def _scalar_loop(kernel):
    @njit(error_model="numpy")
    def loop(out, x):
        for i in range(x.size):
            out[i] = kernel(x[i])

    return loop


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalef", [True, False])
def test_both_ways_of_scaling_by_two_to_the_k(monkeypatch, dtype, scalef):
    """exp and erfc (exp_mul) built with x*2**k as one ldexp (AVX-512's vscalef) and as two
    multiplies by built powers of two, whichever this machine does not use included:
    accurate over the whole range, subnormal results and overflow included."""
    monkeypatch.setattr(cm, "SCALEF", scalef)
    kernels = cm._build(dtype)
    if scalef and not cm.cpu_target.has_avx512():
        pytest.skip("ldexp is only used where the CPU has AVX-512")  # a libm call elsewhere
    # float64 references: long double for exp (erfc's float64 accuracy is tested above)
    names = ("exp", "erfc") if dtype == np.float32 else ("exp",) if LONG_OK else ()
    for name in names:
        x = sweep(dtype, n_log=20_000, n_bits=10_000)
        big = 89.0 if dtype == np.float32 else 710.0  # beyond: exp overflows
        x = x[np.abs(x) < (big + 100 if name == "exp" else 30)]
        x = np.concatenate([x, np.linspace(-110 if dtype == np.float32 else -750, 0, 20_001,
                                           dtype=dtype)])
        y = np.empty_like(x)
        _scalar_loop(kernels[name])(y, x)
        with np.errstate(all="ignore"):
            if dtype == np.float32:
                ref = REF64[name](x.astype(np.float64))
            else:
                ref = np.exp(x.astype(np.longdouble))
        check_ulp(name, x, y, ref, dtype)
        if name == "exp":
            assert np.isinf(y[x > big]).all() and (y[x < -big - 60] == 0).all()
