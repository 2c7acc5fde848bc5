"""The float32 kernels that compute in float32 (``narrow``) instead of float64: the scalar
``fma``, when an op narrows, and every float32 in the tail ranges their repairs cover."""

from __future__ import annotations

from fractions import Fraction

import numba
import numpy as np
import pytest

import fastgd
from fastgd.backends import cpu_math, get_backend
from fastgd.scalar import fma
from tests.helpers import assert_backward_contract, assert_forward_contract


def test_python_fma_is_exact():
    a, b = np.float32(1.1), np.float32(3.3)
    assert fma(a, b, -(a * b)) == np.float32(float(a) * float(b) - float(a * b))
    assert type(fma(a, b, a)) is np.float32
    x, y = 1.1, 3.3
    exact = Fraction(x) * Fraction(y) - Fraction(x * y)
    assert fma(x, y, -(x * y)) == float(exact) != 0.0
    assert np.isnan(fma(np.inf, 0.0, 1.0))
    assert fma(1e308, 2.0, 3.0) == np.inf and fma(-1e308, 2.0, 3.0) == -np.inf  # overflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_fma_is_one_rounding(dtype):
    @numba.njit
    def err(a, b):
        return cpu_math.fma(a, b, -(a * b))

    a, b = dtype(1.1), dtype(3.3)
    assert err(a, b) == fma(a, b, -(a * b)) != 0


def _compute(name, be, dtype=np.float32, direction="forward", **params):
    act = fastgd.activations[name]
    op, scalars = act._variant(act.bind((), params))
    return op._compute(np.dtype(dtype), direction, be, scalars)


def test_narrow_ops_compute_float32_on_numba_only():
    numba_be, numpy_be = get_backend("numba"), get_backend("numpy")
    for name in ("gelu", "silu", "mish", "softplus", "selu"):
        assert _compute(name, numba_be) == np.float32
        assert _compute(name, numpy_be) == np.float64
    for name in ("gelu", "silu", "mish"):
        assert _compute(name, numba_be, direction="backward") == np.float32
        assert _compute(name, numpy_be, direction="backward") == np.float64
    for direction in ("forward", "backward"):
        assert _compute("gelu", numba_be, direction=direction, approximate="tanh") == np.float32
    assert _compute("softplus", numba_be, beta=2.0) == np.float32
    assert _compute("softplus", numba_be, beta=0.3) == np.float64  # beta not exact in float32


def _every_float32(lo, hi):
    a, b = sorted(np.array([lo, hi], np.float32).view(np.int32))
    return np.arange(a, b + 1, dtype=np.int32).view(np.float32)


@pytest.mark.parametrize(("name", "direction", "lo", "hi", "params"), [
    ("gelu", "forward", -14.5, -11.0, {}),
    # GELU-tanh: x·e^z rounded once where e^z is subnormal (x < -10.1), its limits beyond
    ("gelu", "forward", -12.5, -7.0, {"approximate": "tanh"}),
    ("gelu", "forward", -3.0, -1.0, {"approximate": "tanh"}),
    ("silu", "forward", -104.5, -86.0, {}),
    ("mish", "forward", -104.5, -86.0, {}),
    ("softplus", "forward", -104.5, -86.0, {}),
    ("softplus", "forward", -52.5, -43.0, {"beta": 2.0}),
    ("softplus", "forward", -104.5 / 13, -86.0 / 13, {"beta": 13.0}),  # beta·x rounded
    # softplus's polynomial log1p(e^-|z|) on both sides of 0, where its worst errors are
    ("softplus", "forward", -0.5, -0.4, {}),
    ("softplus", "forward", 0.005, 0.011, {}),
    ("softplus", "forward", 0.5, 1.1, {"beta": 2.0, "threshold": 10.0}),
    # backwards: the local expansions around their zeros (formulas.ROOTS) and their edges
    ("silu", "backward", -2.8, -0.55, {}),
    ("mish", "backward", -3.0, -0.45, {}),
    ("gelu", "backward", -2.0, -0.3, {}),
    ("silu", "backward", -104.5, -60.0, {}),
    ("mish", "backward", -104.5, -60.0, {}),
    ("gelu", "backward", -14.5, -11.0, {}),
    ("gelu", "backward", -2.0, -0.3, {"approximate": "tanh"}),
    ("gelu", "backward", -12.5, -2.0, {"approximate": "tanh"}),
])
def test_every_float32_in_the_tail(name, direction, lo, hi, params):
    x = _every_float32(lo, hi)
    act = fastgd.activations[name]
    assert _compute(name, get_backend("numba"), direction=direction, **params) == np.float32
    if direction == "forward":
        want = act.forward(x.astype(np.float64), backend="numpy", **params)
        assert_forward_contract(act.forward(x, **params), want, np.float32, name)
    else:
        dy = np.ones_like(x)
        want = act.backward(dy.astype(np.float64), x.astype(np.float64), backend="numpy",
                            **params)
        got = act.backward(dy, x, **params)
        assert_backward_contract(got, want, dy, np.float32, f"{name} backward")


