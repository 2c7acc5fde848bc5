"""Peers: other libraries timed exactly like our backends, each only when installed.

* ``torch`` (CPU, same thread count as Numba) and ``torch-cuda``: the ATen kernels behind
  ``torch.nn.functional``, called with a preallocated output (``out=``/``grad_input=``)
  where ATen has one, so no peer pays for page faults our backends do not; backward uses
  the kernels autograd calls (``sigmoid_backward`` from the output, ``gelu_backward`` from
  the input, ...).
* ``cupy``: the NumPy reference run on CuPy arrays (NumPy dispatches to CuPy through
  ``__array_ufunc__``/``__array_function__``): plain array expressions, one kernel each.
* ``cupy-kernel``: a hand-written ``cupy.ElementwiseKernel`` for the common forward ops.
* ``numpy-plain``: the NumPy expressions a user writes for each activation, in the data's
  dtype (``1 / (1 + np.exp(-x))``, ``np.maximum(x, 0)``; exact GELU with SciPy's ``erf``
  when SciPy is installed): the answer to "how much faster than my NumPy code?", where
  our ``numpy`` backend is the float64 reference the kernels are tested against. (For the
  optimizers our NumPy backend is plain NumPy in the data's dtype already.)

Every name here is what the reports show; :func:`versions` gives each with its version.
"""

from __future__ import annotations

import functools
import math

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@functools.cache
def torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch as t
    except ImportError:
        return None
    return t


@functools.cache
def cupy():
    """The cupy module when installed and a real GPU is usable (never under the simulator)."""
    from fastgd.bench.bandwidth import gpu_available

    try:
        import cupy as cp
    except ImportError:
        return None
    return cp if gpu_available() else None


def available() -> list[str]:
    """The peers usable on this machine."""
    from fastgd.bench.bandwidth import gpu_available

    names = []
    t = torch()
    if t is not None:
        names.append("torch")
    names.append("numpy-plain")
    if t is not None and gpu_available() and t.cuda.is_available():
        names.append("torch-cuda")
    if cupy() is not None:
        names += ["cupy", "cupy-kernel"]
    return names


def versions() -> dict[str, str]:
    """Each available peer with its version (for the report)."""
    out = {}
    for name in available():
        module = torch() if name.startswith("torch") else np if name == "numpy-plain" else cupy()
        out[name] = module.__version__
    return out


def torch_threads() -> None:
    """Give torch the same number of CPU threads as Numba."""
    import numba

    t = torch()
    if t is not None:
        t.set_num_threads(numba.get_num_threads())


# -- torch: ATen kernels, preallocated outputs ---------------------------------------------
def _nn():
    return torch()._C._nn


def _aten():
    return torch().ops.aten


#: forward(x, out, w) -> result; w is the PReLU weight (other ops ignore it).
TORCH_FORWARD = {
    "sigmoid": lambda x, o, w: torch().sigmoid(x, out=o),
    "tanh": lambda x, o, w: torch().tanh(x, out=o),
    "relu": lambda x, o, w: torch().clamp_min(x, 0, out=o),
    "leaky_relu": lambda x, o, w: _nn().leaky_relu(x, 0.01, out=o),
    "prelu": lambda x, o, w: torch().prelu(x, w),
    "elu": lambda x, o, w: _nn().elu(x, 1.0, 1, 1, out=o),
    "selu": lambda x, o, w: _nn().elu(x, SELU_ALPHA, SELU_SCALE, 1, out=o),
    "gelu": lambda x, o, w: _nn().gelu(x, out=o),
    "gelu_tanh": lambda x, o, w: _nn().gelu(x, approximate="tanh", out=o),
    "silu": lambda x, o, w: _nn().silu(x, out=o),
    "softplus": lambda x, o, w: _nn().softplus(x, 1.0, 20.0, out=o),
    "mish": lambda x, o, w: _nn().mish(x, out=o),
    "hardsigmoid": lambda x, o, w: _nn().hardsigmoid(x, out=o),
    "hardswish": lambda x, o, w: _nn().hardswish(x, out=o),
    "softmax": lambda x, o, w: torch()._softmax(x, -1, False, out=o),
    "log_softmax": lambda x, o, w: torch()._log_softmax(x, -1, False, out=o),
}


def _torch_prelu_backward(dy, x, w):
    """dx, with dweight computed too, as ours computes both: autograd's prelu backward, the
    kernel's per-element weight gradient summed to the weight's shape."""
    dx, dw = _aten()._prelu_kernel_backward(dy, x, w.reshape(-1, *([1] * (x.dim() - 2))))
    dw.sum(dim=[d for d in range(x.dim()) if d != 1])
    return dx


