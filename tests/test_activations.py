"""Activations on the NumPy and Numba CPU backends against float64 references.

The NumPy reference is itself checked against 50-digit mpmath values and derivatives, so a
mistake shared by the reference and the kernels cannot hide.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastgd
from fastgd.scalar import F, lanes, lanes_sum, scalar
from tests.helpers import (
    assert_backward_contract,
    assert_forward_contract,
    central_difference,
    tail_inputs,
)

# (name, params): every elementwise activation, parameters away from their defaults too.
ELEMENTWISE = [
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 1.5}),
    ("selu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
    ("silu", {}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
    ("mish", {}),
    ("hardsigmoid", {}),
    ("hardswish", {}),
]
IDS = [n + "".join(f"-{v}" for v in p.values()) for n, p in ELEMENTWISE]
DTYPES = [np.float32, np.float64]


def reference(name, x, params, dy=None):
    """The NumPy backend on float64 copies: the oracle."""
    act = fastgd.activations[name]
    x64 = np.asarray(x, np.float64)
    if dy is None:
        return act.forward(x64, backend="numpy", **params)
    return act.backward(np.asarray(dy, np.float64), x64, backend="numpy", **params)


# -- the reference against 50-digit math --------------------------------------------------

mp.mp.dps = 50
K = mp.sqrt(2 / mp.pi)


def _mp_softplus(x, beta=1, threshold=20):
    return x if beta * x > threshold else mp.log1p(mp.exp(beta * x)) / beta


MP_FORMULAS = {
    "sigmoid": lambda x: 1 / (1 + mp.exp(-x)),
    "tanh": mp.tanh,
    "relu": lambda x: max(x, 0),
    "leaky_relu": lambda x, negative_slope=0.01: x if x > 0 else negative_slope * x,
    "elu": lambda x, alpha=1.0: x if x > 0 else alpha * mp.expm1(x),
    "selu": lambda x: mp.mpf("1.0507009873554804934193349852946")
    * (x if x > 0 else mp.mpf("1.6732632423543772848170429916717") * mp.expm1(x)),
    "gelu": lambda x, approximate="none": (
        x * mp.erfc(-x / mp.sqrt(2)) / 2
        if approximate == "none"
        else x / (1 + mp.exp(-2 * K * (x + mp.mpf("0.044715") * x**3)))
    ),
    "silu": lambda x: x / (1 + mp.exp(-x)),
    "softplus": _mp_softplus,
    "mish": lambda x: x * mp.tanh(_mp_softplus(x)),
    "hardsigmoid": lambda x: min(max(x + 3, 0), 6) / 6,
    "hardswish": lambda x: x * min(max(x + 3, 0), 6) / 6,
}
KINKS = {"relu": [0], "leaky_relu": [0], "elu": [0], "selu": [0], "hardsigmoid": [-3, 3],
         "hardswish": [-3, 3], "softplus": [10 / 2, 20]}


@pytest.mark.parametrize(("name", "params"), ELEMENTWISE, ids=IDS)
def test_reference_matches_50_digit_math(name, params):
    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.uniform(-30, 30, 40), rng.normal(0, 2, 40), [-700, -50, 50, 700]])
    xs = np.array([x for x in xs if all(abs(x - k) > 1e-3 for k in KINKS.get(name, []))])
    f = MP_FORMULAS[name]
    want = np.array([float(f(mp.mpf(float(x)), **params)) for x in xs])
    dwant = np.array([float(mp.diff(lambda t: f(t, **params), mp.mpf(float(x)))) for x in xs])
    got = reference(name, xs, params)
    dgot = reference(name, xs, params, dy=np.ones_like(xs))
    # the far tails are ill-conditioned (|d log f / d log x| ~ x²): 1e-11 there
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-300)
    np.testing.assert_allclose(dgot, dwant, rtol=1e-12, atol=1e-300)


#: where the derivative jumps: the one-sided value torch takes there (and -1.5, 10, 20 near)
KINK_POINTS = np.array([-3.0, -1.5, -0.0, 0.0, 3.0, 10.0, 20.0])
KINK_CASES = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}),
              ("selu", {}), ("hardsigmoid", {}), ("hardswish", {}), ("softplus", {}),
              ("softplus", {"beta": 2.0, "threshold": 20.0})]


def torch_at_kinks(name, params, x):
    """torch.nn.functional's value and derivative at ``x`` (float64)."""
    torch = pytest.importorskip("torch")

    fn = getattr(torch.nn.functional, name)
    t = torch.tensor(x, requires_grad=True)
    y = fn(t, *params.values())
    y.backward(torch.ones_like(t))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "params"), KINK_CASES, ids=[f"{n}{p or ''}" for n, p in
                                                              KINK_CASES])
def test_values_and_derivatives_at_the_kinks_follow_torch(name, params, backend):
    want, dwant = torch_at_kinks(name, params, KINK_POINTS)
    act = fastgd.activations[name]
    np.testing.assert_allclose(act.forward(KINK_POINTS, backend=backend, **params), want,
                               rtol=1e-7)  # the branch is what counts (torch's float64
    dx = act.backward(np.ones_like(KINK_POINTS), KINK_POINTS, backend=backend, **params)
    np.testing.assert_allclose(dx, dwant, rtol=1e-7)  # hardsigmoid' is a float32 1/6)


LIMITS = {  # name: (f(-inf), f(+inf), f'(-inf), f'(+inf))
    "sigmoid": (0, 1, 0, 0),
    "tanh": (-1, 1, 0, 0),
    "relu": (0, np.inf, 0, 1),
    "leaky_relu": (-np.inf, np.inf, 0.01, 1),
    "elu": (-1, np.inf, 0, 1),
    "selu": (-1.0507009873554804 * 1.6732632423543772, np.inf, 0, 1.0507009873554804),
    "gelu": (0, np.inf, 0, 1),
    "silu": (0, np.inf, 0, 1),
    "softplus": (0, np.inf, 0, 1),
    "mish": (0, np.inf, 0, 1),
    "hardsigmoid": (0, 1, 0, 0),
    "hardswish": (0, np.inf, 0, 1),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_infinities_give_the_limits_and_nan_propagates(name, backend):
    x = np.array([-np.inf, np.inf, np.nan])
    y = fastgd.activations[name].forward(x, backend=backend)
    dx = fastgd.activations[name].backward(np.ones(3), x, backend=backend)
    lo, hi, dlo, dhi = LIMITS[name]
    np.testing.assert_allclose(y[:2], [lo, hi], rtol=1e-15)
    np.testing.assert_allclose(dx[:2], [dlo, dhi], rtol=1e-15)
    assert np.isnan(y[2]) and np.isnan(dx[2])


# -- every backend against the reference, under the accuracy contract ----------------------


#: The NumPy backend in float64 is the reference itself (held against 50-digit math above)
BACKEND_DTYPES = [("numpy", np.float32), ("numba", np.float32), ("numba", np.float64)]


@pytest.mark.parametrize(("backend", "dtype"), BACKEND_DTYPES,
                         ids=[f"{b}-{np.dtype(d)}" for b, d in BACKEND_DTYPES])
@pytest.mark.parametrize(("name", "params"), ELEMENTWISE, ids=IDS)
def test_accuracy_contract(name, params, backend, dtype):
    x = tail_inputs(dtype)
    dy = np.random.default_rng(2).normal(0, 1, x.size).astype(dtype)
    act = fastgd.activations[name]
    y = act.forward(x, backend=backend, **params)
    dx = act.backward(dy, x, backend=backend, **params)
    assert y.dtype == dtype and dx.dtype == dtype
    what = f"{name}{params} {backend} {np.dtype(dtype)}"
    assert_forward_contract(y, reference(name, x, params), dtype, what + " forward")
    assert_backward_contract(dx, reference(name, x, params, dy), dy, dtype, what + " backward")


@pytest.mark.parametrize(("name", "params"), ELEMENTWISE, ids=IDS)
def test_parallel_loop_matches_reference(name, params):
    """Arrays above the serial threshold run the prange loop."""
    n = fastgd.config.PARALLEL_THRESHOLD * 2 + 3
    x = np.random.default_rng(3).uniform(-12, 12, n).astype(np.float32)
    act = fastgd.activations[name]
    assert_forward_contract(act.forward(x, **params), reference(name, x, params), np.float32)
    dy = np.ones_like(x)
    assert_backward_contract(
        act.backward(dy, x, **params), reference(name, x, params, dy), dy, np.float32
    )


@pytest.mark.parametrize(("name", "params"), ELEMENTWISE, ids=IDS)
def test_backward_matches_finite_differences(name, params):
    x = np.random.default_rng(4).uniform(-6, 6, 400)
    x = x[np.all([np.abs(x - k) > 1e-3 for k in KINKS.get(name, [])], axis=0)]
    act = fastgd.activations[name]
    h = 1e-6
    numeric = (act.forward(x + h, **params) - act.forward(x - h, **params)) / (2 * h)
    np.testing.assert_allclose(act.backward(np.ones_like(x), x, **params), numeric,
                               rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    st.sampled_from(ELEMENTWISE),
)
def test_any_shape_and_value_matches_the_reference(x, case):
    name, params = case
    y = fastgd.activations[name].forward(x, backend="numba", **params)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_forward_contract(y, reference(name, x, params), np.float32)


# -- prelu -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_prelu_on_empty_inputs(backend):
    """No channels (one weight per channel: none) or no samples: empty dx, and a dweight of
    zeros (no element contributes), as torch; numba divided by the zero channels."""
    f32 = np.float32
    dx, dw = fastgd.prelu_backward(np.ones((3, 0, 2), f32), np.ones((3, 0, 2), f32),
                                   np.ones(0, f32), backend=backend)
    assert dx.shape == (3, 0, 2) and dw.shape == (0,)
    dx, dw = fastgd.prelu_backward(np.ones((0, 4, 2), f32), np.ones((0, 4, 2), f32),
                                   np.ones(4, f32), backend=backend)
    assert dx.shape == (0, 4, 2) and (dw == 0).all() and dw.dtype == f32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
# (2000, 7), (700, 9, 1, 1): channels of one element past PARALLEL_THRESHOLD (a grid forward,
# a row per channel backward on the CPU)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 3, 6), (2, 3, 2, 2), (2000, 7),
                                   (700, 9, 1, 1)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu(shape, per_channel, backend, dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    channels = shape[1] if per_channel and len(shape) > 1 else 1
    w = rng.uniform(0.05, 0.5, channels).astype(dtype)
    y = fastgd.prelu(x, w, backend=backend)
    dx, dw = fastgd.prelu_backward(dy, x, w, backend=backend)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    wb = w64.reshape((1, -1) + (1,) * (len(shape) - 2)) if channels > 1 else w64[0]
    np.testing.assert_array_equal(y, np.where(x > 0, x, (wb * x64).astype(dtype)))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, (wb * dy64).astype(dtype)))
    # dweight by finite differences of L = Σ dy·prelu(x, w), in float64
    h = 1e-6
    numeric = []
    for c in range(channels):
        up, down = w64.copy(), w64.copy()
        up[c] += h
        down[c] -= h
        loss = lambda ww: np.sum(dy64 * fastgd.prelu(x64, ww, backend=backend))
        numeric.append((loss(up) - loss(down)) / (2 * h))
    tol = 1e-5 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(dw, numeric, rtol=tol, atol=tol)
    assert dw.shape == w.shape and dw.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096, 256), (300, 70), (20, 64), (5000, 8)])
