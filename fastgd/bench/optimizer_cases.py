"""Benchmark cases for one optimizer step, per rule, implementation and tensor layout.

Each case's first two steps are checked against two steps of the NumPy backend from the same
start, by the change each parameter made (a wrong step is never timed). Bytes that must move
are the rule's own streams (``bytes_per_step``: Adam 28 B/element in float32, SGD-momentum
20, plain SGD 12). Peers:
``torch`` / ``torch-cuda`` (``torch.optim``, ``fused=True`` where PyTorch has a fused kernel).
Layouts: ``tensor`` (tensors stepped one launch each), ``buffer`` (one ``ParamBuffer``, one
launch).
"""

from __future__ import annotations

import numpy as np

import fastgd
from fastgd.bench import peers
from fastgd.bench.activation_cases import DEVICE
from fastgd.bench.bandwidth import gpu_available
from fastgd.bench.harness import Case

#: tensors in the layout benchmarks (mixed sizes, see :func:`mixed_sizes`)
N_TENSORS = 1000
#: Steps before the check: a kernel that drops its state passes one step, not two.
CHECKED_STEPS = 2

#: op -> (fastgd class, options, torch class name or None, extra torch options)
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


def _problem(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = {f"t{i}": rng.standard_normal(s, np.float32) for i, s in enumerate(sizes)}
    grads = {k: rng.standard_normal(v.size, np.float32) * np.float32(1e-2)
             for k, v in params.items()}
    return params, grads


def mixed_sizes(total, count, seed=1):
    """``count`` sizes, log-uniform over three decades, at least 1, summing to ``total``."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(0, np.log(1000), count))
    sizes = 1 + (w / w.sum() * (total - count)).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()
    return [int(s) for s in sizes]


def _concat(arrays, to_host):
    return np.concatenate([np.asarray(to_host(a)).reshape(-1) for a in arrays])


def make_case(op, impl, sizes, layout) -> Case:
    """One optimizer step of ``op`` on ``impl`` over tensors of ``sizes``, as a harness Case."""
    name, options, torch_name, torch_options = OPS[op]
    params, grads = _problem(sizes)

    def expected():  # two steps: the second reads the state the first wrote
        p = {k: v.copy() for k, v in params.items()}
        opt = getattr(fastgd, name)(p, backend="numpy", **options)
        for _ in range(CHECKED_STEPS):
            opt.step(grads)
        return _concat(p.values(), np.asarray)

    nbytes = getattr(fastgd, name)({k: v.copy() for k, v in params.items()}, backend="numpy",
                                   **options).bytes_per_step()
    # the layout benchmarks are their own rows in the report: "adam [buffer of 1000]"
    label = op if layout == "tensor" else f"{op} [{layout} of {len(sizes)}]"
    common = dict(op=label, direction="step", backend=impl, n=sum(sizes), bytes=nbytes,
                  expected=expected, checked_calls=CHECKED_STEPS, dtype="float32",
                  origin=_concat(params.values(), np.asarray),
                  device=DEVICE[impl],
                  extra={"layout": layout, "tensors": len(sizes)})
    if impl.startswith("torch"):
        torch = peers.torch()
        device = DEVICE[impl]
        tp = [peers.torch_tensor(v.copy(), device) for v in params.values()]
        for t, g in zip(tp, grads.values()):
            t.grad = peers.torch_tensor(g, device)
        if device == "gpu" and torch_name == "Adagrad":
            torch_options = {}  # PyTorch's fused Adagrad is CPU-only
        opt = getattr(torch.optim, torch_name)(tp, **options, **torch_options)
        return Case(call=lambda: (opt.step(), tp)[1], sync=peers.torch_sync(device), peer=True,
                    to_host=lambda ts: _concat(ts, peers.torch_to_host),
                    version=torch.__version__, **common)
    cls = getattr(fastgd, name)
    on_gpu = impl == "cuda"
    dev = fastgd.to_device if on_gpu else (lambda a: a)
    if layout == "buffer":
        buf = fastgd.ParamBuffer({k: v.shape for k, v in params.items()}, np.float32,
                                 backend=impl)
        buf.assign(params=params, grads=grads)
        opt = cls(buf, **options)
        call = lambda: (opt.step(), [buf.flat_params])[1]
    else:
        p = {k: dev(v.copy()) for k, v in params.items()}
        g = {k: dev(v) for k, v in grads.items()}
        opt = cls(p, backend=impl, **options)
        call = lambda: (opt.step(g), p.values())[1]
    sync = None
    if on_gpu:
        from numba import cuda

        sync = cuda.synchronize
    kernels = None
    if impl == "numba":  # the Numba dispatchers compile on their first call
        kernels = lambda: sum(len(s.launch.signatures) for s in opt._slots)
    return Case(call=call, sync=sync, to_host=lambda arrays: _concat(arrays, fastgd.to_host),
                kernels=kernels, version=fastgd.__version__, **common)


def ours() -> list[str]:
    """Our backends on this machine: the cuda one on a real GPU only."""
    return ["numpy", "numba"] + (["cuda"] if gpu_available() else [])


def implementations() -> list[str]:
    """Our backends and the PyTorch peers usable here."""
    return ours() + [p for p in peers.available() if p.startswith("torch")]
