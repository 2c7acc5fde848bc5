"""Benchmark cases for every activation, forward and backward, on every implementation.

An implementation is one of our backends (``numpy``, ``numba``, ``cuda``) or a peer
(``torch``, ``numpy-plain``, ``torch-cuda``, ``cupy``, ``cupy-kernel``, see
:mod:`fastgd.bench.peers`).
Each case computes into a preallocated output, and is checked against the NumPy backend
(on a sample of rows above ``CHECK_ALL`` elements, so the reference stays cheap).

Shapes: elementwise ops run on a flat array of n elements; softmax and log_softmax on rows
of ``ROW`` elements; prelu on ``(batch, 16 channels, length)`` with one slope per channel.
Directions: ``forward``; ``backward`` from dy and x (softmax and log_softmax: from dy and
y); ``backward_y`` from dy and the forward output y, for the elementwise ops whose derivative
is a function of y (sigmoid, tanh, relu, ...: what PyTorch's autograd saves for them).
Bytes that must move: forward reads x and writes y (2·n·itemsize); a backward reads dy and x
(or y) and writes dx (3·n·itemsize).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fastgd.bench import peers
from fastgd.bench.bandwidth import gpu_available
from fastgd.bench.harness import Case

#: Default sizes (float32 elements); GPU implementations also get ``GPU_SIZES``.
SIZES = (1 << 10, 1 << 16, 1 << 20, 1 << 24)
GPU_SIZES = (1 << 26, 1 << 28)
QUICK_SIZES = (1 << 10, 1 << 16, 1 << 20)
#: Largest size per device: sizes up to 2^28 only on a GPU.
MAX_N = {"cpu": 1 << 26, "gpu": 1 << 28}

ROW = 256
CHANNELS = 16
CHECK_ALL = 1 << 20
CHECK_SAMPLE = 1 << 16  # about this many elements are checked above CHECK_ALL
DIRECTIONS = ("forward", "backward", "backward_y")
QUICK_DIRECTIONS = ("forward", "backward")  # the 2-minute budget of ``fastgd bench --quick``
OURS = ("numpy", "numba", "cuda")
DEVICE = {"numpy": "cpu", "numba": "cpu", "cuda": "gpu", "torch": "cpu", "torch-cuda": "gpu",
          "cupy": "gpu", "cupy-kernel": "gpu", "numpy-plain": "cpu"}
ROW_OPS = ("softmax", "log_softmax")


#: Benchmark names for an activation with non-default parameters: name -> (op, form).
VARIANTS = {"gelu_tanh": ("gelu", "tanh")}


def ops() -> list[str]:
    import fastgd

    return list(fastgd.activations) + list(VARIANTS)


def activation(op: str):
    """The activation object a benchmark name stands for (a variant's own form)."""
    import fastgd

    if op in VARIANTS:
        base, form = VARIANTS[op]
        return fastgd.activations[base].forms[form]
    act = fastgd.activations[op]
    return act.forms["none"] if op == "gelu" else act


def implementations() -> list[str]:
    """Our backends and the peers usable on this machine, CPU first."""
    names = ["numpy", "numba"]
    if gpu_available():
        names.append("cuda")
    return names + peers.available()


def shape_for(op: str, n: int) -> tuple:
    """The array shape an op is benchmarked on at (about) n elements."""
    if op in ROW_OPS:
        return (max(1, n // ROW), min(n, ROW))
    if op == "prelu":
        length = min(256, max(1, n // CHANNELS))
        return (max(1, n // (CHANNELS * length)), CHANNELS, length)
    return (n,)


def bytes_moved(direction: str, n: int, itemsize: int = 4) -> int:
    return (2 if direction == "forward" else 3) * n * itemsize


@functools.lru_cache(maxsize=16)
def inputs(shape: tuple, dtype: str = "float32") -> dict:
    """Host inputs for one shape: x (scaled so the tails are exercised), dy and prelu
    slopes w; :func:`_host_arrays` adds y = op(x) for the backwards (prelu's excepted)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    w = rng.uniform(0.05, 0.3, CHANNELS).astype(dtype)
    return {"x": x, "dy": dy, "w": w}


@functools.lru_cache(maxsize=2)
def _forward_output(op, shape, dtype):
    """y = op(x), an input of the backwards from y (softmax-like and sigmoid/tanh peers compute
    dx from it): by the NumPy backend up to ``CHECK_ALL`` elements, above by the Numba one,
    within the accuracy contract and fast at 2^28, where the NumPy backend took seconds per
    op (not for small cases: a Numba compile there, while the sweep is collected, was
    missing from the forward's first-call figure)."""
    big = int(np.prod(shape)) > CHECK_ALL
    return activation(op).forward(inputs(shape, dtype)["x"], backend="numba" if big else "numpy")


def _host_arrays(op, direction, shape, dtype):
    """The inputs of a case (cached per shape, so every op and direction at a size shares
    them: the cases run op by op, direction by direction, size by size)."""
    arrays = dict(inputs(shape, dtype))
    if direction.startswith("backward") and op != "prelu":
        arrays["y"] = _forward_output(op, shape, dtype)
    return arrays


def _sample_rows(shape) -> np.ndarray | None:
    """Indices along axis 0 that the check compares (None: compare everything)."""
    n = int(np.prod(shape))
    if n <= CHECK_ALL:
        return None
    per_row = n // shape[0]
    k = min(shape[0], max(2, CHECK_SAMPLE // per_row))
    rows = np.random.default_rng(1).choice(shape[0], size=k, replace=False)
    # and the rows around every 1/256 of the array, where parallel loops split their work
    edges = np.linspace(0, shape[0] - 1, 257).astype(np.int64)
    near = np.clip(np.concatenate([edges - 1, edges, edges + 1]), 0, shape[0] - 1)
    return np.unique(np.concatenate([rows, near]))


@functools.lru_cache(maxsize=2)
def _expected(op, direction, shape, dtype):
    rows = _sample_rows(shape)
    return reference(op, direction, _host_arrays(op, direction, shape, dtype), rows)


def reference(op, direction, arrays, rows=None):
    """The NumPy backend's result for these host arrays (only ``rows`` along axis 0)."""
    if rows is not None:  # (prelu's slopes w are per channel: all of them)
        arrays = {k: v if k == "w" else v[rows] for k, v in arrays.items()}
    return _ours(op, direction, "numpy", arrays, None)()


def _ours(op, direction, name, a, out):
    """A call of our public API on backend ``name`` with arrays ``a`` into ``out``."""
    act = activation(op)
    if op == "prelu":
        if direction == "forward":
            return lambda: act.forward(a["x"], a["w"], out=out, backend=name)
        return lambda: act.backward(a["dy"], a["x"], a["w"], out=out, backend=name)[0]
    if direction == "forward":
        return lambda: act.forward(a["x"], out=out, backend=name)
    if op in ROW_OPS or direction == "backward_y":
        return lambda: act.backward(a["dy"], y=a["y"], out=out, backend=name)
    return lambda: act.backward(a["dy"], a["x"], out=out, backend=name)


def _cupy_expression(op, direction, a):
    """The NumPy reference's own expressions, run by CuPy on device arrays, the result in
    the inputs' dtype (some of them compute float32 in float64)."""
    call = _reference_call(op, direction, a)
    dtype = a["x"].dtype
    return lambda: call().astype(dtype, copy=False)


def _reference_call(op, direction, a):
    act = activation(op)
    params = tuple(act.params.values()) if op not in ROW_OPS else (-1,)
    if op == "prelu":
        if direction == "forward":
            return lambda: act.reference_forward(a["x"], a["w"])
        return lambda: act.reference_backward(a["dy"], a["x"], a["w"])[0]
    if direction == "forward":
        return lambda: act.reference_forward(a["x"], *params)
    if op in ROW_OPS:
        return lambda: act.reference_backward(a["dy"], a["y"], *params)
    if direction == "backward_y":
        from_y = act.math["backward_from_output"][1]
        return lambda: from_y(a["dy"], a["y"], *params)
    return lambda: act.reference_backward(a["dy"], a["x"], *params)


def _unwritten(shape, dtype):
    """An output array of NaN: memory from ``np.empty`` can be a freed array of the same
    size holding the right answer (the NumPy case's), where a kernel that skipped elements
    then passed the gate."""
    return np.full(shape, np.nan, dtype)


def _compiled(be) -> int:
    """How many kernels, and compiled signatures of them, ``be`` holds: a first call that
    adds either compiled (a float64 call of a float32 kernel adds a signature only)."""
    return sum(1 + len(getattr(k, "overloads", ())) for k in be._kernels.values())


def _build(op, direction, impl, host, out_shape, dtype):
    """(call, sync, to_host, kernels, version) of one implementation on host arrays."""
    import fastgd

    if impl in OURS:
        be = fastgd.get_backend(impl)
        if impl == "cuda":
            from numba import cuda

            a = {k: fastgd.to_device(v) for k, v in host.items()}
            out = be.empty(out_shape, dtype)
            if hasattr(out, "fill"):  # CuPy: on the device (a host copy is 1 GiB at 2^28)
                out.fill(np.nan)
            else:  # a Numba device array (no CuPy)
                out.copy_to_device(_unwritten(out_shape, dtype))
            sync, to_host = cuda.synchronize, fastgd.to_host
        else:
            a, out, sync, to_host = host, _unwritten(out_shape, dtype), None, np.asarray
        kernels = (lambda: _compiled(be)) if hasattr(be, "_kernels") else None
        version = fastgd.__version__
        return _ours(op, direction, impl, a, out), sync, to_host, kernels, version
    if impl in ("torch", "torch-cuda"):
        device = DEVICE[impl]
        t = {k: peers.torch_tensor(v, device) for k, v in host.items()}
        o = peers.torch_unwritten(out_shape, dtype, device)
        if direction == "forward":
            fn = peers.TORCH_FORWARD[op]
            call = lambda: fn(t["x"], o, t["w"])
        else:
            fn = (peers.TORCH_BACKWARD_Y if direction == "backward_y" else peers.TORCH_BACKWARD)[op]
            call = lambda: fn(t["dy"], t["x"], t.get("y"), o, t["w"])
        version = peers.torch().__version__
        return call, peers.torch_sync(device), peers.torch_to_host, None, version
    if impl == "numpy-plain":
        return peers.numpy_call(direction, op, host), None, np.asarray, None, np.__version__
    cp = peers.cupy()
    a = {k: cp.asarray(v) for k, v in host.items()}
    if impl == "cupy":
        call = _cupy_expression(op, direction, a)
    else:
        kernel, out = peers.cupy_kernel(op), cp.full(out_shape, cp.nan, dtype)  # _unwritten
        call = lambda: kernel(a["x"], out)
    return call, peers.cupy_sync(), cp.asnumpy, None, cp.__version__


def make_case(op: str, direction: str, impl: str, n: int, dtype: str = "float32") -> Case:
    """The benchmark case of ``op`` in ``direction`` on implementation ``impl`` at n."""
    shape = shape_for(op, n)
    host = _host_arrays(op, direction, shape, dtype)
    call, sync, to_host, kernels, version = _build(op, direction, impl, host, shape, dtype)
    rows = _sample_rows(shape)
    size = int(np.prod(shape))
    return Case(
        op=op, direction=direction, backend=impl, n=size, dtype=dtype, device=DEVICE[impl],
        bytes=bytes_moved(direction, size, np.dtype(dtype).itemsize), call=call,
        expected=lambda: _expected(op, direction, shape, dtype),
        sample=None if rows is None else (lambda r: r[rows]),
        sync=sync, to_host=to_host, kernels=kernels, version=version, peer=impl not in OURS,
        inputs=tuple(host.values()) if DEVICE[impl] == "cpu" else (),  # (GPU: copies)
    )


@functools.cache
def supports(impl: str, op: str, direction: str) -> bool:
    """Whether ``impl`` has ``op`` in ``direction`` (peers: a trial call on a tiny array)."""
    if direction == "backward_y" and (op in ROW_OPS or not activation(op).takes_output):
        return False  # softmax's "backward" is already from y
    if impl in OURS:
        return True
    if impl == "cupy-kernel" and (direction != "forward" or op not in peers.CUPY_KERNELS):
        return False
    try:
        make_case(op, direction, impl, 1 << 10).timed()
    except Exception:
        return False
    return True


def _distinct_sizes(op, sizes) -> list:
    """``sizes`` less those that give ``op`` the shape of an earlier one (softmax's rows
    of 256: 256 and 300 elements are one case, whose two results a report would mix)."""
    seen, out = set(), []
    for n in sizes:
        size = math.prod(shape_for(op, n))
        if size not in seen:
            seen.add(size)
            out.append(n)
    return out


def params(ops_=None, impls=None, sizes=None, quick=False) -> list[tuple]:
    """``(op, direction, impl, n)`` for every case to run, ordered so each op and size is
    checked against one cached reference; GPU implementations also get the GPU sizes.
    ``quick`` runs the :data:`QUICK_DIRECTIONS` only."""
    ops_ = ops() if ops_ is None else ops_
    available = implementations()
    impls = available if impls is None else [i for i in available if i in impls]
    default = sizes is None
    if default:
        sizes = list(QUICK_SIZES if quick else SIZES)
        if not quick and any(DEVICE[i] == "gpu" for i in impls):
            sizes += GPU_SIZES
    out = []
    for op in ops_:
        for direction in QUICK_DIRECTIONS if quick else DIRECTIONS:
            for n in _distinct_sizes(op, sizes):
                for impl in impls:
                    device = DEVICE[impl]
                    limit = SIZES[-1] if default and device == "cpu" else MAX_N[device]
                    if n <= limit and supports(impl, op, direction):
                        out.append((op, direction, impl, n))
    return out
