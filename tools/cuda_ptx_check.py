"""Compile every CUDA kernel that fastgd's API generates to PTX, without a GPU.

The CUDA simulator (tests/cuda) runs the kernels as Python, so it never sees what only the
device compiler rejects (a typing error in device code, a math function the device lacks).
This swaps the cuda backend for one that takes host arrays and, instead of launching each
kernel, compiles it for compute capability 9.0 (H100/H200) with the argument types of the
launch; then it calls every activation (forward, backward, backward from y=), every
optimizer's step (every option combination of the tests), gradient clipping, nn's fused
kernels and losses, softmax's and the losses' block-per-row kernels (rows of
config.ROW_THREADS), float32 and float64, through the public API. Nothing runs: the
kernels are only compiled.

Needs NVVM and NVRTC (the ptx or cuda extras' numba-cuda wheels, or a CUDA toolkit) but no
driver; tests/test_cuda_compile.py runs it:

    PYTHONPATH=. python tools/cuda_ptx_check.py [float32|float64]
"""

import importlib
import itertools
import math
import re
import sys
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda
from numba.cuda import dispatcher as cuda_dispatcher

import fastgd
from fastgd import config, nn
from fastgd.backends import cuda_backend
from fastgd.backends.cuda_backend import CudaBackend
from fastgd.backends.numpy_backend import HostArrays
from fastgd.nn import functional as F
from fastgd.nn import losses
from fastgd.nn._kernels import get_activation
from tests.optim_textbook import CONFIGS

CC = (9, 0)


class PtxCheck(HostArrays, CudaBackend):
    """The cuda backend's kernels, compiled to PTX at each launch instead of run."""

    def __init__(self):
        super().__init__()
        self.compiled = {}
        self.label = None  # set around the float32 elementwise activations' calls
        self.float64_ops = {}  # their label -> float64 arithmetic instructions in the PTX

    def empty(self, shape, dtype):
        # no kernel runs, so results are what this returns: zeros, not np.empty's garbage
        # (a negative "sum of squares" once made the clipping step's sqrt fail, at random)
        return np.zeros(shape, dtype)

    # the device's own state initialisation and copies (HostArrays' come first otherwise)
    full = CudaBackend.full
    copy_into = CudaBackend.copy_into

    def status(self):
        return "ok (PTX check: kernels are compiled, not run)"

    def launch(self, kernel, n, args):
        sig = tuple(numba.typeof(a) for a in args)
        key = (kernel.py_func, sig)
        if key not in self.compiled:
            ptx = cuda.compile_ptx(kernel.py_func, sig, cc=CC)[0]
            self.compiled[key] = len(ptx)
            if self.label is not None:
                self.float64_ops[self.label] = len(FLOAT64_OP.findall(ptx))


#: a float64 arithmetic instruction (add.rn.f64, fma.rn.f64, div.rn.f64, ...)
FLOAT64_OP = re.compile(r"^\s*(?:add|sub|mul|fma|div|rcp|sqrt|neg|abs|min|max)\.[a-z.]*f64\b",
                        re.MULTILINE)