@pytest.mark.parametrize(("name", "params"), [("elu", {}), ("elu", {"alpha": 0.5}),
                                              ("elu", {"alpha": 0.3}), ("selu", {})])
def test_backward_from_output_where_y_plus_alpha_cancels(name, params):
    """dx = dy·(y + alpha) (selu: y + scale·alpha) cancels as x → -inf; |dx| ≥ 1e-3·|dy| down
    to x ≈ -6.9. Float32 computes it in float32 for an alpha exact there (y + alpha is then
    exact, Sterbenz; selu splits its constant), in float64 for others (0.3)."""
    x = _every_float32(-7.0, -3.0)
    act = fastgd.activations[name]
    narrow = params.get("alpha", 1.0) != 0.3
    assert (_compute(name, get_backend("numba"), direction="backward_from_output", **params)
            == (np.float32 if narrow else np.float64))
    y = act.forward(x, **params)
    dy = np.ones_like(y)
    want = act.backward(dy.astype(np.float64), y=y.astype(np.float64), backend="numpy",
                        **params)
    got = act.backward(dy, y=y, **params)
    assert_backward_contract(got, want, dy, np.float32, f"{name} backward from y {params}")


def test_hardswish_backward_near_its_zero():
    """(2x + 3)/6 in float32 for every float32 of [-2, -1]: exact 2x + 3 around x = -1.5,
    where x/3 + 0.5 would cancel."""
    x = _every_float32(-2.0, -1.0)
    assert _compute("hardswish", get_backend("numba"), direction="backward") == np.float32
    dy = np.ones_like(x)
    want = fastgd.hardswish_backward(dy.astype(np.float64), x.astype(np.float64),
                                     backend="numpy")
    got = fastgd.hardswish_backward(dy, x)
    assert_backward_contract(got, want, dy, np.float32, "hardswish backward")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_selu_scales_up_to_the_float_maximum_without_overflowing(backend):
    """scale·v for every float32 v of the top binade: float32's scale rounds up, so v·scale in
    float32 gave inf at v = 3.2386e38 (0x7f73a598), where the float64 product rounds to the
    float32 maximum. The forward's x > 0, and dy (of either sign) times scale in both
    backwards."""
    from fastgd.activation.formulas import SELU_SCALE

    v = np.arange(0x7F700000, 0x7F800000, 64, dtype=np.int32).view(np.float32)
    v = np.concatenate([v, np.array([0x7F73A597, 0x7F73A598, 0x7F73A599], np.int32)
                        .view(np.float32), -v[:1000]])
    with np.errstate(over="ignore"):
        want = (SELU_SCALE * v.astype(np.float64)).astype(np.float32)
    assert np.isfinite(want[-1000 - 2]) and np.isinf(want[-1000 - 1])  # 0x...598 and 599
    ones = np.ones_like(v)
    up = v > 0
    assert_forward_contract(fastgd.selu(v[up], backend=backend), want[up], np.float32, "selu")
    for got in (fastgd.selu_backward(v, ones, backend=backend),
                fastgd.selu_backward(v, y=ones, backend=backend)):
        assert_forward_contract(got, want, np.float32, "selu backward")


@pytest.mark.parametrize("dy", [0.7, 0.7216455340385437])
def test_mish_backward_holds_the_contract_for_any_upstream_gradient(dy):
    """The derivative's relative error, not its ULP error at dy = 1, bounds dy·derivative:
    it reached 8.85·2^-24 near x = -3.17 (8.66 ULP for dy = 0.7, 9.02 for the second dy,
    found by an exhaustive check of every float32), over the contract's 8."""
    x = _every_float32(-3.4, -2.9)
    dy = np.full_like(x, dy)
    want = fastgd.mish_backward(dy.astype(np.float64), x.astype(np.float64), backend="numpy")
    assert_backward_contract(fastgd.mish_backward(dy, x), want, dy, np.float32,
                             "mish backward")