def test_prelu_dweight_of_channels_side_by_side(shape, dtype):
    """prelu of (N, C) sums each channel's dweight down its column: side by side in blocks
    (``backends.columns``, the row function's return value into a result per column), or,
    8 channels, as rows swapped in; against a float64 sum."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 2, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    w = rng.uniform(0.05, 0.5, shape[1]).astype(dtype)
    dx, dw = fastgd.prelu_backward(dy, x, w, backend="numba")
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    want = np.where(x64 > 0, 0.0, dy64 * x64).sum(axis=0)
    np.testing.assert_allclose(dw, want, rtol=1e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, (w * dy64).astype(dtype)))


# -- backward from the forward output ----------------------------------------------------

FROM_OUTPUT = [(n, p) for n, p in ELEMENTWISE if fastgd.activations[n].takes_output]
FROM_OUTPUT_IDS = [i for i, (n, _) in zip(IDS, ELEMENTWISE, strict=True)
                   if fastgd.activations[n].takes_output]


def from_output_cases(dtype):
    """(dy, y, dx wanted): y = f(x) in ``dtype``, the wanted dx the float64 derivative at the
    float64 y, written in x (a different formula from the one in y)."""
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.uniform(-8, 8, 3000), rng.normal(0, 1, 1000),
                        [0.0, -0.0, 1.0, -1.0, 0.5, -0.5]]).astype(dtype)
    dy = rng.normal(0, 1, x.size).astype(dtype)
    return x, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "params"), FROM_OUTPUT, ids=FROM_OUTPUT_IDS)
def test_backward_from_output(name, params, backend, dtype):
    """backward(dy, y=f(x)) is the derivative at x: in float64 against the x formula; in
    float32 within the backward contract of the exact derivative at the float32 y given."""
    x, dy = from_output_cases(dtype)
    act = fastgd.activations[name]
    y = act.forward(x, backend=backend, **params)
    dx = act.backward(dy, y=y, backend=backend, **params)
    assert dx.dtype == dtype
    if dtype == np.float64:
        want = reference(name, x, params, dy)
    else:  # the float64 derivative at x64 = f⁻¹(y): through the float64 formula in y
        want = act.backward(dy.astype(np.float64), y=y.astype(np.float64), backend="numpy",
                            **params)
        np.testing.assert_allclose(want, reference(name, x, params, dy), rtol=1e-6, atol=1e-6)
    assert_backward_contract(dx, want, dy, dtype, f"{name} from y ({backend})")
    nan = act.backward(np.ones(3, dtype), y=np.array([np.nan, 1, -0.5], dtype),
                       backend=backend, **params)
    assert np.isnan(nan[0]) and not np.isnan(nan[1:]).any()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: fastgd.gelu_backward(a, y=a), "has no backward from the output"),
        (lambda a: fastgd.silu_backward(a, y=a), "has no backward from the output"),
        (lambda a: fastgd.sigmoid_backward(a, a, y=a), "x or its output y=, not both"),
        (lambda a: fastgd.prelu(a, np.ones(2, a.dtype)), r"expected 1 \(x is 1-d"),
        (lambda a: fastgd.tanh_backward(a), "needs the forward input x or"),
        (lambda a: fastgd.leaky_relu_backward(a, y=a, negative_slope=-0.1), "negative_slope >= 0"),
        (lambda a: fastgd.elu_backward(a, y=a, alpha=-1.0), "alpha >= 0"),
        (lambda a: fastgd.tanh_backward(a, y=a[:1]), "shapes"),
        (lambda a: fastgd.tanh_backward(a, y=a.astype(np.float64)), "dtype"),
    ],
)
def test_backward_from_output_rejects(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(np.ones(4, np.float32))


# -- softmax and log_softmax -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 6, 5), (3, 40, 50)])  # the second: lines as rows
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(name, axis, backend, dtype, shape):
    rng = np.random.default_rng(6)
    x = (rng.normal(0, 5, shape) + rng.choice([0, 900], shape)).astype(dtype)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    act = fastgd.activations[name]
    y = act.forward(x, axis=axis, backend=backend)
    want = act.forward(x.astype(np.float64), axis=axis, backend="numpy")
    assert_forward_contract(y, want, dtype, f"{name} axis={axis}")
    dx = act.backward(dy, x, axis=axis, backend=backend)
    dx_from_y = act.backward(dy, y=want.astype(dtype), axis=axis, backend=backend)
    dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), axis=axis,
                         backend="numpy")
    assert_backward_contract(dx, dwant, dy, dtype, f"{name} backward")
    np.testing.assert_allclose(dx_from_y, dwant, rtol=1e-4 if dtype == np.float32 else 1e-9,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_reference_against_math_and_finite_differences(name):
    x = np.array([[1.0, 2.0, -3.0, 0.5], [1000.0, 1000.0, -1000.0, 999.0]])
    rows = []
    for row in x:
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        rows.append([math.exp(v - m) / z if name == "softmax" else v - m - math.log(z)
                     for v in row])
    act = fastgd.activations[name]
    np.testing.assert_allclose(act.forward(x, backend="numpy"), rows, rtol=1e-15, atol=1e-300)
    dy = np.array([[0.3, -1.0, 2.0, 0.1], [1.0, 0.5, -0.5, 2.0]])
    numeric = central_difference(lambda a: np.sum(dy * act.forward(a)), x.copy())
    for backend in ("numpy", "numba"):
        np.testing.assert_allclose(act.backward(dy, x, backend=backend), numeric, rtol=1e-6,
                                   atol=1e-7)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_float32_softmax_backward_from_y_within_the_contract(backend):
    """dx = (dy - Σ dy·y)·y at the float32 y given, against float64 math at that y, with dy
    near Σ dy·y (dy_i - Σ cancels: a float32 Σ fails by thousands of ULP), rows of 7-1000."""
    rng = np.random.default_rng(8)
    for length in (7, 256, 1000):
        x = rng.normal(0, 3, (40, length))
        y = fastgd.softmax(x, backend="numpy").astype(np.float32)
        dy = (1.5 + rng.normal(0, 1, x.shape) * np.logspace(-6, 0, 40)[:, None])
        dy = dy.astype(np.float32)
        got = fastgd.softmax_backward(dy, y=y, backend=backend)
        want = fastgd.softmax_backward(dy.astype(np.float64), y=y.astype(np.float64),
                                       backend="numpy")
        assert got.dtype == np.float32
        assert_backward_contract(got, want, dy, np.float32, f"softmax backward, rows of {length}")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_float32_softmax_keeps_the_rounding_of_x_minus_max(backend):
    """x - max rounds in float32 (here -60.750004 - 3.5 = -64.25000381...), and exp
    amplifies that by 64: 39 ULP unless the rounding is put back."""
    v = np.nextafter(np.float32(-60.75), np.float32(-100))
    x = np.array([[3.5, v, 0.0], [v, 3.5, -80.00001]], np.float32)
    want = fastgd.softmax(x.astype(np.float64), backend="numpy")
    assert_forward_contract(fastgd.softmax(x, backend=backend), want, np.float32, "softmax")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_beside_huge_negative_entries(name, dtype):
    """Masked entries (finfo.min, -1e10) beside a negative max: x_i - max rounds, and its
    TwoSum remainder (about -max) was added to the exponent after the exponent was clamped
    to the underflow limit: e^(-150 + 200) gave softmax [1.9e-22, 1.0] for [-200, -1e10] and
    NaN beside finfo.min; rows of N(0, 1e30) were NaN in most rows."""
    lo = float(np.finfo(dtype).min)
    x = np.array([[-300, -301, lo], [-200, -1e10, -1e10], [-150, -1e10, -151],
                  [-120, -125, lo], [-4000, -1e20 if dtype == np.float64 else -1e30, -4001],
                  [0, lo, lo]], dtype)
    wild = (np.random.default_rng(4).normal(0, 1e30, (30, 40))).astype(dtype)
    act = fastgd.activations[name]
    for rows in (x, wild):
        want = act.forward(rows.astype(np.float64), backend="numpy")
        assert np.isfinite(want).all() if name == "softmax" else not np.isnan(want).any()
        for backend in ("numba", "numpy"):
            assert_forward_contract(act.forward(rows, backend=backend), want, dtype,
                                    f"{name} on {backend}")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_prelu_dweight_sums_down_long_channels_in_float64(backend):
    """dweight of (5000, 8, 1, 1) float32 within 2e-7 of the float64 sum (relative to the
    largest) on every backend (the NumPy backend summed in float32: 8.7e-7)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 8, 1, 1)) * 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    want = np.where(x > 0, 0, x.astype(np.float64) * dy).sum(axis=(0, 2, 3))
    _, dw = fastgd.prelu_backward(dy, x, np.full(8, 0.25, np.float32), backend=backend)
    assert dw.dtype == np.float32
    assert np.abs(dw - want).max() <= 2e-7 * np.abs(want).max()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_prelu_dweight_of_cancelling_products_is_the_sum_rounded_once(backend):
    """Channels whose products x·dy cancel to ~1e-3 of their size: dweight within 1 ULP of
    the exact sum on every backend (the NumPy backend rounded each product to float32
    before its float64 sum: 1.6e-4 relative off, an audit)."""
    rng = np.random.default_rng(1)
    half = (-rng.uniform(1, 2, (2000, 6))).astype(np.float32)
    dy_half = rng.standard_normal(half.shape).astype(np.float32)
    x = np.concatenate([half, half])
    dy = np.concatenate([dy_half, (-dy_half * (1 + 1e-3 * rng.standard_normal(half.shape)))
                         .astype(np.float32)])
    exact = np.array([math.fsum(c) for c in (x.astype(np.float64) * dy).T])
    _, dw = fastgd.prelu_backward(dy, x, np.full(6, 0.25, np.float32), backend=backend)
    assert np.all(np.abs(dw - exact) <= np.spacing(np.abs(exact).astype(np.float32)))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_elu_backward_with_an_alpha_that_lifts_subnormal_exponentials(backend):
    """alpha·e^x with e^x subnormal in float32 and alpha past 2^64 (3e38: the product
    ~1.7e-3 at x = -95): computed in float64 (86 ULP off in float32); alpha 1.5 there
    stays float32."""
    x = np.linspace(-104, -86, 2001).astype(np.float32)
    dy = np.ones_like(x)
    for alpha in (3e38, 1e30):
        want = reference("elu", x, {"alpha": float(np.float32(alpha))}, dy)
        got = fastgd.elu_backward(dy, x, alpha=alpha, backend=backend)
        assert_backward_contract(got, want, dy, np.float32, f"alpha={alpha}")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_leaky_relu_with_a_slope_subnormal_in_float32_computes_in_float64(backend):
    """A parameter below float32's normal range keeps a few digits there: the slope 1e-40
    put slope·x 57 ULP off (found by an audit); computed in float64."""
    x = np.concatenate([-np.logspace(-3, 38, 500), np.logspace(-3, 38, 20)]).astype(
        np.float32)
    dy = np.ones_like(x)
    for slope in (1e-40, -3e-39):
        params = {"negative_slope": slope}
        want = reference("leaky_relu", x, params)
        got = fastgd.leaky_relu(x, slope, backend=backend)
        assert_forward_contract(got, want, np.float32, f"slope {slope}")
        want = reference("leaky_relu", x, params, dy)
        got = fastgd.leaky_relu_backward(dy, x, slope, backend=backend)
        assert_backward_contract(got, want, dy, np.float32, f"slope {slope}")