#: backward(dy, x, y, out, w) -> dx; y is the forward output (what autograd keeps for some).
TORCH_BACKWARD = {
    "sigmoid": lambda dy, x, y, o, w: _aten().sigmoid_backward.grad_input(dy, y, grad_input=o),
    "tanh": lambda dy, x, y, o, w: _aten().tanh_backward.grad_input(dy, y, grad_input=o),
    "relu": lambda dy, x, y, o, w: _aten().threshold_backward.grad_input(
        dy, x, 0, grad_input=o),
    "leaky_relu": lambda dy, x, y, o, w: _aten().leaky_relu_backward.grad_input(
        dy, x, 0.01, False, grad_input=o),
    "prelu": lambda dy, x, y, o, w: _torch_prelu_backward(dy, x, w),
    "elu": lambda dy, x, y, o, w: _aten().elu_backward.grad_input(
        dy, 1.0, 1, 1, False, x, grad_input=o),
    "selu": lambda dy, x, y, o, w: _aten().elu_backward.grad_input(
        dy, SELU_ALPHA, SELU_SCALE, 1, False, x, grad_input=o),
    "gelu": lambda dy, x, y, o, w: _aten().gelu_backward.grad_input(dy, x, grad_input=o),
    "gelu_tanh": lambda dy, x, y, o, w: _aten().gelu_backward.grad_input(
        dy, x, approximate="tanh", grad_input=o),
    "silu": lambda dy, x, y, o, w: _aten().silu_backward.grad_input(dy, x, grad_input=o),
    "softplus": lambda dy, x, y, o, w: _aten().softplus_backward.grad_input(
        dy, x, 1.0, 20.0, grad_input=o),
    "mish": lambda dy, x, y, o, w: _aten().mish_backward(dy, x),
    "hardsigmoid": lambda dy, x, y, o, w: _aten().hardsigmoid_backward.grad_input(
        dy, x, grad_input=o),
    "hardswish": lambda dy, x, y, o, w: _aten().hardswish_backward.out(dy, x, out=o),
    "softmax": lambda dy, x, y, o, w: _aten()._softmax_backward_data.out(
        dy, y, -1, y.dtype, grad_input=o),
    "log_softmax": lambda dy, x, y, o, w: _aten()._log_softmax_backward_data.out(
        dy, y, -1, y.dtype, out=o),
}

#: Backwards from the forward output y (``self_is_result`` / ``is_result``), as autograd runs them.
TORCH_BACKWARD_Y = {
    "sigmoid": TORCH_BACKWARD["sigmoid"],
    "tanh": TORCH_BACKWARD["tanh"],
    "relu": lambda dy, x, y, o, w: _aten().threshold_backward.grad_input(
        dy, y, 0, grad_input=o),
    "leaky_relu": lambda dy, x, y, o, w: _aten().leaky_relu_backward.grad_input(
        dy, y, 0.01, True, grad_input=o),
    "elu": lambda dy, x, y, o, w: _aten().elu_backward.grad_input(
        dy, 1.0, 1, 1, True, y, grad_input=o),
    "selu": lambda dy, x, y, o, w: _aten().elu_backward.grad_input(
        dy, SELU_ALPHA, SELU_SCALE, 1, True, y, grad_input=o),
}


def torch_sync(device: str):
    """The synchronize function for torch on ``device`` (None on the CPU)."""
    return torch().cuda.synchronize if device == "gpu" else None


def torch_tensor(a, device: str):
    """A torch tensor of NumPy array ``a``: shared memory on the CPU, a copy on the GPU."""
    t = torch().from_numpy(a)
    return t.cuda() if device == "gpu" else t


def torch_unwritten(shape, dtype, device: str):
    """An output tensor of NaN (see ``activation_cases._unwritten``), made on the device
    itself (a NumPy array copied there moved 1 GiB per case at 2^28)."""
    t = torch()
    return t.full(shape, float("nan"), dtype=getattr(t, str(np.dtype(dtype))),
                  device="cuda" if device == "gpu" else "cpu")


def torch_to_host(t):
    return t.detach().cpu().numpy()


# -- plain NumPy: the expressions a user writes, in the data's dtype -------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(x)))


def _erf(x):
    from scipy.special import erf  # ImportError without SciPy: no exact GELU peer

    return erf(x)


_GELU_C = math.sqrt(2 / math.pi)  # a Python float: NumPy's float64 scalars would promote
_SQRT2, _SQRT_2PI = math.sqrt(2), math.sqrt(2 * math.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(_GELU_C * (x + 0.044715 * x**3)))


def _gelu_tanh_backward(dy, x):
    t = np.tanh(_GELU_C * (x + 0.044715 * x**3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x))


def _mish_backward(dy, x):
    t, s = np.tanh(_softplus(x)), _sigmoid(x)
    return dy * (t + x * s * (1 - t * t))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _channels(w):
    return w[:, None]  # one slope per channel of (batch, channels, length)


def _prelu_backward(dy, x, w):
    """dx, with dweight computed too (the sum over batch and length of dy·x where x ≤ 0),
    as ours computes both."""
    np.sum(np.where(x > 0, 0, dy * x), axis=(0, 2))
    return np.where(x > 0, dy, _channels(w) * dy)


