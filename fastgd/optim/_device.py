"""Small array helpers that work on every backend (host NumPy arrays and device arrays)."""

from __future__ import annotations

import numpy as np

from fastgd.backends import to_device, to_host
from fastgd.optim import rules


def full(be, n: int, dtype, value: float = 0.0):
    """A flat array of ``n`` elements set to ``value``, on ``be``'s device."""
    dtype = np.dtype(dtype)
    if be.name != "cuda":
        return np.full(n, value, dtype)
    a = be.empty(n, dtype)
    be.map(rules.fill, [a], [a], scalars=(value,), compute=dtype)
    return a


def copy_into(be, dst, src) -> None:
    """Copy ``src`` (host or same-device array, same size) into the flat array ``dst``."""
    if be.name != "cuda":
        dst[...] = np.asarray(src).reshape(-1)
        return
    src = be.flat(to_device(np.ascontiguousarray(src) if isinstance(src, np.ndarray) else src))
    be.map(rules.copy, [src], [dst], compute=np.dtype(dst.dtype))


def host_copy(a) -> np.ndarray:
    """A NumPy copy of ``a`` (never a view of live state)."""
    return np.array(to_host(a), copy=True)