@pytest.mark.parametrize("length", [31, 52, 63])
def test_float32_log_softmax_rows_within_the_contract(length):
    """Rows of 30-100 of scale 10 (a user's audit): the terms of log Σ summed in float32 put
    y_max 6.3 ULP off (rows of 52), 4.9 (rows of 31); summed in float64, 1.4."""
    x = (np.random.default_rng(0).standard_normal((20000, length)) * 10).astype(np.float32)
    want = fastgd.log_softmax(x.astype(np.float64), backend="numpy")
    assert_forward_contract(fastgd.log_softmax(x, backend="numba"), want, np.float32,
                            f"rows of {length}")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_float32_log_softmax_sums_terms_below_the_normal_range(backend):
    """Σ e^(x_i - max) of terms that are subnormal in float32 (e^-100.75: 4 bits left each):
    a thousand of them made log_softmax's largest output 3.7 % off (-1.8199e-41 for
    -1.7555e-41)."""
    x = np.array([[100.0] + [-0.75] * 999, [90.0] + [-3.0] * 500 + [-10.0] * 499],
                 np.float32)
    want = fastgd.log_softmax(x.astype(np.float64), backend="numpy")
    assert_forward_contract(fastgd.log_softmax(x, backend=backend), want, np.float32,
                            "log_softmax")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_long_rows(name, length, dtype):
    """Rows of one element, around ``SUM_BLOCK`` (the length of the blocks some row sums add)
    and long: a row whose max dominates (Σ within 1e-12 of 1: log Σ must keep its digits), a
    row with the max twice, a NaN after the first block; in place too."""
    rng = np.random.default_rng(12)
    x = rng.normal(0, 4, (6, length))
    x[1, length // 2] = 45.0  # the others are < 1e-12 of it
    x[2, :2] = 7.0 if length > 1 else x[2, :2]
    if length > 65:
        x[3, 70] = np.nan
    x = x.astype(dtype)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), backend="numpy")
    if name == "log_softmax" and length > 1:  # the reference's dominant row, against mpmath
        mp = pytest.importorskip("mpmath")
        row = [mp.mpf(float(v)) for v in x[1]]
        log_sum = mp.log(mp.fsum(mp.exp(v - max(row)) for v in row))
        exact = [float(v - max(row) - log_sum) for v in row]
        np.testing.assert_allclose(want[1], exact, rtol=1e-14)
    y = act.forward(x, backend="numba")
    assert_forward_contract(y, want, dtype, f"{name} rows of {length}")
    in_place = x.copy()
    assert act.forward(in_place, out=in_place, backend="numba") is in_place
    assert_forward_contract(in_place, want, dtype, f"{name} rows of {length}, in place")


def on_numba(fn, *arrays, **params):
    """``fn`` on the Numba backend: the ``run`` the shared checks below take (tests/cuda
    gives them its own)."""
    return fn(*arrays, backend="numba", **params)


def check_rows_against_the_reference(name, x, dy, run, what):
    """softmax's or log_softmax's forward and both backwards of rows ``x`` by ``run(fn,
    *arrays, **params)`` (fn on the backend under test, as a NumPy array) within the
    contract against the float64 reference (from y: the reference's y, rounded); returns
    (y, dx from x, dx from y)."""
    act = fastgd.activations[name]
    dtype = x.dtype
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y = run(act.forward, x)
    assert_forward_contract(y, act.forward(x64, backend="numpy"), dtype, what)
    dx = run(act.backward, dy, x)
    assert_backward_contract(dx, act.backward(dy64, x64, backend="numpy"), dy, dtype,
                             f"{what} backward from x")
    y_ref = act.forward(x64, backend="numpy").astype(dtype)
    dx_from_y = run(act.backward, dy, y=y_ref)
    assert_backward_contract(dx_from_y,
                             act.backward(dy64, y=y_ref.astype(np.float64), backend="numpy"),
                             dy, dtype, f"{what} backward from y")
    return y, dx, dx_from_y


def check_wide_spread_rows(name, dtype, length, run):
    """Rows whose terms e^(x - max) leave the normal numbers: the kernels take those past
    each threshold as 0 or stop their exponent (softmax's forward below -104 in float32,
    log_softmax's terms below -125, the from-input backwards' float64 e^d at -650 in their
    sums and -707.5 in dx) instead of forming subnormal numbers. Within the contract
    against the float64 reference (:func:`check_rows_against_the_reference`), on rows of
    spread 20 to 5000, on lanes on both sides of each threshold, and on rows where log Σ
    is a subnormal sum of such terms; dy = 0 in some lanes, where dx is the term alone."""
    rng = np.random.default_rng(21)
    offsets = np.concatenate([np.linspace(-140, -80, 601), np.linspace(-800, -700, 201)])
    rows = [rng.normal(0, s, length) for s in (20, 100, 200, 1000, 5000)]
    rows += [np.concatenate([[0.0], -offsets[k::4], [-1.5]]) for k in range(4)]
    rows += [np.concatenate([[0.0], np.full(length - 1, -d)]) for d in (96, 100, 104)]
    x = np.array([np.resize(r, length) for r in rows]).astype(dtype)
    dy = rng.normal(0, 3, x.shape).astype(dtype)
    dy[:, ::5] = 0
    check_rows_against_the_reference(name, x, dy, run, name)


def check_masked_rows(dtype, run):
    """Rows with masked logits (-1e4, -1e9, -inf, as attention and vocabulary masks set
    them): softmax 0 and its gradient 0 there exactly, log_softmax's gradient dy there
    exactly, forward and both backwards; the rest within the contract
    (:func:`check_rows_against_the_reference`, whose ``run`` this takes)."""
    rng = np.random.default_rng(8)
    x = rng.normal(0, 3, (6, 50))
    mask = np.zeros(x.shape, bool)
    mask[:, 20:] = True
    mask[3:, 1::3] = True
    x[mask] = np.resize([-1e4, -1e9, -np.inf], int(mask.sum()))
    x = x.astype(dtype)
    dy = rng.normal(0, 3, x.shape).astype(dtype)
    for name in ("softmax", "log_softmax"):
        y, dx, dx_from_y = check_rows_against_the_reference(name, x, dy, run, f"masked {name}")
        for grad in (dx, dx_from_y):
            np.testing.assert_array_equal(grad[mask], 0 if name == "softmax" else dy[mask])
        if name == "softmax":
            np.testing.assert_array_equal(y[mask], 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_on_masked_rows(dtype, axis):
    """:func:`check_masked_rows` on the Numba backend (tests/cuda: on CUDA), along rows and
    along axis 0 (the lines side by side: ``backends.columns``)."""
    def run(fn, *arrays, **kw):
        if axis == -1:
            return on_numba(fn, *arrays, **kw)
        t = {k: np.ascontiguousarray(v.T) for k, v in kw.items()}
        return on_numba(fn, *(np.ascontiguousarray(a.T) for a in arrays), axis=0, **t).T

    check_masked_rows(dtype, run)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_rows_of_wide_spread(name, dtype):
    """:func:`check_wide_spread_rows` on the Numba backend (tests/cuda: on CUDA)."""
    check_wide_spread_rows(name, dtype, 300, on_numba)


@pytest.mark.parametrize("length", [70, 1000])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_float32_softmax_family_in_place_and_along_other_axes(name, length):
    """Where the row loops do not vectorize into partial sums (in place: y is x; lines along
    another axis), float32 sums in blocks lost the contract (log_softmax: 6.7 ULP)."""
    x = np.random.default_rng(0).normal(0, 4, (500, length)).astype(np.float32)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), backend="numpy")
    in_place = x.copy()
    act.forward(in_place, out=in_place, backend="numba")
    assert_forward_contract(in_place, want, np.float32, f"{name} rows of {length}, in place")
    lines = np.ascontiguousarray(x.T)[:, None, :]  # (length, 1, 500): along axis 0
    y = act.forward(lines, axis=0, backend="numba")[:, 0, :].T
    assert_forward_contract(y, want, np.float32, f"{name} lines of {length} along axis 0")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_in_place_gives_the_same_bits(name, axis, dtype):
    """``out=x`` equals a new array bit for bit, through the fast path (rows along the last
    axis) and the general one: log_softmax's forward keeps its terms in its output before
    it reads x again (``scalar.output_first``), so it runs in place into a new array."""
    act = fastgd.activations[name]
    x = np.random.default_rng(3).normal(0, 6, (300, 130)).astype(dtype)
    want = act.forward(x, axis=axis, backend="numba")
    in_place = x.copy()
    assert act.forward(in_place, axis=axis, out=in_place, backend="numba") is in_place
    np.testing.assert_array_equal(in_place, want)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(7, 90, 33), (60, 90, 8)])
