"""The NumPy backend: runs each op's independent NumPy reference. Also the host-array helpers."""

from __future__ import annotations

import numpy as np


class HostArrays:
    """Array helpers for backends whose arrays are NumPy arrays in host memory."""

    xp = np
    transfer_hint = "fastgd.to_host"

    def owns(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def full(self, n: int, dtype, value: float = 0.0):
        """A flat array of ``n`` elements set to ``value``."""
        return np.full(n, value, dtype)

    def copy_into(self, dst, src) -> None:
        """Copy ``src`` (a host array of the same size) into the flat array ``dst``."""
        dst[...] = np.asarray(src).reshape(-1)

    def contiguous(self, a):
        """``a`` C-contiguous, of its own shape (np.ascontiguousarray makes 0-d arrays 1-d)."""
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)

    def flat(self, a):
        """A flat C-ordered view of ``a`` (a copy only if ``a`` is not contiguous)."""
        return a.ravel() if type(a) is np.ndarray else np.ascontiguousarray(a).reshape(-1)

    def flat_view(self, a):
        """A flat view that writes through to ``a``, or None when no such view exists."""
        if not a.flags.c_contiguous:
            return None
        # a subclass's reshape may keep 2 dimensions (np.matrix: (1, n)), which a flat kernel
        # indexed as rows, past the end
        return (a if type(a) is np.ndarray else np.asarray(a)).reshape(-1)

    def as_shape(self, a, shape):
        """``a`` as a C-contiguous array of ``shape`` (of its size): ``a`` itself where it
        is one (a 2-D row op's usual input), else a view of :meth:`flat`."""
        if type(a) is np.ndarray and a.shape == shape and a.flags.c_contiguous:
            return a
        return self.flat(a).reshape(shape)


class NumpyBackend(HostArrays):
    """Plain vectorized NumPy: the reference every compiled kernel is tested against."""

    name = "numpy"

    def status(self) -> str:
        return f"ok (numpy {np.__version__})"
