"""The array contract shared by every op: dtypes, devices, shapes and ``out=``.

Nothing here imports Numba or CuPy: device arrays are recognised by protocol
(``__cuda_array_interface__``) or, for the CUDA simulator's fake arrays, by type name.
"""

from __future__ import annotations

import bisect
import itertools
import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_number(v) -> bool:
    """A real number given as a Python or NumPy scalar (``np.float32(0.1)`` from an array or a
    config file too); bools are not numbers here."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def is_int(v) -> bool:
    """An integer given as a Python or NumPy scalar; bools are not integers here."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_device_array(a) -> bool:
    """True for CuPy arrays, Numba device arrays, torch CUDA tensors and simulator arrays."""
    if type(a) is np.ndarray:  # the common case, first
        return False
    try:
        if hasattr(a, "__cuda_array_interface__"):
            return True
    except RuntimeError as e:  # torch: a CUDA tensor that requires grad exports no interface
        raise TypeError(f"{type(a).__name__} cannot share its memory through "
                        f"__cuda_array_interface__: {e} (t.detach() shares t's memory: an "
                        f"update of it updates t)") from None
    cls = type(a)
    return cls.__name__ == "FakeCUDAArray" and "simulator" in cls.__module__


def is_array(a) -> bool:
    """A host (NumPy) or device array, not a list, scalar or other object: what is computed
    in place or taken as is, where anything else would be a silent copy."""
    return isinstance(a, np.ndarray) or is_device_array(a)


def _is_torch_tensor(a) -> bool:
    """A torch tensor (Parameter included), known without importing torch."""
    return any(c.__module__.startswith("torch") and c.__name__ == "Tensor"
               for c in type(a).__mro__)


def not_an_array(label: str, a) -> TypeError:
    """The error for ``a``, which is to be updated in place but is no array (a copy of it
    would be updated instead); a torch CPU tensor gets the view to pass."""
    hint = ""
    if _is_torch_tensor(a):
        hint = " (a torch CPU tensor: pass t.detach().numpy(), which shares its memory)"
    return TypeError(f"{label} is not an array: {type(a).__name__}{hint}")


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
    """Host arrays, scalars and lists become plain NumPy arrays in native byte order (a
    big-endian float32 from a file is copied, as a non-contiguous input is; a subclass is
    seen as a plain array: np.matrix's ``*`` is a matrix product, and NumPy functions on a
    masked array refill its masked entries, in the NumPy backend's math); device arrays
    pass through."""
    if isinstance(a, np.ndarray):
        if type(a) is not np.ndarray:
            a = a.view(np.ndarray)
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    if is_device_array(a):
        return a
    if _is_torch_tensor(a) and a.requires_grad:  # on the CPU: torch's own error said less
        raise TypeError(f"a {type(a).__name__} that requires grad: pass t.detach(), which "
                        f"shares its memory")
    return as_array(np.asarray(a))


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
        listed = ", ".join(f"{n}: {d}" + (" (non-native byte order)" if d.kind == "f"
                                           and not d.isnative else "")
                           for n, d in bad.items())
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


def _layout(a):
    """(lowest byte, one past the highest byte, data pointer, strides) of a non-empty array's
    memory; a NumPy array for host arrays and the simulator's (which wrap one)."""
    if not isinstance(a, np.ndarray):
        cai = getattr(a, "__cuda_array_interface__", None)
        if cai is None:
            return _layout(a._ary)  # a CUDA simulator array
        shape, ptr = tuple(cai["shape"]), cai["data"][0]
        itemsize = np.dtype(cai["typestr"]).itemsize
        strides = cai.get("strides") or tuple(
            itemsize * math.prod(shape[k + 1:]) for k in range(len(shape)))
    else:
        shape, ptr, strides = a.shape, a.__array_interface__["data"][0], a.strides
        itemsize = a.itemsize
    lo = ptr + sum((d - 1) * s for d, s in zip(shape, strides) if s < 0)
    hi = ptr + sum((d - 1) * s for d, s in zip(shape, strides) if s > 0) + itemsize
    return lo, hi, ptr, tuple(s for d, s in zip(shape, strides) if d > 1)


# np.may_share_memory without its __array_function__ dispatch (half its cost on a small call)
_may_share_memory = getattr(np.may_share_memory, "_implementation", np.may_share_memory)