def test_lines_in_place_and_into_a_strided_out(name, axis, shape):
    """Along an axis other than the last, lines run in blocks of columns side by side
    (``backends.columns``), or, less than COLUMN_MIN_BYTES apart and past
    PARALLEL_THRESHOLD elements (the second shape along axis 1), as rows swapped in and out
    (``cpu_memory.swap_lines``): in place, into a strided ``out``, from a strided input,
    both backwards."""
    rng = np.random.default_rng(9)
    x = rng.normal(0, 4, shape).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    act = fastgd.activations[name]
    want = act.forward(x.astype(np.float64), axis=axis, backend="numpy")
    in_place = x.copy()
    assert act.forward(in_place, axis=axis, out=in_place) is in_place
    assert_forward_contract(in_place, want, np.float32, f"{name} in place")
    out = np.zeros((*shape[:2], 2 * shape[2]), np.float32)[:, :, ::2]
    act.forward(np.asfortranarray(x), axis=axis, out=out)
    assert_forward_contract(out, want, np.float32, f"{name} strided out")
    dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), axis=axis,
                         backend="numpy")
    assert_backward_contract(act.backward(dy, x, axis=axis), dwant, dy, np.float32, name)
    ywant = act.backward(dy.astype(np.float64), y=want, axis=axis, backend="numpy")
    got = act.backward(dy, y=want.astype(np.float32), axis=axis)
    np.testing.assert_allclose(got, ywant, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_lines_in_blocks_of_columns(name, dtype, monkeypatch):
    """Lines along axis 1, 100 and 70 apart: blocks of columns (``backends.columns``), the
    last one partial, serial (small) and parallel; special lines (a NaN, +inf, all -inf, two equal
    maxima, a range of 1e4) keep their values, every direction within the contract."""
    from fastgd.backends.numba_backend import NumbaBackend

    blocks = []
    columns = NumbaBackend.columns
    monkeypatch.setattr(NumbaBackend, "columns",
                        lambda be, *args: blocks.append(1) or columns(be, *args))
    act = fastgd.activations[name]
    rng = np.random.default_rng(3)
    for shape in [(1, 37, 100), (9, 37, 70)]:
        x = rng.normal(0, 6, shape)
        x[0, 5, 0] = np.nan
        x[-1, 9, 3] = np.inf
        x[0, :, 7] = -np.inf
        x[-1, 2:4, 11] = 40.0
        x[0, :, 20] = np.linspace(-5e3, 5e3, shape[1])
        x = x.astype(dtype)
        dy = rng.normal(0, 1, shape).astype(dtype)
        want = act.forward(x.astype(np.float64), axis=1, backend="numpy")
        y = act.forward(x, axis=1, backend="numba")
        assert_forward_contract(y, want, dtype, f"{name} lines of {shape}")
        assert np.isnan(y[0, :, 0]).all() and np.isnan(y[0, :, 7]).all()
        dwant = act.backward(dy.astype(np.float64), x.astype(np.float64), axis=1,
                             backend="numpy")
        dx = act.backward(dy, x, axis=1, backend="numba")
        assert_backward_contract(dx, dwant, dy, dtype, f"{name} backward, {shape}")
        ok = np.isfinite(want).all(axis=1)  # lines the backward from y can take
        ywant = act.backward(dy.astype(np.float64), y=want, axis=1, backend="numpy")
        got = act.backward(dy, y=want.astype(dtype), axis=1, backend="numba")
        np.testing.assert_allclose(np.moveaxis(got, 1, -1)[ok], np.moveaxis(ywant, 1, -1)[ok],
                                   rtol=1e-4 if dtype == np.float32 else 1e-9,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)
    assert len(blocks) == 6


@scalar
def _total(x):
    s = F(0)
    for i in lanes(x.size):
        s += x[i]
    return lanes_sum(s)


def _centered(x, y):
    t = _total(x)
    m = t / x.size
    n = x.size  # the same for every column
    for i in lanes(n):
        y[i] = x[i] - m


def _branching(x, y):
    for i in lanes(x.size):
        if x[i] > 0:
            y[i] = 1.0


def _loop_name_after(x, y):
    for i in lanes(x.size):
        v = x[i]
    y[0] = v


def _loop_name_in_a_later_loop(x, y):
    for i in lanes(x.size):
        last = x[i]
    for i in lanes(x.size):
        y[i] = last


def _untyped_sum(x, y):
    s = 0
    for i in lanes(x.size):
        s += x[i]
    for i in lanes(x.size):
        y[i] = s


def _lanes_of_two(x, y):
    for i in lanes(1, x.size):
        y[i] = x[i]


def _later_read_first(x, y):
    for i in lanes(x.size):
        v = x[i]
    for i in lanes(x.size):
        y[i] = v  # the previous element's: read before this loop sets it
        v = x[i]


def _decaying_sum(x, y):
    s = F(0)
    for i in lanes(x.size):
        s *= F(0.5)
        s += x[i]
    for i in lanes(x.size):
        y[i] = s


def _sum_set_again(x, y):
    s = F(0)
    for i in lanes(x.size):
        s = F(0)
        s += x[i]
    for i in lanes(x.size):
        y[i] = s


@scalar
def _first(x):
    return x[0]


def _line_passed_whole(x, y):
    f = _first(x)
    for i in lanes(x.size):
        y[i] = f


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_float64_backwards_down_long_lines_of_columns(name):
    """Lines of 4000 along axis 0, side by side (``backends.columns``): a column's sums add
    one element after the other, so they add blocks of 64 first (one running float64 sum
    put dx from x 3.9e-12 off down 5000, where dy - Σ cancels)."""
    rng = np.random.default_rng(4000)
    x = rng.normal(0, 8, (4000, 160))
    dy = rng.normal(0, 1, x.shape)
    act = fastgd.activations[name]
    y = act.forward(x, axis=0, backend="numpy")
    for got, want in [
        (act.backward(dy, x, axis=0), act.backward(dy, x, axis=0, backend="numpy")),
        (act.backward(dy, y=y, axis=0), act.backward(dy, y=y, axis=0, backend="numpy")),
    ]:
        assert_backward_contract(got, want, dy, np.float64, f"{name} down 4000")


def test_row_functions_as_column_functions():
    """``backends.columns`` rewrites a row function into one over columns: each column
    gets the row function's result, helpers that loop over lanes inlined; what it cannot
    rewrite raises."""
    from fastgd.backends.columns import columns

    x = np.arange(24.0).reshape(4, 6) ** 2
    sums = np.zeros(6)
    columns(_total)(x, sums, 2, 6)  # a row function's return value, per column
    np.testing.assert_array_equal(sums, [0, 0, *x[:, 2:].sum(axis=0)])
    y = np.zeros_like(x)
    fn = columns(_centered)
    assert "_total(" not in fn.fastgd_source  # inlined
    fn(x, y, 1, 5)
    np.testing.assert_array_equal(y[:, 1:5], x[:, 1:5] - x[:, 1:5].mean(axis=0))
    assert (y[:, [0, 5]] == 0).all()
    # each computed something else, silently: the last column's value for every column,
    # an int64 sum, the lines from 0, row 0 of the plane
    for f in (_branching, _loop_name_after, _loop_name_in_a_later_loop, _untyped_sum,
              _lanes_of_two, _line_passed_whole, _later_read_first):
        with pytest.raises(NotImplementedError):
            columns(f)
    # a sum set another way in its loop too is not blocked: past one block of 64 it had
    # added a block's partial value where the row function replaces or scales it
    x = np.arange(130.0 * 3).reshape(130, 3)
    for f in (_decaying_sum, _sum_set_again, _centered):
        got, want = np.zeros_like(x), np.zeros_like(x)
        columns(f)(x, got, 0, 3)
        for j in range(3):
            f(x[:, j].copy(), line := np.zeros(130))
            want[:, j] = line
        np.testing.assert_array_equal(got, want, err_msg=f.__name__)


def test_float32_log_softmax_side_by_side_computes_in_float32_within_the_contract():
    """Side by side, float32 log_softmax computes in float32 (1.4-1.6x faster than float64),
    its sums adding blocks in float64: lines of 4000, one maximum each, the rest 8-12 below
    it (Σ e^(x - max) ≈ 0.18, where log1p(Σ) carries Σ's error into y_max)."""
    act = fastgd.activations["log_softmax"]
    rng = np.random.default_rng(1)
    x = rng.uniform(-12, -8, (4000, 512))
    x[rng.integers(0, 4000, 512), np.arange(512)] = 0.0
    x = x.astype(np.float32)
    want = act.forward(x.astype(np.float64), axis=0, backend="numpy")
    assert_forward_contract(act.forward(x, axis=0, backend="numba"), want, np.float32,
                            "log_softmax down 4000")


def test_float32_log_softmax_along_another_axis_as_rows_computes_in_float64():
    """Too few blocks of columns for the threads: the lines are swapped into rows, whose
    float32 log_softmax reached 4.7 ULP on lines of 63 (``wide_lines`` was not applied)."""
    act = fastgd.activations["log_softmax"]
    x = np.random.default_rng(5).normal(0, 5, (20, 2, 63, 100)).astype(np.float32)
    for k in range(20):
        want = act.forward(x[k].astype(np.float64), axis=1, backend="numpy")
        assert_forward_contract(act.forward(x[k], axis=1, backend="numba"), want, np.float32,
                                f"log_softmax of sample {k} along axis 1")


def test_lines_that_are_few_and_long_run_as_rows():
    """Blocks of COLUMN_MIN_BYTES, two a thread at least: fewer run the lines as rows
    (softmax down 2^20 rows of 64 float32 took 241 ms in 4 blocks, 195 as rows)."""
    from fastgd.backends.numba_backend import NumbaBackend

    fits = NumbaBackend.fits_columns
    assert not fits([np.empty((1, 1 << 16, 64), np.float32)])
    assert fits([np.empty((1, 4096, 256), np.float32)])
    assert fits([np.empty((1, 3, 64), np.float32)])  # small: serial, one block
    assert not fits([np.empty((1, 4096, 256), np.float32), np.empty((256, 4096)).T[None]])


def test_softmax_special_rows():
    x = np.array([[np.nan, 1.0, 2.0], [-np.inf, 0.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    y = fastgd.softmax(x)
    assert np.isnan(y[0]).all()
    np.testing.assert_allclose(y[1], [0, 0.5, 0.5])
    np.testing.assert_allclose(y[2], [1 / 3] * 3, rtol=1e-7)


# -- shapes, out=, in place ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (17,), (3, 4, 5)])
def test_shapes(shape, backend):
    x = np.random.default_rng(7).normal(0, 1, shape).astype(np.float32)
    for name, params in [("sigmoid", {}), ("leaky_relu", {"negative_slope": 0.1})]:
        y = fastgd.activations[name].forward(x, backend=backend, **params)
        assert y.shape == x.shape
        np.testing.assert_allclose(y, reference(name, x, params), rtol=1e-6)
    if shape:
        y = fastgd.softmax(x, backend=backend)
        assert y.shape == x.shape
        np.testing.assert_allclose(y, reference_softmax(x), rtol=1e-6, atol=1e-7)


def reference_softmax(x):
    return fastgd.softmax(x.astype(np.float64), backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_non_contiguous_input_and_output(backend):
    base = np.random.default_rng(8).normal(0, 1, (6, 8)).astype(np.float32)
    x = base[:, ::2]
    out = np.zeros((6, 8), np.float32)[:, 1::2]
    y = fastgd.gelu(x, out=out, backend=backend)
    assert y is out
    np.testing.assert_allclose(out, reference("gelu", x, {}), rtol=1e-6)
    sm = np.zeros((8, 6), np.float32).T
    fastgd.softmax(x.T.T, out=sm[:, :4], axis=0, backend=backend)
    np.testing.assert_allclose(sm[:, :4], fastgd.softmax(x, axis=0, backend="numpy"),
                               rtol=1e-6)
    w = np.array([0.25, -0.5, 2.0, 0.1], np.float32)  # one slope per column (axis 1)
    out = np.zeros((6, 8), np.float32)[:, ::2]
    assert fastgd.prelu(x, w, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, np.where(x > 0, x, w * x))
    dy = base[:, 1::2]
    dx, dw = fastgd.prelu_backward(dy, x, w, out=out, backend=backend)
    assert dx is out
    np.testing.assert_array_equal(out, np.where(x > 0, dy, w * dy))
    np.testing.assert_allclose(dw, np.where(x > 0, 0, dy * x).sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_in_place(backend):
    x = np.linspace(-5, 5, 101, dtype=np.float64)
    want = reference("tanh", x, {})
    y = fastgd.tanh(x, out=x, backend=backend)
    assert y is x
    np.testing.assert_allclose(x, want, rtol=1e-14)
    dy = np.ones_like(x)
    fastgd.sigmoid_backward(dy, x, out=dy, backend=backend)
    np.testing.assert_allclose(dy, reference("sigmoid", x, {}, np.ones_like(x)), rtol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("n", [8, 50_000])  # a serial and a chunked loop
def test_in_place_through_a_read_only_view_of_out(backend, n):
    """x a read-only view of out's memory: the kernel writes through out's view (it wrote
    into x's, which Numba refused to compile: TypingError)."""
    base = np.linspace(-2, 2, n)
    want = fastgd.sigmoid(base, backend="numpy")
    buf = base.copy()
    x = buf.view()
    x.flags.writeable = False
    assert fastgd.sigmoid(x, out=buf, backend=backend) is buf
    np.testing.assert_allclose(buf, want, rtol=1e-15)
    buf = base.copy()
    assert fastgd.relu(np.broadcast_to(buf, buf.shape), out=buf, backend=backend) is buf
    np.testing.assert_array_equal(buf, np.maximum(base, 0))
    dy = np.ones(n)
    view = dy.view()
    view.flags.writeable = False
    fastgd.tanh_backward(view, base, out=dy, backend=backend)
    np.testing.assert_allclose(dy, 1 - np.tanh(base) ** 2, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_out_of_an_ndarray_subclass(backend):
    """np.matrix keeps 2 dimensions when reshaped to flat: the numba kernel wrote row i for
    element i, past the end of the array (heap corruption)."""
    x = np.random.default_rng(3).normal(size=(1000, 3))
    out = np.asmatrix(np.zeros((1000, 3)))
    assert fastgd.sigmoid(x, out=out, backend=backend) is out
    np.testing.assert_allclose(np.asarray(out), fastgd.sigmoid(x, backend="numpy"), rtol=1e-15)
    out = np.asmatrix(np.full((1, 2), 7.0))
    fastgd.relu_backward(np.ones((1, 2)), np.array([[1.0, -2.0]]), out=out, backend=backend)
    np.testing.assert_array_equal(out, [[1.0, 0.0]])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_weight_as_a_number(backend, dtype):
    """A Python number is one slope of x's dtype (float32 x refused it as a float64 array);
    dweight is then 0-d, an array on both backends."""
    x = np.array([[-1.0, 2.0], [-3.0, 0.5]], dtype)
    y = fastgd.prelu(x, 0.25, backend=backend)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, fastgd.prelu(x, np.array([0.25], dtype), backend=backend))
    dx, dw = fastgd.prelu_backward(np.ones_like(x), x, np.float64(0.25), backend=backend)
    assert isinstance(dw, np.ndarray) and dw.shape == () and dw.dtype == dtype and dw == -4.0
    np.testing.assert_array_equal(dx, [[0.25, 1.0], [0.25, 1.0]])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("n", [300, 20_000])  # a serial and a parallel loop
def test_out_overlapping_an_input_gives_numpys_result(backend, n):
    """``out`` sharing memory with an input other than element for element: the result is
    computed from the inputs as they were (NumPy's rule), not from half-written ones."""
    rng = np.random.default_rng(5)
    base = rng.normal(0, 2, n + 1).astype(np.float32)
    want = fastgd.sigmoid(base[:-1], backend=backend)  # from arrays of their own
    a = base.copy()
    assert fastgd.sigmoid(a[:-1], out=a[1:], backend=backend) is not None
    np.testing.assert_array_equal(a[1:], want)
    a = base.copy()
    fastgd.sigmoid(a[1:], out=a[:-1], backend=backend)
    np.testing.assert_array_equal(a[:-1], fastgd.sigmoid(base[1:], backend=backend))
    dy = rng.normal(0, 1, n + 1).astype(np.float32)
    d = dy.copy()
    fastgd.tanh_backward(d[1:], base[:-1], out=d[:-1], backend=backend)
    np.testing.assert_array_equal(d[:-1], fastgd.tanh_backward(dy[1:], base[:-1],
                                                              backend=backend))
    # the same memory through another view object is in place
    a = base.copy()
    fastgd.sigmoid(a, out=a.reshape(1, -1).reshape(-1), backend=backend)
    np.testing.assert_array_equal(a, fastgd.sigmoid(base, backend=backend))
    rows = base[: n // 100 * 100].reshape(-1, 100)
    r = rows.copy()
    fastgd.softmax(r[:-1], out=r[1:], backend=backend)
    np.testing.assert_array_equal(r[1:], fastgd.softmax(rows[:-1], backend=backend))


def test_overlap_tells_in_place_from_partial():
    a = np.zeros(10, np.float32)
    overlap = fastgd._arrays.overlap
    assert overlap(a, a.reshape(2, 5).reshape(-1)) == "same"
    assert overlap(a[:-1], a[1:]) == "partial"
    assert overlap(a, a[::-1]) == "partial"
    assert overlap(a[:5], a[5:]) is None
    assert overlap(a[::2], a[1::2]) == "partial"  # interleaved: bounds overlap, so copied
    assert overlap(a[:0], a[:0]) is None
    assert overlap(a, np.zeros(10, np.float32)) is None


    class Device:  # device arrays are seen through __cuda_array_interface__
        def __init__(self, ptr, strides=None):
            self.__cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "version": 3,
                                             "data": (ptr, False), "strides": strides}

    assert overlap(Device(1000), Device(1000, (4,))) == "same"
    assert overlap(Device(1000), Device(1012)) == "partial"
    assert overlap(Device(1000), Device(1016)) is None
    assert overlap(Device(1012, (-4,)), Device(1000)) == "partial"


@pytest.mark.parametrize("name", sorted(fastgd.activations))
def test_module_functions_document_their_signature(name):
    """help(fastgd.NAME) starts with the call as it is accepted: every parameter by its
    name and default, y= where the backward takes the output."""
    act = fastgd.activations[name]
    fwd, bwd = getattr(fastgd, name).__doc__, getattr(fastgd, f"{name}_backward").__doc__
    weight = ", weight" if name == "prelu" else ""
    params = "".join(f", {k}={v!r}" for k, v in act.params.items())
    assert fwd.startswith(f"{name}(x{weight}{params}, out=None, backend=None): ")
    saved = "x=None" if act.takes_output else "x"
    assert bwd.startswith(f"{name}_backward(dy, {saved}{weight}{params}")
    assert ("y=None" in bwd) == act.takes_output
    x = np.linspace(-2, 2, 8).reshape(2, 4)  # the documented keywords are accepted
    kwargs = dict(act.params, out=np.empty_like(x), backend="numpy")
    args = (np.ones(1),) if name == "prelu" else ()
    getattr(fastgd, name)(x, *args, **kwargs)


def test_scalars_and_lists_are_accepted():
    assert fastgd.relu([-1.0, 2.0]).tolist() == [0.0, 2.0]
    assert float(fastgd.sigmoid(0.0)) == 0.5


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_in_non_native_byte_order_are_read_as_their_values(dtype, backend):
    """A byte-swapped float array (from a file written on the other endianness) is copied to
    native order, as a non-contiguous input is: the same result as the native array."""
    x = np.linspace(-5, 5, 11).astype(dtype)
    swapped = x.astype(np.dtype(dtype).newbyteorder("S"))
    y = fastgd.gelu(swapped, backend=backend)
    assert y.dtype == dtype and y.dtype.isnative
    np.testing.assert_array_equal(y, fastgd.gelu(x, backend=backend))
    np.testing.assert_array_equal(fastgd.softmax_backward(swapped, swapped, backend=backend),
                                  fastgd.softmax_backward(x, x, backend=backend))
    with pytest.raises(ValueError, match="out has dtype"):  # out= is written: native only
        fastgd.gelu(x, out=np.empty_like(swapped), backend=backend)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, np.float16])
def test_non_float_dtypes_raise_type_error_naming_the_dtype(dtype):
    x = np.zeros(4, dtype)
    with pytest.raises(TypeError, match=str(np.dtype(dtype))):
        fastgd.sigmoid(x)


def test_mixed_dtypes_raise_type_error_naming_both():
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        fastgd.relu_backward(np.ones(3, np.float32), np.ones(3, np.float64))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_bad_out_raises_before_writing(backend):
    x = np.ones(4, np.float32)
    for out, match in [
        (np.full(5, 7, np.float32), "shape"),
        (np.full(4, 7, np.float64), "dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            fastgd.sigmoid(x, out=out, backend=backend)
        assert (out == 7).all()
    ro = np.full(4, 7, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastgd.sigmoid(x, out=ro, backend=backend)
    assert (ro == 7).all()
    for not_an_array in (np.float32(7), [7.0] * 4):
        with pytest.raises(ValueError, match="out must be an array, got (float32|list)"):
            fastgd.sigmoid(x, out=not_an_array, backend=backend)


def test_shape_mismatch_in_backward():
    with pytest.raises(ValueError, match="shapes"):
        fastgd.tanh_backward(np.ones(3), np.ones(4))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: fastgd.leaky_relu(x, slope=0.1), "no parameter"),
        (lambda x: fastgd.softplus(x, threshold=-1.0), "threshold"),
        (lambda x: fastgd.softplus(x, beta=0.0), "beta"),
        # e^(beta·x)/beta of the left tail leaves the float range below ~1e-22: the kernels
        # gave e^-800/beta at x = -inf
        (lambda x: fastgd.softplus(x, beta=2.0**-100), "beta must be at least 1e-20"),
        (lambda x: fastgd.softplus_backward(x, x, beta=1e-21), "beta must be at least"),
        (lambda x: fastgd.elu(x, alpha=float("nan")), "finite"),
        (lambda x: fastgd.elu(x, alpha=np.float32(np.inf)), "finite"),
        (lambda x: fastgd.leaky_relu(x, negative_slope=True), "slope must be a number, got True"),
        (lambda x: fastgd.softplus(x, beta="1"), "must be a number, got '1'"),
        (lambda x: fastgd.gelu(x, approximate="fast"), "approximate"),
        (lambda x: fastgd.softmax(x, axis=2), "out of range"),
        (lambda x: fastgd.softmax(x, axis=1.0), "axis must be an int"),
        (lambda x: fastgd.softmax(x, True), "axis must be an int, got True"),  # taken as 1
        (lambda x: fastgd.softmax(x, np.True_), r"axis must be an int, got (np\.)?True"),
        (lambda x: fastgd.log_softmax_backward(x, y=x, axis="last"), "axis must be an int"),
        (lambda x: fastgd.prelu(x, np.ones(3)), "prelu weight has 3"),
        (lambda x: fastgd.softmax_backward(x), "needs the forward input"),
        (lambda x: fastgd.softmax_backward(x, x, y=x), "not both"),
    ],
)
def test_invalid_parameters_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones((2, 4)))


@pytest.mark.parametrize("call", [
    lambda x: fastgd.leaky_relu(x, 0.1, negative_slope=0.5),
    lambda x: fastgd.gelu(x, "tanh", approximate="none"),
    lambda x: fastgd.softmax(x, 0, axis=-1),
    lambda x: fastgd.elu_backward(x, x, 2.0, alpha=1.0),
])
def test_a_parameter_given_twice_is_refused_as_python_refuses_it(call):
    """The keyword silently won (leaky_relu ran with slope 0.5, not 0.1)."""
    with pytest.raises(TypeError, match="got multiple values for"):
        call(np.ones((2, 4)))


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: fastgd.sigmoid(x, 0.5), "takes 0 parameter"),  # was a ValueError
    (lambda x: fastgd.elu(x, 1.0, 2.0), "takes 1 parameter"),
    (lambda x: fastgd.prelu(x), "prelu needs its slopes"),  # named PReLU.forward()
    (lambda x: fastgd.prelu_backward(x, x), "prelu needs its slopes"),
])
def test_arguments_python_would_refuse_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call(np.ones((2, 4)))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("name", ["gelu", "silu", "sigmoid", "softplus", "softmax", "prelu"])
def test_ndarray_subclasses_are_computed_as_plain_arrays(name):
    """The NumPy backend ran its reference on the subclass itself: np.matrix's * is a
    matrix product (gelu of a 2x2 matrix was wrong, no error), masked-array functions refill
    the masked entries (sigmoid(2) gave 1.0), their max has no keepdims (softmax raised)."""
    act = fastgd.activations[name]
    plain = np.array([[-1.0, 2.0], [-3.0, 4.0]])
    args = (np.array([0.5, 0.25]),) if name == "prelu" else ()
    dy = np.array([[1.0, -2.0], [0.5, 3.0]])
    masked = np.ma.masked_array(plain, mask=[[0, 1], [0, 0]])  # computed as its data
    for backend in ("numpy", "numba"):  # each equal to its own result on the plain arrays
        want = act.forward(plain, *args, backend=backend)
        want_dx = act.backward(dy, plain, *args, backend=backend)
        np.testing.assert_allclose(want, act.forward(plain, *args, backend="numpy"),
                                   rtol=1e-14)
        for x in (np.asmatrix(plain), masked):
            got = act.forward(x, *args, backend=backend)
            assert type(got) is np.ndarray
            np.testing.assert_array_equal(got, want)
            got_dx = act.backward(np.asmatrix(dy), x, *args, backend=backend)
            pairs = zip(got_dx, want_dx) if name == "prelu" else [(got_dx, want_dx)]
            for g, w in pairs:  # prelu's: dx and dweight
                assert type(g) is np.ndarray
                np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "params"), [
    ("elu", {"alpha": np.float32(0.5)}),
    ("leaky_relu", {"negative_slope": np.float64(0.2)}),
    ("softplus", {"beta": np.int64(2), "threshold": np.float32(10.0)}),
])
def test_numpy_scalar_parameters_act_as_python_numbers(name, params, backend):
    """A parameter given as a NumPy scalar (read from an array or a config) gives the same
    result, forward and backward, as the Python number of the same value."""
    x = np.linspace(-6, 6, 101).astype(np.float32)
    act = fastgd.activations[name]
    plain = {k: v.item() for k, v in params.items()}
    np.testing.assert_array_equal(act.forward(x, backend=backend, **params),
                                  act.forward(x, backend=backend, **plain))
    dy = np.ones_like(x)
    np.testing.assert_array_equal(act.backward(dy, x, backend=backend, **params),
                                  act.backward(dy, x, backend=backend, **plain))


