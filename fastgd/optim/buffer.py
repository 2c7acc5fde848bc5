"""ParamBuffer: every parameter in one contiguous buffer, every gradient in another."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from fastgd._arrays import (
    FLOAT_DTYPES,
    dtype_of,
    flat_copy,
    is_device_array,
    is_int,
    shape_of,
    share_memory,
)
from fastgd.backends import resolve


class ParamBuffer:
    """Named parameters laid end to end in one flat buffer, their gradients in another.

    ``params[name]`` and ``grads[name]`` are views (of the given shapes) into
    ``flat_params`` and ``flat_grads``; write into them in place, with :meth:`assign` on
    any backend (``buf.params["w"][...] = init`` on the CPU only: CuPy refuses a NumPy
    array there): the mappings are read-only, since an array put in place of a view would
    be left out of every step. An optimizer built on a ParamBuffer updates every tensor
    with one kernel launch per step, whatever the number of tensors. Both buffers start at
    zero.

    >>> buf = ParamBuffer({"w": (784, 256), "b": (256,)}, dtype=np.float32)
    >>> buf.params["w"].shape, buf.size
    ((784, 256), 200960)
    """

    def __init__(self, shapes, dtype=np.float32, backend=None):
        if not isinstance(shapes, dict) or not shapes:
            raise ValueError("ParamBuffer needs a non-empty dict of name -> shape")
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"fastgd works on float32 and float64 arrays, got {self.dtype}")
        self.backend = resolve(backend)
        self.shapes, self.offsets = {}, {}
        offset = 0
        for name, shape in shapes.items():
            shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
            if any(not is_int(d) or d < 0 for d in shape):
                raise ValueError(f"shape of {name!r} must be non-negative ints, got {shape}")
            self.shapes[name] = tuple(int(d) for d in shape)
            self.offsets[name] = offset
            offset += math.prod(self.shapes[name])
        self.size = offset
        self.flat_params = self.backend.full(self.size, self.dtype)
        self.flat_grads = self.backend.full(self.size, self.dtype)
        self.params = MappingProxyType(self.views(self.flat_params))
        self.grads = MappingProxyType(self.views(self.flat_grads))

    def views(self, flat) -> dict:
        """Named views, shaped like the parameters, of any flat array laid out like this one."""
        return {
            name: flat[self.offsets[name]:self.offsets[name] + math.prod(shape)].reshape(shape)
            for name, shape in self.shapes.items()
        }

    def assign(self, params=None, grads=None) -> None:
        """Copy named arrays, host or device, each of its tensor's shape, into ``params``
        and ``grads`` (converted to the buffer's dtype); every name and shape is checked
        before anything is written."""
        pairs = []
        for label, values, views in (("params", params, self.params),
                                     ("grads", grads, self.grads)):
            for name, value in (values or {}).items():
                if not is_device_array(value):  # converted now: a failure writes nothing
                    if np.asarray(value).dtype.kind == "c":
                        raise TypeError(f"{label}[{name!r}] is complex")
                    value = np.asarray(value, dtype=self.dtype)
                elif dtype_of(value) not in FLOAT_DTYPES:
                    raise TypeError(f"{label}[{name!r}] is {dtype_of(value)}; fastgd works "
                                    f"on float32 and float64 arrays")
                if name not in views:
                    raise ValueError(f"ParamBuffer has no {name!r}; it holds "
                                     f"{list(self.shapes)}")
                if tuple(shape_of(value)) != self.shapes[name]:
                    raise ValueError(f"{label}[{name!r}] has shape {tuple(shape_of(value))}, "
                                     f"expected {self.shapes[name]}")
                pairs.append((views[name], value))
        be = self.backend
        for k, (view, value) in enumerate(pairs):
            if share_memory(value, self.flat_params) or share_memory(value, self.flat_grads):
                # a view of this buffer (a swap of two tensors): read before any is written
                pairs[k] = view, flat_copy(be, value, self.dtype)
        for view, value in pairs:
            be.copy_into(be.flat_view(view), value)

    def __repr__(self):
        return (f"<ParamBuffer {len(self.shapes)} tensors, {self.size} x {self.dtype} "
                f"on {self.backend.name}>")
