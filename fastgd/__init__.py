"""fastgd: Numba kernels for activations and fused gradient-descent updates.

One API, three backends: ``numpy`` (the reference), ``numba`` (CPU, parallel) and ``cuda``
(``numba.cuda`` kernels on CuPy or any ``__cuda_array_interface__`` array)::

    import numpy as np, fastgd
    x = np.random.randn(4096, 512).astype(np.float32)
    y = fastgd.gelu(x)                              # auto: Numba CPU for NumPy arrays
    dx = fastgd.gelu_backward(np.ones_like(x), x)   # upstream gradient, forward input
    with fastgd.use_backend("numpy"):
        y_ref = fastgd.gelu(x)

    params = {"w": np.random.randn(784, 256).astype(np.float32)}
    opt = fastgd.AdamW(params, lr=fastgd.schedules.warmup_cosine(3e-4, warmup=100, total=10_000),
                       max_grad_norm=1.0, skip_nonfinite=True)
    info = opt.step({"w": grad})                    # one fused in-place pass per tensor
"""

import os

from fastgd import config

if not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & os.environ.keys():  # see config.OPENMP_SPINCOUNT
    os.environ["GOMP_SPINCOUNT"] = str(config.OPENMP_SPINCOUNT)

from fastgd.activation import activations  # noqa: E402
from fastgd.backends import (
    BackendUnavailable,
    backends,
    get_backend,
    to_device,
    to_host,
    use_backend,
)
from fastgd.optim import (
    SGD,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Groups,
    Lion,
    NAdam,
    ParamBuffer,
    RAdam,
    RMSprop,
    clip_grad_norm,
    clip_grad_value,
    schedules,
)

__version__ = "0.1.0"


def _expose(act):
    """Module-level ``NAME`` and ``NAME_backward`` functions for one activation."""

    run_forward, run_backward = act.forward, act.backward  # bound once: a call is short

    def forward(x, *args, **kwargs):
        return run_forward(x, *args, **kwargs)

    def backward(dy, x=None, *args, **kwargs):
        return run_backward(dy, x, *args, **kwargs)

    params = "".join(f", {k}={v!r}" for k, v in act.params.items())
    weight = ", weight" if act.name == "prelu" else ""
    forward.__name__ = forward.__qualname__ = act.name
    forward.__doc__ = f"{act.name}(x{weight}{params}, out=None, backend=None): {act.__doc__}"
    saved, y = ("x=None", ", y=None") if act.takes_output else ("x", "")
    backward.__name__ = backward.__qualname__ = f"{act.name}_backward"
    backward.__doc__ = (
        f"{act.name}_backward(dy, {saved}{weight}{params}{y}, out=None, backend=None): the "
        f"gradient of {act.name} with respect to its input, from the upstream gradient dy "
        f"and the forward input x" + (" or its output y=." if act.takes_output else ".")
        + (" Returns (dx, dweight)." if weight else "")
    )
    forward.__signature__ = _signature(["x"], act, takes_y=False)
    backward.__signature__ = _signature(["dy", "x"], act, takes_y=act.takes_output)
    return forward, backward


def _signature(arrays, act, takes_y):
    """What ``help()`` and editors show: the real parameters, not ``(*args, **kwargs)``."""
    from inspect import Parameter as P
    from inspect import Signature

    params = [P(a, P.POSITIONAL_OR_KEYWORD) for a in arrays]
    if takes_y:  # x or y=
        params[-1] = P("x", P.POSITIONAL_OR_KEYWORD, default=None)
    if act.name == "prelu":
        params.append(P("weight", P.POSITIONAL_OR_KEYWORD))
    params += [P(k, P.POSITIONAL_OR_KEYWORD, default=v) for k, v in act.params.items()]
    params += [P(k, P.KEYWORD_ONLY, default=None) for k in (["y"] if takes_y else [])
               + ["out", "backend"]]
    return Signature(params)


for _act in activations.values():
    globals()[_act.name], globals()[f"{_act.name}_backward"] = _expose(_act)
del _act

__all__ = [
    "activations",
    "backends",
    "get_backend",
    "use_backend",
    "to_device",
    "to_host",
    "BackendUnavailable",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "Lion",
    "Groups",
    "ParamBuffer",
    "clip_grad_norm",
    "clip_grad_value",
    "schedules",
    *(n for a in activations for n in (a, f"{a}_backward")),
]


def __getattr__(name):
    """``fastgd.nn`` imported on first use, as ``from fastgd import nn`` would: importing it
    sets the OpenMP workers' spin count for training (``fastgd.nn``), which a program that
    only calls the kernels should not get from ``import fastgd``."""
    if name == "nn":
        import importlib

        return importlib.import_module("fastgd.nn")
    raise AttributeError(f"module 'fastgd' has no attribute {name!r}")