# -- softplus's threshold and betas -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_softplus_branches_on_the_exact_product(backend):
    """beta·x of float32 data rounded onto the threshold (3·float32(1/3) = 1.0000000298 rounds
    to 1.0): the branch is the exact product's, as in float64, forward and backward alike
    (the NumPy backend's forward and backward took different branches for one x)."""
    cases = [(np.float32(1 / 3), 3.0, 1.0), (np.float32(0.23333333), 3.0, 0.7)]
    for x, beta, threshold in cases:
        x1 = np.array([x, np.float32(-x)])
        want = fastgd.softplus(x1.astype(np.float64), beta=beta, threshold=threshold,
                               backend="numpy")
        got = fastgd.softplus(x1, beta=beta, threshold=threshold, backend=backend)
        assert_forward_contract(got, want, np.float32, f"softplus({x}, {beta}, {threshold})")
        dy = np.ones_like(x1)
        want = fastgd.softplus_backward(dy.astype(np.float64), x1.astype(np.float64),
                                        beta=beta, threshold=threshold, backend="numpy")
        got = fastgd.softplus_backward(dy, x1, beta=beta, threshold=threshold, backend=backend)
        assert_backward_contract(got, want, dy, np.float32, f"softplus' at {x}")
    # float64 1/3 times 3 is 1 - 2^-54 exactly, rounded onto 1.0: below the threshold
    got = fastgd.softplus(np.array([1 / 3]), beta=3.0, threshold=1.0, backend=backend)[0]
    assert got == pytest.approx(math.log1p(math.e) / 3, rel=1e-15)


