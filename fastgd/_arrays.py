"""The array contract shared by every op: dtypes, devices, shapes and ``out=``.

Nothing here imports Numba or CuPy: device arrays are recognised by protocol
(``__cuda_array_interface__``) or, for the CUDA simulator's fake arrays, by type name.
"""

from __future__ import annotations

import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_device_array(a) -> bool:
    """True for CuPy arrays, Numba device arrays, torch CUDA tensors and simulator arrays."""
    if type(a) is np.ndarray:  # the common case, first
        return False
    if hasattr(a, "__cuda_array_interface__"):
        return True
    cls = type(a)
    return cls.__name__ == "FakeCUDAArray" and "simulator" in cls.__module__


def dtype_of(a) -> np.dtype:
    """The NumPy dtype of a host or device array (torch tensors included)."""
    if isinstance(a, np.ndarray):
        return a.dtype
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return np.dtype(cai["typestr"])
    return np.dtype(a.dtype)


def shape_of(a) -> tuple:
    if type(a) is np.ndarray:
        return a.shape
    cai = getattr(a, "__cuda_array_interface__", None)
    return tuple(cai["shape"]) if cai is not None else tuple(a.shape)


def as_array(a):
    """Host arrays, scalars and lists become NumPy arrays; device arrays pass through."""
    return a if isinstance(a, np.ndarray) or is_device_array(a) else np.asarray(a)


def check_float(**arrays) -> np.dtype:
    """The common float dtype of ``arrays`` (name -> array); ``TypeError`` naming the dtypes."""
    first = None
    for a in arrays.values():  # the common case, without building the messages' dict
        dtype = a.dtype if type(a) is np.ndarray else dtype_of(a)
        if first is None and dtype in FLOAT_DTYPES:
            first = dtype
        elif dtype != first:
            break
    else:
        return first
    dtypes = {n: dtype_of(a) for n, a in arrays.items()}
    bad = {n: d for n, d in dtypes.items() if d not in FLOAT_DTYPES}
    if bad:
        listed = ", ".join(f"{n}: {d}" for n, d in bad.items())
        raise TypeError(f"fastgd works on float32 and float64 arrays, got {listed}")
    listed = ", ".join(f"{n}: {d}" for n, d in dtypes.items())
    raise TypeError(f"mixed dtypes are not supported: {listed}")


def check_same_shape(**arrays) -> tuple:
    first = None
    for a in arrays.values():
        shape = a.shape if type(a) is np.ndarray else shape_of(a)
        if first is None:
            first = shape
        elif shape != first:
            listed = ", ".join(f"{n}: {shape_of(a)}" for n, a in arrays.items())
            raise ValueError(f"shapes do not match: {listed}")
    return first


def size_of(a) -> int:
    return a.size if type(a) is np.ndarray else math.prod(shape_of(a))


def is_writable(a) -> bool:
    flags = getattr(a, "flags", None)
    if isinstance(a, np.ndarray):
        return bool(flags.writeable)
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return not cai["data"][1]  # (pointer, read_only)
    return True


def check_out(out, shape, dtype, backend, name="out"):
    """Validate a caller's output array before anything is written (``ValueError``)."""
    if (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.writeable and backend.owns(out)):
        return  # the common case first: a writable NumPy array of the right shape and dtype
    if not backend.owns(out):
        where = "a device" if is_device_array(out) else "a host"
        raise ValueError(f"{name} is {where} array but the {backend.name} backend is computing")
    if shape_of(out) != tuple(shape):
        raise ValueError(f"{name} has shape {shape_of(out)}, expected {tuple(shape)}")
    if dtype_of(out) != dtype:
        raise ValueError(f"{name} has dtype {dtype_of(out)}, expected {dtype}")
    if not is_writable(out):
        raise ValueError(f"{name} is read-only")
