"""Bandwidth probe: the memory roof every kernel is held against.

Two stream-like loops per device, measured in the same process as the benchmarks:

* ``copy``: ``b[i] = a[i]``, moving 2·n·itemsize bytes (read a, write b);
* ``inplace``: ``a[i] = a[i]·s``, moving 2·n·itemsize bytes (read and write a).

On the CPU they are parallel Numba loops; on a GPU, Numba CUDA kernels (plus CuPy's own copy
when CuPy is installed) and the host↔device copy speed. Each figure is the best of several
repeats: GB/s = bytes that must move / best time. The roof of a device is the highest figure.
"""

from __future__ import annotations

import time

import numpy as np

#: Probe size: 2^25 float32 (128 MiB an array), beyond the caches (a 2^24 in-place probe
#: measured 55 GB/s from a large L3 on a 2-core VM).
PROBE_N = 1 << 25

_KERNELS: dict = {}
_MEASURED: dict = {}


def _best(fn, repeats: int, sync=None, per_round: int = 1) -> float:
    """The best time of one call of ``fn`` over ``repeats`` rounds of ``per_round`` calls
    (then ``sync``): on a GPU several launches a round, so that the launch and the wait for
    it, ~10-20 µs, do not count against a copy of a few hundred µs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        if sync is not None:
            sync()
        best = min(best, (time.perf_counter() - start) / per_round)
    return best


def cpu_kernels():
    """(copy, inplace) parallel Numba loops, compiled once."""
    if "cpu" not in _KERNELS:
        import numba

        @numba.njit(parallel=True, nogil=True)
        def copy(a, b):
            for i in numba.prange(a.size):
                b[i] = a[i]

        @numba.njit(parallel=True, nogil=True)
        def inplace(a, s):
            for i in numba.prange(a.size):
                a[i] = a[i] * s

        _KERNELS["cpu"] = (copy, inplace)
    return _KERNELS["cpu"]


def gpu_kernels():
    """(copy, inplace) grid-stride Numba CUDA kernels (:mod:`fastgd.bench._gpu_probe`)."""
    from fastgd.bench import _gpu_probe

    return _gpu_probe.copy, _gpu_probe.inplace


def gpu_available() -> bool:
    """A real GPU the cuda backend can use (never the CUDA simulator)."""
    from fastgd.backends import backends
    from fastgd.backends.cuda_backend import simulator_enabled

    return backends()["cuda"].startswith("ok") and not simulator_enabled()


def probe_cpu(n: int = PROBE_N, repeats: int = 5) -> dict:
    """CPU copy and in-place GB/s (float32, parallel Numba loops)."""
    copy, inplace = cpu_kernels()
    a = np.ones(n, np.float32)
    b = np.empty_like(a)
    s = np.float32(1.0)
    copy(a[:16], b[:16]), inplace(b[:16], s)  # compile
    moved = 2 * a.nbytes
    return {
        "copy": moved / _best(lambda: copy(a, b), repeats) / 1e9,
        "inplace": moved / _best(lambda: inplace(a, s), repeats) / 1e9,
        "n": n,
    }


def probe_gpu(n: int = 1 << 26, repeats: int = 10) -> dict:
    """GPU copy and in-place GB/s (Numba CUDA kernels, and CuPy's copy when installed), and
    host↔device copy GB/s (``h2d``, ``d2h``)."""
    from numba import cuda

    from fastgd import config

    copy, inplace = gpu_kernels()
    host = np.ones(n, np.float32)
    a = cuda.to_device(host)
    b = cuda.device_array_like(a)
    s = np.float32(1.0)
    tpb = config.THREADS_PER_BLOCK
    blocks = min((n + tpb - 1) // tpb, config.MAX_BLOCKS)
    sync = cuda.synchronize
    copy[blocks, tpb](a, b), inplace[blocks, tpb](b, s)
    sync()
    moved = 2 * host.nbytes
    result = {
        "copy": moved / _best(lambda: copy[blocks, tpb](a, b), repeats, sync, 10) / 1e9,
        "inplace": moved / _best(lambda: inplace[blocks, tpb](a, s), repeats, sync, 10) / 1e9,
        "h2d": host.nbytes / _best(lambda: a.copy_to_device(host), 3, sync) / 1e9,
        "d2h": host.nbytes / _best(lambda: a.copy_to_host(host), 3, sync) / 1e9,
        "n": n,
    }
    try:
        import cupy
    except ImportError:
        return result
    ca, cb = cupy.asarray(host), cupy.empty(n, cupy.float32)
    csync = cupy.cuda.Device().synchronize
    cupy.copyto(cb, ca)
    result["cupy_copy"] = moved / _best(lambda: cupy.copyto(cb, ca), repeats, csync, 10) / 1e9
    return result


def measure(quick: bool = False) -> dict:
    """``{"cpu": {...}, "gpu": {...}}`` GB/s figures, measured once per process (``quick``:
    fewer repeats)."""
    if not _MEASURED:
        _MEASURED["cpu"] = probe_cpu(PROBE_N, 3 if quick else 5)
        if gpu_available():
            _MEASURED["gpu"] = probe_gpu()
    return dict(_MEASURED)


def roof(figures: dict | None) -> float | None:
    """The roof of one device: its highest on-device GB/s figure (transfers excluded)."""
    if not figures:
        return None
    values = [v for k, v in figures.items() if k not in ("n", "h2d", "d2h")]
    return max(values) if values else None