def overlap(a, b) -> str | None:
    """How two arrays of one shape and dtype share memory: ``"same"`` (element k of one is
    element k of the other: in place), ``"partial"`` (they overlap otherwise), or None."""
    if a is b:
        return "same"
    if type(a) is np.ndarray and type(b) is np.ndarray and not _may_share_memory(a, b):
        return None  # the common case, in C
    if size_of(a) == 0 or size_of(b) == 0:
        return None
    (lo, hi, pa, sa), (lo2, hi2, pb, sb) = _layout(a), _layout(b)
    if hi <= lo2 or hi2 <= lo:
        return None
    return "same" if pa == pb and sa == sb else "partial"


def out_overlap(out, ins) -> tuple[int | None, bool]:
    """``(alias, partial)`` for an output and its inputs: the index of the first input that
    ``out`` is element for element (in place), and whether ``out`` overlaps any input
    otherwise (see :func:`overlap`)."""
    alias, partial, host = None, False, type(out) is np.ndarray
    for k, a in enumerate(ins):
        if host and type(a) is np.ndarray and a is not out and not _may_share_memory(out, a):
            continue  # the common case, without a call
        shared = overlap(out, a)
        if shared == "same":
            alias = k if alias is None else alias
        elif shared is not None:
            partial = True
    return alias, partial


def share_memory(a, b) -> bool:
    """Whether the memory ranges of two arrays of any shapes (host or device) overlap; NumPy's
    bounds check in C for two host arrays, the hot case."""
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return bool(_may_share_memory(a, b))
    return overlap(a, b) is not None


def flat_copy(be, a, dtype):
    """A flat copy of ``a`` in ``dtype`` on backend ``be``: a value read before the memory it
    lies in is written (a gradient over its parameter, a swap inside a ParamBuffer)."""
    out = be.empty(size_of(a), dtype)
    be.copy_into(out, a)
    return out


def first_overlap(arrays) -> tuple[int, int] | None:
    """The indices of two of ``arrays`` whose memory ranges overlap, or None (sorted by
    start, so n log n for many arrays)."""
    spans = sorted((_layout(a)[:2], k) for k, a in enumerate(arrays) if size_of(a))
    for ((_, hi), k), ((lo, _), j) in zip(spans, spans[1:]):
        if lo < hi:
            return (k, j) if k < j else (j, k)
    return None


def _owner(a):
    """The object that owns a NumPy array's memory: the end of its ``base`` chain (through a
    memoryview to the buffer it shows, so two ``np.frombuffer`` of one bytearray agree)."""
    while True:
        if isinstance(a, np.ndarray):
            base = a.base
        elif isinstance(a, memoryview):
            base = a.obj
        else:
            return a
        if base is None:
            return a
        a = base


class Footprint:
    """The memory of a fixed set of arrays (an optimizer's parameters and state), to ask
    whether another array overlaps any of them: a NumPy array whose memory has another owner
    in a few attribute reads (the common case), else by byte ranges, sorted (log n)."""

    def __init__(self, arrays):
        arrays = [a for a in arrays if size_of(a)]
        owners = [_owner(a) for a in arrays if isinstance(a, np.ndarray)]
        self._owners = {id(o): o for o in owners}  # kept alive: their ids stay theirs
        spans = sorted(_layout(a)[:2] for a in arrays)
        self._starts = [lo for lo, _ in spans]
        self._ends = list(itertools.accumulate((hi for _, hi in spans), max))  # running max

    def overlaps(self, a) -> bool:
        if type(a) is np.ndarray and id(_owner(a)) not in self._owners:
            return False
        if not size_of(a):
            return False
        lo, hi = _layout(a)[:2]
        k = bisect.bisect_right(self._starts, lo)  # spans from k on start past lo
        return (k > 0 and self._ends[k - 1] > lo) or (k < len(self._starts)
                                                      and self._starts[k] < hi)


def check_out(out, shape, dtype, backend, name="out"):
    """Validate a caller's output array before anything is written (``ValueError``)."""
    if (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.writeable and backend.owns(out)):
        return  # the common case first: a writable NumPy array of the right shape and dtype
    if not is_array(out):
        raise ValueError(f"{name} must be an array, got {type(out).__name__}")
    if not backend.owns(out):
        where = "a device" if is_device_array(out) else "a host"
        raise ValueError(f"{name} is {where} array but the {backend.name} backend is computing")
    if shape_of(out) != tuple(shape):
        raise ValueError(f"{name} has shape {shape_of(out)}, expected {tuple(shape)}")
    if dtype_of(out) != dtype:
        raise ValueError(f"{name} has dtype {dtype_of(out)}, expected {dtype}")
    if not is_writable(out):
        raise ValueError(f"{name} is read-only")
