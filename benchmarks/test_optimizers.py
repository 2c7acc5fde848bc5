"""One optimizer step, per rule, backend and size (float32), and ParamBuffer layouts.

Each case is checked against the NumPy backend (one step from the same state) before it is
timed. ``extra_info``: op, direction ("step"), backend, dtype, n, layout, bytes (the streams
the rule must read and write: Adam 28 B/element in float32, SGD-momentum 20, plain SGD 12)
and gbps (bytes / best time). Peers: ``torch`` (``torch.optim``, ``fused=True`` where PyTorch
has a fused CPU kernel), and ``cuda`` where a GPU is present.

Sizes: ``FASTGD_BENCH_SIZES=1024,65536`` (comma list) overrides the default
2^10, 2^16, 2^20, 2^24; ``FASTGD_BENCH_BUFFER_N`` the total size of the 1,000-tensor layouts
(default 2^24).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastgd

SIZES = [int(s) for s in os.environ.get("FASTGD_BENCH_SIZES", "").split(",") if s] or [
    1 << 10, 1 << 16, 1 << 20, 1 << 24]
BUFFER_N = int(os.environ.get("FASTGD_BENCH_BUFFER_N", 1 << 24))
N_TENSORS = 1000

#: op -> (fastgd class, options, torch class name, torch options)
OPS = {
    "sgd": ("SGD", dict(lr=1e-3), "SGD", dict(fused=True)),
    "sgd_momentum": ("SGD", dict(lr=1e-3, momentum=0.9), "SGD", dict(fused=True)),
    "adagrad": ("Adagrad", dict(), "Adagrad", dict(fused=True)),
    "rmsprop": ("RMSprop", dict(), "RMSprop", dict()),
    "adam": ("Adam", dict(), "Adam", dict(fused=True)),
    "adam_amsgrad": ("Adam", dict(amsgrad=True), "Adam", dict(fused=True)),
    "adamw": ("AdamW", dict(), "AdamW", dict(fused=True)),
    "nadam": ("NAdam", dict(), "NAdam", dict()),
    "radam": ("RAdam", dict(), "RAdam", dict()),
    "adamax": ("Adamax", dict(), "Adamax", dict()),
    "lion": ("Lion", dict(), None, None),
}


def _available(name):
    return fastgd.backends().get(name, "").startswith("ok")


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


BACKENDS = ["numpy", "numba"] + (["cuda"] if _available("cuda") else []) + (
    ["torch"] if _torch() is not None else [])


def _sync(backend):
    if backend == "cuda":
        from numba import cuda

        cuda.synchronize()


def _problem(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"t{i}": rng.standard_normal(s, np.float32) for i, s in enumerate(sizes)}
    grads = {k: (rng.standard_normal(v.size, np.float32) * 1e-2) for k, v in params.items()}
    return params, grads


def _mixed_sizes(total, count, seed=1):
    """``count`` sizes from 1 to ~100·mean (log-uniform), summing exactly to ``total``."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(0, np.log(1000), count))
    sizes = 1 + (w / w.sum() * (total - count)).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()
    return [int(s) for s in sizes]


class Case:
    """A ready-to-time step: ``run()`` does one step (synchronized), ``params()`` reads back."""

    def __init__(self, op, backend, sizes, layout):
        name, options, torch_name, torch_options = OPS[op]
        self.params, self.grads = _problem(sizes)
        self.backend = backend
        if backend == "torch":
            if torch_name is None:
                pytest.skip(f"PyTorch has no {op}")
            torch = _torch()
            self.tp = [torch.from_numpy(v.copy()) for v in self.params.values()]
            for t, g in zip(self.tp, self.grads.values()):
                t.grad = torch.from_numpy(g)
            self.opt = getattr(torch.optim, torch_name)(self.tp, **options, **torch_options)
            ref = getattr(fastgd, name)({k: v.copy() for k, v in self.params.items()},
                                        backend="numpy", **options)
            self.nbytes = ref.bytes_per_step()
            self.run = self.opt.step
            self.read = lambda: {k: t.numpy() for k, t in zip(self.params, self.tp)}
            return
        cls = getattr(fastgd, name)
        dev = fastgd.to_device if backend == "cuda" else (lambda a: a)
        if layout == "buffer":
            buf = fastgd.ParamBuffer({k: v.shape for k, v in self.params.items()}, np.float32,
                                     backend=backend)
            for k in self.params:
                buf.params[k][...] = dev(self.params[k])
                buf.grads[k][...] = dev(self.grads[k])
            self.opt = cls(buf, **options)
            step = self.opt.step
            self.read = lambda: {k: fastgd.to_host(v) for k, v in buf.params.items()}
        else:
            p = {k: dev(v.copy()) for k, v in self.params.items()}
            g = {k: dev(v) for k, v in self.grads.items()}
            self.opt = cls(p, backend=backend, **options)
            step = lambda: self.opt.step(g)  # noqa: E731
            self.read = lambda: {k: fastgd.to_host(v) for k, v in p.items()}
        self.nbytes = self.opt.bytes_per_step()

        def run():
            step()
            _sync(backend)

        self.run = run


def check_against_numpy(case, op):
    """One step on ``case`` equals one step of the NumPy backend from the same start."""
    name, options = OPS[op][:2]
    p = {k: v.copy() for k, v in case.params.items()}
    getattr(fastgd, name)(p, backend="numpy", **options).step(case.grads)
    case.run()
    got = case.read()
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=f"{op} {k}")


def _record(benchmark, case, op, backend, n, layout):
    info = benchmark.extra_info
    info.update(op=op, direction="step", backend=backend, dtype="float32", n=n, layout=layout,
                tensors=len(case.params), bytes=case.nbytes)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.min > 0:
        info["gbps"] = case.nbytes / stats.stats.min / 1e9


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
def test_optimizer_step(benchmark, op, backend, dtype, n):
    case = Case(op, backend, [n], "tensor")
    check_against_numpy(case, op)
    case.run()  # warm: compiled, caches touched
    benchmark(case.run)
    _record(benchmark, case, op, backend, n, "tensor")


@pytest.mark.parametrize("layout", ["buffer", "tensors"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("op", ["adam", "sgd_momentum"])
def test_optimizer_layout(benchmark, op, backend, layout):
    """1,000 tensors of mixed sizes totalling BUFFER_N: one ParamBuffer launch, or one launch
    per tensor; compare with ``test_optimizer_step`` at n = BUFFER_N."""
    case = Case(op, backend, _mixed_sizes(BUFFER_N, N_TENSORS), layout)
    check_against_numpy(case, op)
    case.run()
    benchmark(case.run)
    _record(benchmark, case, op, backend, BUFFER_N, layout)