def run_everything(be, dtypes=(np.float32, np.float64)):
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        x = rng.normal(0, 3, (8, 16)).astype(dtype)
        dy = np.ones_like(x)
        for name, act in fastgd.activations.items():
            forms = [{"approximate": "none"}, {"approximate": "tanh"}] if name == "gelu" else [{}]
            for params in forms:
                if name == "prelu":
                    params = {"weight": np.full(16, 0.25, dtype)}
                elementwise = act.kind == "elementwise" and name != "prelu"
                label = "gelu_tanh" if params.get("approximate") == "tanh" else name
                watch = dtype == np.float32 and elementwise
                be.label = f"{label} forward" if watch else None
                y = act.forward(x, backend="cuda", **params)
                be.label = f"{label} backward" if watch else None
                act.backward(dy, x, backend="cuda", **params)
                if act.takes_output and name != "prelu":
                    be.label = f"{label} backward from y" if watch else None
                    act.backward(dy, y=np.abs(y), backend="cuda", **params)
                be.label = None
        for name, options in CONFIGS:  # every update rule and option combination
            buf = fastgd.ParamBuffer({"w": (4, 5), "b": (3,)}, dtype, backend="cuda")
            getattr(fastgd, name)(buf, **options).step()
        grads = [rng.normal(0, 3, 20_000).astype(dtype)]  # beyond clip.SMALL: kernels
        for norm_type in (2.0, math.inf):
            fastgd.clip_grad_norm(grads, 0.0, norm_type=norm_type, backend="cuda")
        fastgd.clip_grad_value(grads, 0.5, backend="cuda")
        opt = fastgd.Adam({"w": np.zeros(6, dtype)}, backend="cuda")
        opt.load_state_dict(opt.state_dict())  # the state copied back in (copy_into)
        # nn's fused kernels; a batch of 2 * ROW_THREADS runs its column lines a block each
        tall = rng.normal(0, 3, (2 * config.ROW_THREADS, 16)).astype(dtype)
        for h, name in itertools.product((x, tall), ("relu", "gelu", "tanh", "identity")):
            a = get_activation(name)
            z, out, bias = np.empty_like(h), np.empty_like(h), np.zeros(16, dtype)
            F.bias_act(be, h, bias, a, z, out)
            F.act_backward(be, np.ones_like(h), z, a, np.empty_like(h), np.empty(16, dtype))
            stats = np.empty((3, 16), dtype)
            F.batch_norm_stats(be, h, 1e-5, stats)
            F.batch_norm_act(be, h, stats[0], stats[1], bias + 1, bias, a, z, out)
            for train in (True, False):  # after a training and an eval forward
                F.batch_norm_backward(be, np.ones_like(h), z, h, stats[0], stats[1], bias + 1,
                                      a, np.empty_like(h), np.empty((2, 16), dtype), train)
        # rows of at least config.ROW_THREADS run a block per row (cuda_rows)
        wide = rng.normal(0, 3, (4, 2 * config.ROW_THREADS)).astype(dtype)
        for name in ("softmax", "log_softmax"):
            act = fastgd.activations[name]
            y = act.forward(wide, backend="cuda")
            act.backward(np.ones_like(wide), wide, backend="cuda")
            act.backward(np.ones_like(wide), y=y, backend="cuda")
        channels = np.full(4, 0.25, dtype)
        fastgd.prelu(wide.reshape(1, 4, -1), channels, backend="cuda")
        fastgd.prelu_backward(np.ones_like(wide).reshape(1, 4, -1), wide.reshape(1, 4, -1),
                              channels, backend="cuda")
        probs = np.full(wide.shape, 1.0 / wide.shape[1], dtype)
        labels = np.array([0, 1, 2, 3])
        for name, target, kw in (("cross_entropy", labels, {"label_smoothing": 0.1}),
                                 ("cross_entropy", probs, {}), ("mse", probs, {}),
                                 ("binary_cross_entropy_with_logits", probs, {}),
                                 ("binary_cross_entropy", probs, {}),
                                 ("nll_loss", labels, {}),
                                 ("nll_loss", labels, {"weight": np.ones(wide.shape[1]),
                                                       "ignore_index": 1})):
            reductions = ("mean", "none") if "weight" in kw else ("mean",)  # none: weigh
            for loss in (nn.get_loss(name, r, **kw) for r in reductions):
                given = probs if name == "binary_cross_entropy" else wide  # in [0, 1]
                loss.value_and_grad(given, target, backend="cuda")
                loss.value(given, target, backend="cuda")  # the loss alone: its own kernels
        F.dropout(be, x, 0.5, 1, 0, np.empty_like(x))
        F.add(be, x, x, np.empty_like(x))


def main(argv=None):
    """``[float32|float64]``: one dtype's kernels (the test compiles the two halves in
    parallel processes), both by default."""
    argv = sys.argv[1:] if argv is None else argv
    dtypes = tuple(np.dtype(a).type for a in argv) or (np.float32, np.float64)
    # device functions compile for the current device's compute capability: there is none
    cuda_dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)
    check = PtxCheck()
    backends = importlib.import_module("fastgd.backends")  # fastgd.backends is a function
    backends._REGISTRY["cuda"] = check
    backends._STATUS.pop("cuda", None)
    backends._READY.pop("cuda", None)
    losses.to_device = np.asarray  # the loss's scale stays a host array, as PtxCheck's are
    cuda_backend.to_device = np.asarray  # copy_into's host source, likewise
    run_everything(check, dtypes)
    print(f"{len(check.compiled)} CUDA kernels compiled to PTX for sm_{CC[0]}{CC[1]}")
    # float32 data computed in float64 runs at half the float32 rate or less on a GPU:
    # enough to make GELU's memory-bound kernel compute-bound (cuda_math)
    wide = {k: v for k, v in check.float64_ops.items() if v}
    print(f"{len(check.float64_ops)} float32 elementwise activation kernels, "
          f"{len(wide)} with float64 arithmetic{': ' if wide else ''}"
          + ", ".join(f"{k} ({v})" for k, v in wide.items()))
    return 1 if wide else 0


if __name__ == "__main__":
    sys.exit(main())