@pytest.mark.parametrize("beta", [3.0, 7.0, 13.0, 1000.0, 0.3, 1.7, 1e-3])
def test_float32_softplus_tails_for_other_betas(beta):
    """The rounding of beta·x, put back into the forward and (now) the backward too, and no
    division by beta that arcp split in two roundings: the backward reached 11 ULP (beta 0.3,
    1e-3, 1.7: not exact in float32, so it now computes in float64), the forward's deep tail
    4.15 ULP (beta 13)."""
    z = np.concatenate([np.linspace(-110, 30, 60001),
                        np.random.default_rng(5).uniform(-110, 30, 20000)])
    x = (z / beta).astype(np.float32)
    dy = np.random.default_rng(6).uniform(0.5, 2, x.size).astype(np.float32)
    want = fastgd.softplus(x.astype(np.float64), beta=beta, backend="numpy")
    dwant = fastgd.softplus_backward(dy.astype(np.float64), x.astype(np.float64), beta=beta,
                                     backend="numpy")
    for backend in ("numba", "numpy"):
        assert_forward_contract(fastgd.softplus(x, beta=beta, backend=backend), want,
                                np.float32, f"softplus beta={beta} on {backend}")
        got = fastgd.softplus_backward(dy, x, beta=beta, backend=backend)
        assert_backward_contract(got, dwant, dy, np.float32,
                                 f"softplus' beta={beta} on {backend}")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("x", [np.array([0.0, -1e-10], np.float32), np.empty((3, 0), np.float32)],
                         ids=["values", "empty"])
def test_parameters_that_overflow_float32_are_refused(x, backend):
    """alpha=1e39 is finite in Python but inf in float32: elu of 0 was NaN (torch refuses
    such a value as well); float64 data take it. Empty arrays too: the Numba backend, with
    no kernel to plan, accepted them (an audit)."""
    for call, name in ((lambda: fastgd.elu(x, alpha=1e39), "elu alpha"),
                       (lambda: fastgd.leaky_relu(x, negative_slope=-1e39), "negative_slope"),
                       (lambda: fastgd.softplus_backward(x, x, threshold=1e40), "threshold"),
                       (lambda: fastgd.prelu(x[None], 1e39), "prelu weight")):
        with pytest.raises(ValueError, match=f"{name}=.* overflows float32"):
            with fastgd.use_backend(backend):
                call()
    wide = x.astype(np.float64)
    np.testing.assert_allclose(fastgd.elu(wide, alpha=1e39, backend=backend),
                               np.expm1(wide) * 1e39, rtol=1e-12)


def test_module_functions_show_their_parameters():
    """help(fastgd.gelu) showed (x, *args, **kwargs)."""
    import inspect

    assert str(inspect.signature(fastgd.softplus)) == (
        "(x, beta=1.0, threshold=20.0, *, out=None, backend=None)")
    assert str(inspect.signature(fastgd.sigmoid_backward)) == (
        "(dy, x=None, *, y=None, out=None, backend=None)")
    assert str(inspect.signature(fastgd.prelu_backward)) == (
        "(dy, x, weight, *, out=None, backend=None)")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_small_corners_of_the_rectifiers_and_rows(backend):
    """A slope of 0 gives -0 for x < 0 (0·x, as torch) and NaN at x = -inf (0·inf, as torch:
    the one place where ±inf give no limit, kept for leaky_relu's speed); a list of prelu
    slopes takes x's dtype (float64 beside float32 x was a mixed dtype); a 0-d softmax
    takes axis 0 or -1 only, as torch (any axis was accepted)."""
    x = np.array([-np.inf, -1.0, np.nan, 2.0], np.float32)
    got = fastgd.leaky_relu(x, negative_slope=0.0, backend=backend)
    np.testing.assert_array_equal(got, [np.nan, 0, np.nan, 2])
    assert np.signbit(got[1])
    rows = np.array([[-1.0, -4.0], [-2.0, 3.0]], np.float32)
    got = fastgd.prelu(rows, [0.0, 0.5], backend=backend)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[0, -2], [0, 3]])
    with pytest.raises(ValueError, match="axis 3 is out of range for an array of 0"):
        fastgd.softmax(np.float32(1.0), axis=3, backend=backend)
    assert fastgd.log_softmax(np.float32(1.0), axis=-1, backend=backend) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_softplus_with_the_smallest_beta(backend, dtype):
    """beta = 1e-20, the smallest taken (SOFTPLUS_MIN_BETA; below, the left tail's
    e^(beta·x)/beta stops being 0 where e^(beta·x) underflows, and the kernels gave
    e^-800/beta at x = -inf): ln2/beta + x/2 near 0, e^(beta·x)/beta in the left tail, 0 at
    -inf, no warning (the NumPy backend's cast of a result past float32's range warned)."""
    import warnings

    beta = 1e-20
    x = np.array([-np.inf, -8e22, -7e22, -1.0, 0.0, 1.0], dtype)
    tail = math.exp(beta * float(x[2])) / beta  # 9.9e-285: 0 in float32
    want = np.array([0.0, 0.0, tail] + [math.log(2) / beta] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fastgd.softplus(x, beta=beta, backend=backend)
        np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-6, atol=0)
        dx = fastgd.softplus_backward(np.ones_like(x), x, beta=beta, backend=backend)
        slope = np.array([0, 0, math.exp(beta * float(x[2])), 0.5, 0.5, 0.5])  # σ(beta·x)
        np.testing.assert_allclose(dx, slope.astype(dtype), rtol=1e-6, atol=0)


def test_softplus_threshold_ties_are_decided_exactly_and_fast():
    """The NumPy backend decided beta·x == threshold ties with Fractions, one element at a
    time (5.5 s for a million ties); now with the product's exact rounding error."""
    from fractions import Fraction

    rng = np.random.default_rng(8)
    beta = 3.0
    x = np.nextafter(1 / 3, rng.choice([0.0, 1.0], 4000)) * rng.choice([1.0, 2.0], 4000)
    z = beta * x
    ties = z == np.round(z)
    assert ties.sum() > 1000
    for threshold in (1.0, 2.0):
        got = fastgd.softplus(x, beta=beta, threshold=threshold, backend="numpy")
        want_linear = [Fraction(beta) * Fraction(v) > threshold for v in x]
        np.testing.assert_array_equal(got == x, want_linear)


@pytest.mark.parametrize("weight, dtype", [([True], "bool"), (["0.5"], "<U3"),
                                           ([1 + 2j], "complex128")])
def test_prelu_list_weights_of_no_number_are_named(weight, dtype):
    with pytest.raises(TypeError, match=f"weight: {dtype}"):
        fastgd.prelu(np.ones((2, 1), np.float32), weight)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_selu_backward_from_output_in_float64_where_it_cancels(backend):
    """dx = dy·(y + scale·alpha) for y → -scale·alpha: the float64 product scale·alpha is
    rounded by up to 1 ULP of 1.76, 2e-13 of a result of 1e-3 (1089 ULP, found against
    mpmath); with its exact remainder the result is within an ULP of the exact one."""
    from fractions import Fraction

    from fastgd.activation.formulas import SELU_ALPHA, SELU_SCALE

    sa = Fraction(SELU_SCALE) * Fraction(SELU_ALPHA)
    y = -np.float64(sa) + np.linspace(1e-5, 1e-2, 501)
    got = fastgd.selu_backward(np.ones_like(y), y=y, backend=backend)
    want = np.array([float(Fraction(v) + sa) for v in y])
    assert np.all(np.abs(got - want) <= np.spacing(np.abs(want))), backend


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_log_softmax_backward_in_float64_where_it_cancels(backend, axis, order):
    """dx = dy - softmax(x)·Σ dy cancels to 1e-3 of dy where softmax(x)·Σ dy ≈ dy: the
    rounding of Σ e^(x - max) and of y = log_softmax(x) come through it amplified ~1000
    times. A running sum along a line of 695 (both backends) and the NumPy backend's exp of
    a rounded y put dx 1.3e-12 and 1.4e-12 off (found against mpmath), and the reference
    2.8e-12 along the rows of a Fortran-ordered array (NumPy's running sum); against exact
    values (mpmath, 40 digits) within the contract's 1e-12."""
    import mpmath

    mpmath.mp.dps = 40
    rng = np.random.default_rng(2)
    for x in (rng.normal(-80.5, 0.03, 695), rng.normal(3.0, 0.01, 4000)):
        m = mpmath.mpf(float(x.max()))
        e = [mpmath.exp(mpmath.mpf(float(v)) - m) for v in x]
        total = mpmath.fsum(e)
        want = np.array([float(1 - v / total * len(x)) for v in e])
        xs = np.stack([x, x], axis=1 - axis).copy(order=order)  # x along ``axis``
        got = fastgd.log_softmax_backward(np.ones_like(xs), xs, axis=axis, backend=backend)
        got = got[:, 0] if axis == 0 else got[0]
        big = np.abs(want) >= 1e-3
        assert np.max(np.abs(got - want)[big] / np.abs(want[big])) < 1e-12


