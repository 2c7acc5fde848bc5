"""Activations: the math (``formulas``), the NumPy reference (``reference``), the objects
(``registry``) and the table of every activation with its parameters and docs."""

from __future__ import annotations

import math

from fastgd._arrays import is_number
from fastgd._checks import finite
from fastgd.activation import formulas as m
from fastgd.activation import reference as ref
from fastgd.activation.registry import GELU, Activation, PReLU, RowActivation


def _finite(*names):
    """Each of ``names`` a finite number (NumPy scalars too), as :func:`_checks.finite` has
    it (called only to raise: the check runs on every call with parameters)."""
    def check(values):
        for name in names:
            v = values[name]
            if not (is_number(v) and math.isfinite(v)):
                finite(name, v)
    return check


_softplus_finite = _finite("beta", "threshold")


#: The smallest softplus beta: from ~1e-22 down the left tail's e^(beta·x)/beta is no longer
#: 0 where e^(beta·x) underflows (the kernels' exponent stops at -formulas.BIG: at x = -inf
#: they gave e^-800/beta, not 0, from beta = 1e-24), and it keeps normal values that the
#: kernels' scaling does not. Such a softplus is ln2/beta + x/2 to every digit anyway.
SOFTPLUS_MIN_BETA = 1e-20


def _check_softplus(values):
    _softplus_finite(values)
    if values["beta"] <= 0:
        raise ValueError(f"softplus beta must be > 0, got {values['beta']}")
    if values["beta"] < SOFTPLUS_MIN_BETA:
        raise ValueError(f"softplus beta must be at least {SOFTPLUS_MIN_BETA:g} (its left "
                         f"tail e^(beta·x)/beta leaves the float range), got {values['beta']}")
    if values["threshold"] < 0:
        raise ValueError(f"softplus threshold must be >= 0, got {values['threshold']}")


def _nonnegative(name):
    """For backward from the output: y > 0 must mean x > 0, so no negative slope."""
    def check(values):
        if values[name] < 0:
            raise ValueError(f"the backward from the output y= needs {name} >= 0, got "
                             f"{values[name]}; pass the forward input x")
    return check


def _table():
    A = Activation
    gelu_exact = A("gelu", m.gelu, m.gelu_backward, ref.gelu, ref.gelu_backward,
                   wide=("forward", "backward"), narrow=("forward", "backward"),
                   doc="x·Φ(x), Φ the standard normal CDF.")
    gelu_tanh = A("gelu", m.gelu_tanh, m.gelu_tanh_backward, ref.gelu_tanh,
                  ref.gelu_tanh_backward, wide=("forward", "backward"),
                  narrow=("forward", "backward"), doc="0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).")
    acts = [
        A("sigmoid", m.sigmoid, m.sigmoid_backward, ref.sigmoid, ref.sigmoid_backward,
          from_output=(m.sigmoid_backward_from_output, ref.sigmoid_backward_from_output),
          doc="1 / (1 + exp(-x))."),
        A("tanh", m.tanh_, m.tanh_backward, ref.tanh, ref.tanh_backward,
          from_output=(m.tanh_backward_from_output, ref.tanh_backward_from_output),
          doc="tanh(x)."),
        A("relu", m.relu, m.relu_backward, ref.relu, ref.relu_backward,
          from_output=(m.relu_backward_from_output, ref.relu_backward_from_output),
          doc="max(x, 0); the gradient at 0 is 0."),
        A("leaky_relu", m.leaky_relu, m.leaky_relu_backward, ref.leaky_relu,
          ref.leaky_relu_backward, params={"negative_slope": 0.01},
          check=_finite("negative_slope"),
          from_output=(m.leaky_relu_backward_from_output, ref.leaky_relu_backward_from_output),
          output_check=_nonnegative("negative_slope"), doc="x if x > 0 else negative_slope·x."),
        PReLU(doc="x if x > 0 else w·x, w one slope or one per channel (axis 1)."),
        A("elu", m.elu, m.elu_backward, ref.elu, ref.elu_backward, params={"alpha": 1.0},
          check=_finite("alpha"),
          from_output=(m.elu_backward_from_output, ref.elu_backward_from_output),
          output_check=_nonnegative("alpha"), wide=("backward", "backward_from_output"),
          narrow=("backward", "backward_from_output"),
          doc="x if x > 0 else alpha·(exp(x) - 1)."),
        A("selu", m.selu, m.selu_backward, ref.selu, ref.selu_backward,
          from_output=(m.selu_backward_from_output, ref.selu_backward_from_output),
          wide=("forward", "backward", "backward_from_output"),
          narrow=("forward", "backward", "backward_from_output"),
          doc="scale·elu(x, alpha) with the self-normalizing constants."),
        GELU(gelu_exact, gelu_tanh),
        A("silu", m.silu, m.silu_backward, ref.silu, ref.silu_backward,
          wide=("forward", "backward"), narrow=("forward", "backward"),
          doc="x·sigmoid(x) (swish)."),
        A("softplus", m.softplus, m.softplus_backward, ref.softplus, ref.softplus_backward,
          params={"beta": 1.0, "threshold": 20.0}, check=_check_softplus,
          wide=("forward", "backward"), narrow=("forward", "backward"),
          doc="log(1 + exp(beta·x))/beta; x where beta·x > threshold."),
        A("mish", m.mish, m.mish_backward, ref.mish, ref.mish_backward,
          wide=("forward", "backward"), narrow=("forward", "backward"),
          doc="x·tanh(softplus(x))."),
        A("hardsigmoid", m.hardsigmoid, m.hardsigmoid_backward, ref.hardsigmoid,
          ref.hardsigmoid_backward, doc="clip(x + 3, 0, 6)/6."),
        A("hardswish", m.hardswish, m.hardswish_backward, ref.hardswish,
          ref.hardswish_backward, wide=("backward",), narrow=("backward",),
          doc="x·clip(x + 3, 0, 6)/6."),
        RowActivation("softmax", m.softmax_row, m.softmax_backward_row,
                      m.softmax_backward_row_from_input, ref.softmax,
                      ref.softmax_backward, narrow=("forward", "backward_from_output"),
                      doc="exp(x - max) / Σ exp(x - max) along axis."),
        RowActivation("log_softmax", m.log_softmax_row, m.log_softmax_backward_row,
                      m.log_softmax_backward_row_from_input, ref.log_softmax,
                      ref.log_softmax_backward, ref.log_softmax_backward_from_input,
                      narrow=("forward",), wide_lines=("forward",),
                      doc="x - max - log Σ exp(x - max) along axis."),
    ]
    return {a.name: a for a in acts}


#: Every activation by name: ``activations["gelu"].forward(x, approximate="tanh")``.
activations = _table()