#: forward(x, w) -> y, in x's dtype (NumPy keeps float32: Python numbers are weak).
NUMPY_FORWARD = {
    "sigmoid": lambda x, w: _sigmoid(x),
    "tanh": lambda x, w: np.tanh(x),
    "relu": lambda x, w: np.maximum(x, 0),
    "leaky_relu": lambda x, w: np.where(x > 0, x, 0.01 * x),
    "prelu": lambda x, w: np.where(x > 0, x, _channels(w) * x),
    "elu": lambda x, w: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x, w: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "gelu": lambda x, w: 0.5 * x * (1 + _erf(x / _SQRT2)),
    "gelu_tanh": lambda x, w: _gelu_tanh(x),
    "silu": lambda x, w: x * _sigmoid(x),
    "softplus": lambda x, w: _softplus(x),
    "mish": lambda x, w: x * np.tanh(_softplus(x)),
    "hardsigmoid": lambda x, w: np.clip(x / 6 + 0.5, 0, 1),
    "hardswish": lambda x, w: x * np.clip(x / 6 + 0.5, 0, 1),
    "softmax": lambda x, w: _softmax(x),
    "log_softmax": lambda x, w: _log_softmax(x),
}

#: backward(dy, x, y, w) -> dx, y the forward output (softmax's and log_softmax's input).
NUMPY_BACKWARD = {
    "sigmoid": lambda dy, x, y, w: dy * _sigmoid(x) * (1 - _sigmoid(x)),
    "tanh": lambda dy, x, y, w: dy * (1 - np.tanh(x) ** 2),
    "relu": lambda dy, x, y, w: dy * (x > 0),
    "leaky_relu": lambda dy, x, y, w: np.where(x > 0, dy, 0.01 * dy),
    "prelu": lambda dy, x, y, w: _prelu_backward(dy, x, w),
    "elu": lambda dy, x, y, w: np.where(x > 0, dy, dy * np.exp(x)),
    "selu": lambda dy, x, y, w: SELU_SCALE * np.where(x > 0, dy, SELU_ALPHA * dy * np.exp(x)),
    "gelu": lambda dy, x, y, w: dy * (0.5 * (1 + _erf(x / _SQRT2))
                                      + x * np.exp(-0.5 * x * x) / _SQRT_2PI),
    "gelu_tanh": lambda dy, x, y, w: _gelu_tanh_backward(dy, x),
    "silu": lambda dy, x, y, w: dy * _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
    "softplus": lambda dy, x, y, w: np.where(x > 20, dy, dy * _sigmoid(x)),
    "mish": lambda dy, x, y, w: _mish_backward(dy, x),
    "hardsigmoid": lambda dy, x, y, w: np.where((x > -3) & (x < 3), dy / 6, 0),
    "hardswish": lambda dy, x, y, w: np.where(x < -3, 0, np.where(x < 3, dy * (x / 3 + 0.5),
                                                                    dy)),
    "softmax": lambda dy, x, y, w: y * (dy - (dy * y).sum(axis=-1, keepdims=True)),
    "log_softmax": lambda dy, x, y, w: dy - np.exp(y) * dy.sum(axis=-1, keepdims=True),
}

#: backward(dy, x, y, w) -> dx from the forward output y.
NUMPY_BACKWARD_Y = {
    "sigmoid": lambda dy, x, y, w: dy * y * (1 - y),
    "tanh": lambda dy, x, y, w: dy * (1 - y * y),
    "relu": lambda dy, x, y, w: dy * (y > 0),
    "leaky_relu": lambda dy, x, y, w: np.where(y > 0, dy, 0.01 * dy),
    "elu": lambda dy, x, y, w: np.where(y > 0, dy, dy * (y + 1)),
    "selu": lambda dy, x, y, w: np.where(y > 0, SELU_SCALE * dy,
                                         dy * (y + SELU_SCALE * SELU_ALPHA)),
}


def numpy_call(direction: str, op: str, a: dict):
    """The plain-NumPy call of ``op`` in ``direction`` on host arrays ``a``, its floating
    point warnings (exp overflowing to inf in a tail) silenced as a user would see them
    once and move on."""
    if direction == "forward":
        fn = NUMPY_FORWARD[op]
        compute = lambda: fn(a["x"], a["w"])  # noqa: E731
    else:
        fn = (NUMPY_BACKWARD_Y if direction == "backward_y" else NUMPY_BACKWARD)[op]
        compute = lambda: fn(a["dy"], a["x"], a.get("y"), a["w"])  # noqa: E731

    def call():
        with np.errstate(all="ignore"):
            return compute()

    return call


# -- CuPy ElementwiseKernel: hand-written CUDA for the common forward ops -----------------
CUPY_KERNELS = {
    "sigmoid": "y = 1 / (1 + exp(-x))",
    "tanh": "y = tanh(x)",
    "relu": "y = x > 0 ? x : (T)0",
    "silu": "y = x / (1 + exp(-x))",
    "gelu": "y = (T)0.5 * x * erfc(-x * (T)0.70710678118654752440)",
}


@functools.cache
def cupy_kernel(op: str):
    """The ``ElementwiseKernel`` for forward ``op`` (compiled by CuPy on first call)."""
    return cupy().ElementwiseKernel("T x", "T y", CUPY_KERNELS[op], f"fastgd_peer_{op}")


def cupy_sync():
    return cupy().cuda.Device().synchronize