@pytest.mark.parametrize("layout", ["F", "transposed 3-D"])
def test_inputs_of_one_dense_layout_are_computed_in_place_of_memory(layout):
    """Arrays of one dense layout other than C order (a transpose, a Fortran-ordered array)
    run as flat views in memory order, as NumPy's ufuncs run them: same values bit for bit
    as the C-ordered copy, the result in the inputs' layout, an ``out`` in that layout
    written directly, in place too (the general path copied them: relu(a.T) took 12× relu(a),
    out=a.T a scratch array and a copy back)."""
    rng = np.random.default_rng(3)

    def make():
        if layout == "F":
            return np.asfortranarray(rng.normal(0, 3, (67, 45)).astype(np.float32))
        return rng.normal(0, 3, (5, 33, 41)).astype(np.float32).transpose(0, 2, 1)

    x, dy = make(), make()
    assert not x.flags.c_contiguous and x.strides == dy.strides
    want = fastgd.gelu(np.ascontiguousarray(x))
    got = fastgd.gelu(x)
    np.testing.assert_array_equal(got, want)
    assert got.strides == x.strides
    dwant = fastgd.gelu_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x))
    np.testing.assert_array_equal(fastgd.gelu_backward(dy, x), dwant)
    out = make()
    assert fastgd.gelu_backward(dy, x, out=out) is out
    np.testing.assert_array_equal(out, dwant)
    inplace = x.copy(order="K")
    assert fastgd.gelu(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    # another layout among the inputs: the general path, same values
    np.testing.assert_array_equal(fastgd.gelu_backward(np.ascontiguousarray(dy), x), dwant)


STRIDED_VIEWS = {  # index of a (40, 3, 150) array: views that are not dense
    "column slice": np.s_[:, :, :100],
    "rows back, a column slice": np.s_[::-2, 1, 5:140],
    "3-D, rows merged": np.s_[:, :, 10:140],
    "step": np.s_[:, :, ::2],
    "rows of steps back": np.s_[::2, 1, ::-2],
    "1-D step": np.s_[3, 1, ::3],
    "short rows, in bands": np.s_[:, :, :10],
    "rows of 16": np.s_[:, 2, 3:19],
    "3-D, rows apart (copied)": np.s_[::2, :, :100],
}


@pytest.mark.parametrize("view", list(STRIDED_VIEWS))
@pytest.mark.parametrize(("name", "params", "dtype"), [  # the loop is the same for all ops
    ("relu", {}, np.float32), ("leaky_relu", {"negative_slope": 0.2}, np.float32),
    ("sigmoid", {}, np.float32), ("softplus", {"beta": 2.0, "threshold": 10.0}, np.float32),
    ("gelu", {}, np.float64), ("elu", {"alpha": 1.5}, np.float64)])
def test_strided_views_are_computed_where_they_lie(name, params, dtype, view):
    """Views that are not dense, whose axes merge into rows and columns (a column slice, a
    step), run over those rows where they lie (``map_rows``; strided rows, and bands of
    short ones, copied piece by piece through a buffer); others are copied first. Either
    way the C-ordered copy's values bit for bit, from x and from y, into a new C-ordered
    array, into a strided ``out`` and in place, the memory around the view untouched."""
    act = fastgd.activations[name]
    rng = np.random.default_rng(5)
    base = rng.normal(0, 4, (40, 3, 150)).astype(dtype)
    index = STRIDED_VIEWS[view]
    x, dy = base[index], rng.normal(0, 1, base.shape).astype(dtype)[index]
    c = np.ascontiguousarray
    want, dwant = act.forward(c(x), **params), act.backward(c(dy), c(x), **params)
    got = act.forward(x, **params)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(act.backward(dy, x, **params), dwant)
    if act.takes_output and params.get("negative_slope", 0) >= 0:
        y = np.zeros(base.shape, dtype)
        y[index] = want
        np.testing.assert_array_equal(act.backward(dy, y=y[index], **params),
                                      act.backward(c(dy), y=c(want), **params))
    holder = np.full(base.shape, 7, dtype)
    out = holder[index]
    assert act.backward(dy, x, out=out, **params) is out
    np.testing.assert_array_equal(out, dwant)
    outside = np.ones(base.shape, bool)
    outside[index] = False
    assert np.all(holder[outside] == 7)
    inside = base.copy()
    assert act.forward(inside[index], out=inside[index], **params) is not None
    np.testing.assert_array_equal(inside[index], want)
    np.testing.assert_array_equal(inside[outside], base[outside])


@pytest.mark.parametrize(("shape", "index"), [((2048, 512), np.s_[:, :256]),
                                              ((2048, 512), np.s_[:, ::2]),
                                              ((1 << 16, 8), np.s_[:, :4])],
                         ids=["slice", "step", "narrow"])
def test_a_strided_view_is_not_copied(shape, index):
    """The peak memory of sigmoid on a column slice, a step or a narrow slice, and of its
    backward, is the result's (the buffers of strided rows are 64 KiB a task)."""
    import tracemalloc

    base = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    x = base[index]
    fastgd.sigmoid(x), fastgd.sigmoid_backward(x, x)  # compiled first
    tracemalloc.start()
    try:
        fastgd.sigmoid(x)
        fastgd.sigmoid_backward(x, x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * x.nbytes
    long = np.random.default_rng(2).normal(0, 3, (2, 40001)).astype(np.float32)[:, 1:]
    for name in ("relu", "gelu"):  # rows of 40,000 in pieces of 13,334, in parallel
        np.testing.assert_array_equal(fastgd.activations[name].forward(long),
                                      fastgd.activations[name].forward(long.copy()))


def test_an_out_of_the_inputs_layout_that_overlaps_them_partly_gets_numpys_result():
    base = np.asfortranarray(np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10))
    x, out = base[:, 1:], base[:, :-1]  # one layout, overlapping by all but a column
    want = np.maximum(x, 0)
    fastgd.relu(x, out=out)
    np.testing.assert_array_equal(out, want)


def test_float64_reference_in_the_deep_left_tails():
    """The NumPy reference against mpmath (50 digits) where float64 intermediates leave the
    normal range: GELU's erfc(-x/√2) lost digits below x = -3 and was 0 from -37.7 on, where
    x·Φ(x) is a subnormal down to -38.6 (and its slope lost Φ); silu's and mish's x·σ(x)
    with σ(x) subnormal (-0 at x = -745 for -1.8e-321); softplus's e^z/beta with e^z
    subnormal and the result normal (beta = 1e-20). Relative 1e-14 for normal results, two
    subnormal steps below."""
    import mpmath

    mpmath.mp.dps = 50
    mp = lambda v: mpmath.mpf(float(v))  # noqa: E731
    cases = [
        ("gelu", {}, np.linspace(-38.6, -3.0, 400), lambda v: mp(v) * mpmath.ncdf(mp(v))),
        ("silu", {}, np.linspace(-745.0, -690.0, 200),
         lambda v: mp(v) / (1 + mpmath.exp(-mp(v)))),
        ("mish", {}, np.linspace(-745.0, -690.0, 200),
         lambda v: mp(v) * mpmath.tanh(mpmath.log1p(mpmath.exp(mp(v))))),
        ("softplus", {"beta": 1e-20}, np.linspace(-7.5e22, -6.9e22, 200),
         lambda v: mpmath.log1p(mpmath.exp(mp(v) * mp(1e-20))) / mp(1e-20)),
    ]
    for name, params, x, exact in cases:
        want = np.array([float(exact(v)) for v in x])
        got = fastgd.activations[name].forward(x, backend="numpy", **params)
        normal = np.abs(want) >= np.finfo(np.float64).tiny
        assert np.all(np.abs(got - want)[normal] <= 1e-14 * np.abs(want[normal])), name
        assert np.all(np.abs(got - want)[~normal] <= 2 * 5e-324), name
    x = np.linspace(-38.6, -3.0, 400)
    want = np.array([float(mpmath.ncdf(mp(v)) + mp(v) * mpmath.npdf(mp(v))) for v in x])
    got = fastgd.gelu_backward(np.ones_like(x), x, backend="numpy")
    normal = np.abs(want) >= np.finfo(np.float64).tiny
    assert np.all(np.abs(got - want)[normal] <= 1e-14 * np.abs(want[normal]))
    assert np.all(np.abs(got - want)[~normal] <= 1e-310)


# -- layouts the Numba backend computes where they lie (registry._memory_order_views) ----


def test_fortran_out_partly_overlapping_its_input_is_computed_from_a_copy():
    buf = np.asfortranarray(np.random.default_rng(0).standard_normal((4, 6)))
    x, out = buf[:, :5], buf[:, 1:]
    want = np.maximum(x, 0)
    np.testing.assert_array_equal(fastgd.relu(x, out=out, backend="numba"), want)


def test_backward_pairs_elements_of_inputs_in_different_layouts():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((5, 7)), np.asfortranarray(rng.standard_normal((5, 7)))
    np.testing.assert_array_equal(fastgd.relu_backward(dy, x, backend="numba"),
                                  fastgd.relu_backward(dy, x, backend="numpy"))
    np.testing.assert_allclose(fastgd.tanh_backward(dy, x, backend="numba"),
                               fastgd.tanh_backward(dy, x, backend="numpy"), rtol=1e-13)


def test_an_out_with_negative_strides_is_written():
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((6, 5)))[::-1]
    out = np.zeros((6, 5), order="F")[::-1]
    fastgd.tanh(x, out=out, backend="numba")
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-12)


@pytest.mark.parametrize("shape", [(2049, 2), (5000, 3), (3000, 2, 1, 1), (40, 3)])
@pytest.mark.parametrize("into", ["x", "dy", "x shifted"])
def test_prelu_backward_into_its_inputs_sums_dweight_over_them_first(shape, into):
    """dx written over x or dy (out=x, out=dy, or an out overlapping x) leaves dweight the
    sum over the inputs as given (found by an audit: channels side by side summed after dx
    had overwritten them)."""
    rng = np.random.default_rng(13)
    row = int(np.prod(shape[1:]))
    block = rng.normal(0, 2, shape[0] * row + row).astype(np.float32)
    x = block[row:].reshape(shape)  # "x shifted": out is block[:-row], one sample earlier
    dy = rng.normal(0, 1, shape).astype(np.float32)
    w = rng.uniform(0.1, 0.5, shape[1]).astype(np.float32)
    dx0, dw0 = fastgd.prelu_backward(dy, x, w, backend="numpy")
    out = {"x": x, "dy": dy, "x shifted": block[:-row].reshape(shape)}[into]
    dx, dw = fastgd.prelu_backward(dy, x, w, out=out, backend="numba")
    assert dx is out
    np.testing.assert_array_equal(dx, dx0)
    np.testing.assert_allclose(dw, dw0, rtol=1e-5)


def test_prelu_per_channel_of_4d_input_past_the_parallel_threshold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 64, 2, 2)).astype(np.float32)
    w = rng.uniform(0.1, 0.5, 64).astype(np.float32)
    np.testing.assert_array_equal(fastgd.prelu(x, w, backend="numba"),
                                  fastgd.prelu(x, w, backend="numpy"))
    dx, dw = fastgd.prelu_backward(np.ones_like(x), x, w, backend="numba")
    dx0, dw0 = fastgd.prelu_backward(np.ones_like(x), x, w, backend="numpy")
    np.testing.assert_array_equal(dx, dx0)
    np.testing.assert_allclose(dw, dw0, rtol=1e-5)


def test_a_negative_zero_slope_is_not_served_the_kernel_plan_of_plus_zero():
    x = np.array([-1.0, -2.0, 3.0])
    fastgd.leaky_relu(x, 0.0, backend="numba")
    got = fastgd.leaky_relu(x, -0.0, backend="numba")
    want = fastgd.leaky_relu(x, -0.0, backend="numpy")
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    assert not np.signbit(got).any()  # −0·(−1) = +0, where 0·(−1) = −0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backwards_of_upstream_gradients_near_the_float_maximum(dtype):
    """dy within a factor 4 of the float maximum: the Numba kernels are finite where the
    reference is, and NaN only where it is. With fast-math ``reassoc`` LLVM computed
    dy·(4·e/q) as (dy·4)·e/q: tanh's float32 backward gave NaN for dy = 1e38 where the
    gradient is 0 (an audit), mish's and silu's float64 ones inf."""
    big = float(np.finfo(dtype).max)
    x = np.concatenate([np.linspace(-30, 30, 241), [-104.0, 88.0, 1e6, -1e6]]).astype(dtype)
    for name, act in sorted(fastgd.activations.items()):
        if name == "prelu":
            continue
        for frac in (1.0, -0.26):
            dy = np.full(x.shape, frac * big, dtype)
            pairs = [(act.backward(dy, x, backend="numba"), act.backward(dy, x, backend="numpy"))]
            if act.takes_output:
                y = act.forward(x, backend="numpy")
                pairs.append((act.backward(dy, y=y, backend="numba"),
                              act.backward(dy, y=y, backend="numpy")))
            for got, want in pairs:
                bad = (np.isfinite(want) & ~np.isfinite(got)) | (np.isnan(got) & ~np.isnan(want))
                assert not bad.any(), (name, frac, x[bad][:3], got[bad][:3], want[bad][:3])
    # dy·(alpha·e^x), not (dy·alpha)·e^x: the latter overflowed for an alpha above 1, on
    # both backends; the gradient big·2e^x is finite for x > 0 (big) and 2e^x < 1
    dy = np.full(x.shape, big, dtype)
    finite = (x > 0) | (x < -np.log(2.0))
    for backend in ("numba", "numpy"):
        got = fastgd.elu_backward(dy, x, alpha=2.0, backend=backend)
        np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=backend)


def test_row_math_sums_with_reassoc_where_elementwise_backwards_keep_their_grouping():
    """The elementwise backwards compile without ``reassoc`` (the test above); math that sums
    along a row keeps it, as its sums vectorize only with it: when every backward lost it,
    softmax's backward from y took 1.39 ms on 2^20 float32 (rows of 256, one thread) against
    0.26, from x 8.0 against 3.6, and prelu's on (256, 64, 64) 6.8 against 1.4."""
    be = fastgd.get_backend("numba")
    acts = fastgd.activations
    row_math = [acts["softmax"].scalar_backward, acts["softmax"].scalar_backward_from_input,
                acts["log_softmax"].scalar_backward,
                acts["log_softmax"].scalar_backward_from_input, acts["prelu"].scalar_backward]
    for fn in row_math:
        assert "reassoc" in be.fastmath_flags(fn), fn.__name__
    for name in ("sigmoid", "tanh", "silu", "mish", "elu", "softplus", "leaky_relu"):
        for direction, (fn, _) in acts[name].math.items():
            assert ("reassoc" in be.fastmath_flags(fn)) == (direction == "forward"), (
                name, direction)


def test_many_parameter_values_keep_a_bounded_number_of_plans(monkeypatch):
    """Each slope value is a plan of its own (its typed scalars); a slope learned as a
    Python float, a new value each step, grew the dict by ~400 bytes a call."""
    from fastgd.activation import registry

    act = fastgd.activations["leaky_relu"]
    monkeypatch.setattr(act, "_plans", {})
    x = np.linspace(-3, 3, 11, dtype=np.float32)
    slopes = [0.01 + i / 1024 for i in range(registry.MAX_PLANS + 40)]
    for slope in slopes + slopes[:3]:  # the first ones again, after they were dropped
        got = fastgd.leaky_relu(x, negative_slope=slope, backend="numba")
        np.testing.assert_array_equal(got, np.where(x > 0, x, np.float32(slope) * x))
    assert 0 < len(act._plans) <= registry.MAX_PLANS


def _ulps(got, want):
    """|got - want| in units of the float32 spacing at want."""
    return np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("length", [100, 256])
def test_float32_softmax_rounds_the_product_with_one_over_the_sum_once(length):
    """y_i = e_i·(1/Σ) with 1/Σ as r_hi + r_lo (float64 split into two float32s): y_i is
    rounded once after e_i's. 1/Σ rounded to float32 alone (r_lo dropped) rounds twice:
    mean 0.36 -> 0.44 ULP on this data (max 1.65 -> 2.13 for rows of 100)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((512, length)) * 3).astype(np.float32)
    y = fastgd.softmax(x, axis=-1)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    u = _ulps(y, e / e.sum(axis=-1, keepdims=True))
    assert u.max() <= 2.0 and u.mean() <= 0.40, (u.max(), u.mean())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_right_of_zero_puts_back_the_rounding_of_beta_x(dtype):
    """For z = beta·x > 0, e = exp(-z) is corrected by e^-z_lo (z_lo: the rounding of
    beta·x), i.e. fma(e, -z_lo, e): with the sign of the left tail's correction, 2.5 % of
    results are misrounded instead of 1.2 % (20000 points of (0.3, 3), beta 3, against
    40-digit math)."""
    x = np.random.default_rng(7).uniform(0.3, 3, 20000).astype(dtype)
    y = fastgd.softplus(x, beta=3.0, threshold=20.0)
    with mp.workdps(40):
        want = np.array([float(mp.log1p(mp.exp(3 * mp.mpf(float(v)))) / 3)
                         for v in x]).astype(dtype)
    assert np.all(np.abs(y - want) <= np.spacing(want))  # faithful everywhere
    assert int((y != want).sum()) <= 360  # correctly rounded but for 1.8 % at most


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_past_its_limits_takes_them_exactly(dtype):
    """Past GELU_ONE GELU is x and its derivative 1, past -gelu_zero() both are -0 (the
    kernels take these limits there instead of computing subnormal numbers): exactly what
    the NumPy backend's float64 reference rounds to, on both sides of each threshold. The
    float32 derivative is dy·-0 from x = -13 on (gelu_backward_zero), within the contract."""
    from fastgd.activation.formulas import GELU_ONE

    zero = 14.5 if dtype == np.float32 else 39.0
    x = np.concatenate([np.linspace(GELU_ONE - 2, 3 * GELU_ONE, 4001),
                        np.linspace(-zero - 30, -zero + 4, 4001), [GELU_ONE, -zero, -13.0]])
    x = x.astype(dtype)
    dy = (np.random.default_rng(3).standard_normal(x.size) * 100).astype(dtype)
    want, dwant = fastgd.gelu(x, backend="numpy"), fastgd.gelu_backward(dy, x, backend="numpy")
    got, dgot = fastgd.gelu(x, backend="numba"), fastgd.gelu_backward(dy, x, backend="numba")
    far = (x > GELU_ONE) | (x < -zero)
    np.testing.assert_array_equal(got[far], want[far])
    np.testing.assert_array_equal(np.signbit(got[far]), np.signbit(want[far]))
    np.testing.assert_array_equal(got[x > GELU_ONE], x[x > GELU_ONE])
    assert np.all(got[x < -zero] == 0) and np.all(np.signbit(got[x < -zero]))
    np.testing.assert_array_equal(dgot[x > GELU_ONE], dy[x > GELU_ONE])
    assert_backward_contract(dgot, dwant, dy, dtype, "gelu_backward")
    if dtype == np.float32:
        assert np.all(dgot[x < -13] == 0) and np.all(dgot[(x >= -13) & (dy != 0)] != 0)
    else:
        np.testing.assert_array_equal(dgot[far], dwant[far])
    # the tanh form, whose lanes past |z| = 107 (forward) and 87 (float32 backward) compute
    # on m = 0
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    assert_forward_contract(fastgd.gelu(x, approximate="tanh", backend="numba"),
                            fastgd.gelu(x64, approximate="tanh", backend="numpy"), dtype,
                            "gelu tanh form")
    assert_backward_contract(fastgd.gelu_backward(dy, x, approximate="tanh", backend="numba"),
                             fastgd.gelu_backward(dy64, x64, approximate="tanh",
                                                  backend="numpy"),
                             dy, dtype, "gelu_backward tanh form")
    np.testing.assert_allclose(got, want, rtol=4e-7 if dtype == np.float32 else 1e-13,
                               atol=2 * np.finfo(dtype).smallest_subnormal)


def exponential_tail_inputs(dtype, points):
    """x on both sides of each threshold where the sigmoid family's kernels take limits
    (|x| = 43.5, 87, 104, 109, 374, 708, 746, 752), ``points`` to a range of 40 or so."""
    ranges = [(-800, 800, 5 * points), (-120, -80, points), (80, 120, points),
              (40, 48, points // 5), (-48, -40, points // 5), (-760, -700, 3 * points // 2),
              (700, 760, 3 * points // 2), (370, 378, points // 5)]
    x = [np.linspace(lo, hi, n + 1) for lo, hi, n in ranges]
    return np.concatenate(x + [[-np.inf, np.inf, np.nan, 0.0, -0.0]]).astype(dtype)


def check_exponential_tails(x, run):
    """Where e^-|x| leaves the normal numbers the sigmoid family's kernels take limits
    instead of computing subnormal numbers (each a slow assist on x86): sigmoid 1 and 0,
    silu, softplus and mish x, softplus 0 and mish -0 in the far left tail; the backwards of
    sigmoid, tanh, silu, elu, selu, softplus and mish 0 where the float32 contract allows an
    absolute error (|dx| < 1e-6·|dy|), in float64 only where the value rounds to 0. Within
    the contract against the float64 reference on both sides of each threshold, and the
    limits exactly. ``run(fn, *arrays, **params)``: fn on the backend under test, as a
    NumPy array."""
    dtype = x.dtype
    f32 = dtype == np.float32
    x64 = x.astype(np.float64)
    dy = (np.random.default_rng(4).standard_normal(x.size) * 100).astype(dtype)
    for name, kw in (("sigmoid", {}), ("silu", {}), ("tanh", {}), ("elu", {"alpha": 1.5}),
                     ("selu", {}), ("softplus", {}), ("softplus", {"beta": 2.0}),
                     ("softplus", {"beta": 0.5, "threshold": 1000.0}), ("mish", {})):
        fwd, bwd = getattr(fastgd, name), getattr(fastgd, name + "_backward")
        assert_forward_contract(run(fwd, x, **kw), fwd(x64, backend="numpy", **kw), dtype,
                                name)
        got = run(bwd, dy, x, **kw)
        assert_backward_contract(got, bwd(dy.astype(np.float64), x64, backend="numpy", **kw),
                                 dy, dtype, name)
        if f32:
            far = {"sigmoid": np.abs(x) > 87, "tanh": np.abs(x) > 43.5,
                   "softplus": kw.get("beta", 1.0) * x64 < -87}.get(name, x < -87)
            assert np.all(got[far] == 0), name  # past the thresholds: dy·0
    normal = 87 if f32 else 708
    y = run(fastgd.sigmoid, x)
    assert np.all(y[x > normal] == 1) and np.all(y[x < (-104 if f32 else -746)] == 0)
    assert not np.signbit(y[x < 0]).any()
    for name in ("silu", "softplus", "mish"):
        np.testing.assert_array_equal(run(getattr(fastgd, name), x)[x > normal], x[x > normal])
    zero = x < (-109 if f32 else -752)
    softplus, mish = run(fastgd.softplus, x)[zero], run(fastgd.mish, x)[zero]
    assert np.all(softplus == 0) and not np.signbit(softplus).any()
    assert np.all(mish == 0) and np.signbit(mish).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exponential_tails_take_their_limits_within_the_contract(dtype):
    """:func:`check_exponential_tails` on the Numba backend (tests/cuda: on CUDA)."""
    check_exponential_tails(exponential_tail_inputs(dtype, 4000), on_numba)
