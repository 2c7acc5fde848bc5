"""The CUDA backend: scalar op math compiled into grid-stride ``numba.cuda`` kernels.

Takes any ``__cuda_array_interface__`` array (CuPy, Numba device arrays, torch CUDA tensors)
and returns CuPy arrays when CuPy is installed, Numba device arrays otherwise. Under the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run as Python, with NumPy math.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

from fastgd import config
from fastgd._arrays import as_array, is_device_array, shape_of
from fastgd._optional import hint, need
from fastgd.backends import codegen
from fastgd.backends.compiled import CompiledBackend
from fastgd.scalar import calls, specialize
from fastgd.scalar import fma as scalar_fma
from fastgd.scalar import fmax as scalar_fmax
from fastgd.scalar import mul_exp as scalar_mul_exp
from fastgd.scalar import normal_tail as scalar_normal_tail


def simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _cuda():
    """``numba.cuda``, or ``ImportError`` with the install hint."""
    return need("numba.cuda", "cuda", "the cuda backend")


def _cupy():
    """CuPy if it is installed and usable here (never under the simulator), else None."""
    if simulator_enabled():
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def simulator_math() -> dict:
    """NumPy versions of the device math: the simulator runs kernels as Python, where
    ``math.exp(1000.0)`` raises instead of returning inf."""
    return {
        "exp": np.exp,
        "expm1": np.expm1,
        "log": np.log,
        "log1p": np.log1p,
        "sqrt": np.sqrt,
        "tanh": np.tanh,
        "erf": math.erf,
        "erfc": math.erfc,
        "isfinite": np.isfinite,
        **PYTHON_MATH,
    }


#: Written in Python over ``math`` (scalar.py): compiled as device functions on a GPU (fma
#: excepted: the device has its own).
PYTHON_MATH = {"normal_tail": scalar_normal_tail, "mul_exp": scalar_mul_exp, "fma": scalar_fma,
               "fmax": scalar_fmax}
DEVICE_MATH = {n: getattr(math, n) for n in simulator_math() if n not in PYTHON_MATH}


@functools.cache
def device_math() -> dict:
    """What kernels call on a GPU: libdevice through ``math``, :data:`PYTHON_MATH` compiled
    once as device functions, and the device's own fma (``cuda_device``)."""
    cuda = _cuda()
    from fastgd.backends import cuda_device

    python = {n: cuda.jit(device=True)(f) for n, f in PYTHON_MATH.items() if n != "fma"}
    return {**DEVICE_MATH, **python, "fma": cuda_device.fma}


def device_name(device) -> str:
    """A numba-cuda device's name: bytes before numba-cuda 0.2x's cuda.core devices, str
    since (``.decode()`` on it made the backend report itself unavailable on a real GPU)."""
    name = device.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _fill(x, value):
    """``x ← value``: :meth:`CudaBackend.full`'s math."""
    return value


def _copy(x):
    """``y ← x``: :meth:`CudaBackend.copy_into`'s math."""
    return x


class CudaBackend(CompiledBackend):
    """Grid-stride CUDA kernels generated from the same scalar math as the CPU loops."""

    name = "cuda"
    transfer_hint = "fastgd.to_device"
    #: float32 kernels compute with cpu_math's float32 functions (cuda_math), to its accuracy
    float32_math_ulp = 1.3

    def status(self) -> str:
        try:
            cuda = _cuda()
        except ImportError as e:
            return f"unavailable: {e}"
        if simulator_enabled():
            return "ok (CUDA simulator)"
        try:
            if not cuda.is_available():
                return "unavailable: no CUDA driver or GPU found"
            return f"ok ({device_name(cuda.get_current_device())})"
        except Exception as e:  # driver errors come in many types
            return f"unavailable: {e}"

    # -- arrays -------------------------------------------------------------------------------
    def owns(self, a) -> bool:
        return is_device_array(a)

    def empty(self, shape, dtype):
        cupy = _cupy()
        if cupy is not None:
            return cupy.empty(shape, dtype)
        return _cuda().device_array(shape, dtype)

    def full(self, n: int, dtype, value: float = 0.0):
        """A flat device array of ``n`` elements set to ``value``, by a kernel (no CuPy
        needed)."""
        dtype = np.dtype(dtype)
        a = self.empty(n, dtype)
        self.map(_fill, [a], [a], scalars=(value,), compute=dtype)
        return a

    def copy_into(self, dst, src) -> None:
        """Copy ``src`` (a host array or a device array, of the same size) into the flat
        device array ``dst``, by a kernel (no CuPy needed)."""
        if isinstance(src, np.ndarray):
            src = to_device(np.ascontiguousarray(src))
        self.map(_copy, [self.flat(src)], [dst], compute=np.dtype(dst.dtype))

    def _is_contiguous(self, a) -> bool:
        cai = getattr(a, "__cuda_array_interface__", None)
        if cai is None:  # simulator array
            return a.is_c_contiguous()
        strides = cai.get("strides")
        if strides is None:
            return True
        expected, step = [], np.dtype(cai["typestr"]).itemsize
        for dim in reversed(cai["shape"]):
            expected.append(step)
            step *= dim
        return all(s == e for s, e, d in zip(strides, reversed(expected), cai["shape"]) if d > 1)

    @staticmethod
    def native(a):
        """CuPy, Numba and simulator device arrays as they are; any other
        ``__cuda_array_interface__`` object (a torch CUDA tensor) as a Numba view of the same
        memory, so that the backend can read ``.size`` and ``.dtype`` as NumPy's (a tensor's
        ``.size`` is a method: optimizers and clipping on tensors failed there)."""
        if type(a).__module__.split(".")[0] in ("cupy", "numba", "numba_cuda"):
            return a
        return _cuda().as_cuda_array(a)

    def contiguous(self, a):
        if self._is_contiguous(a):
            return self.native(a)
        cupy = _cupy()
        if cupy is not None:
            return cupy.ascontiguousarray(cupy.asarray(a))
        raise ValueError(f"non-contiguous device arrays need CuPy to be copied: {hint('cuda')}")

    def flat(self, a):
        return self.contiguous(a).reshape(-1)

    def flat_view(self, a):
        return self.flat(a) if self._is_contiguous(a) else None

    def as_shape(self, a, shape):
        return self.flat(a).reshape(shape)

    # -- kernels ------------------------------------------------------------------------------
    def bindings(self, compute):
        from fastgd.backends import cuda_math

        if simulator_enabled():
            funcs = simulator_math()
            float32 = cuda_math.simulator_functions
        else:
            funcs = dict(device_math())
            float32 = cuda_math.device_functions
        if compute == np.float32:  # cpu_math's float32 kernels, not libdevice's
            funcs.update(float32())
        return {"F": compute.type, "W": np.float64, **funcs}

    def loop_for(self, n, fn=None, nbytes=0):
        return "cuda"

    def rows_loop(self, fn, a, strided):
        """One block per row (``cuda_rows``) for a row function that loops with ``lanes``,
        along rows of at least ``config.ROW_THREADS`` elements; else one thread per row or
        line. Lines ``a[o, :, i]`` are coalesced with a thread each (neighbouring threads,
        neighbouring ``i``) and keep it where there are ``config.LINES_PER_THREAD`` of them
        or more; fewer would leave most of a GPU idle (nn's column sums: one per feature)."""
        threads_suffice = strided and a.shape[0] * a.shape[2] >= config.LINES_PER_THREAD
        if not threads_suffice and a.shape[1] >= config.ROW_THREADS and calls(fn, ("lanes",)):
            return "cuda_rows"
        return "cuda"

    def compile(self, source, fn, compute, loop, span=None):
        cuda = _cuda()
        device_jit = cuda.jit(device=True)
        bindings = self.bindings(compute)
        if loop == "cuda_rows":
            from fastgd.backends import cuda_rows

            bindings.update(cuda_rows.functions(simulator_enabled(), bindings["fmax"]))
        scalar_fn = device_jit(specialize(fn, bindings, device_jit))
        namespace = {"fn": scalar_fn, "C": compute.type, "cuda": cuda}
        kernel = cuda.jit(codegen.build(source, namespace))
        kernel.fastgd_block_per_row = loop == "cuda_rows"
        return kernel

    def launch(self, kernel, n, args):
        """``n`` threads' work: elements, or rows where the kernel runs a block per row."""
        if getattr(kernel, "fastgd_block_per_row", False):
            from fastgd.backends.cuda_rows import SHARED_BYTES

            tpb = config.ROW_THREADS
            if tpb < 1 or tpb & (tpb - 1) or tpb > 256:
                raise ValueError(f"config.ROW_THREADS must be a power of two (the rows' tree "
                                 f"sums and maxima halve it) up to 256 (the cross-entropy "
                                 f"rows take 96 registers a thread: 1024 threads would "
                                 f"pass a block's 64K), not {tpb}")
            launch = kernel[max(1, min(n, config.MAX_BLOCKS)), tpb, 0, SHARED_BYTES * tpb]
        else:
            tpb = config.THREADS_PER_BLOCK
            launch = kernel[max(1, min((n + tpb - 1) // tpb, config.MAX_BLOCKS)), tpb]
        with np.errstate(all="ignore"):  # the simulator computes with NumPy scalars
            launch(*args)


def to_device(a):
    """Copy a host array to the GPU, C-contiguous: a CuPy array if CuPy is installed, else a
    Numba one (``fastgd.to_device`` checks first that the backend can run)."""
    if is_device_array(a):
        return a
    a = as_array(a)  # native byte order: a big-endian float32 from a file is copied
    host = np.ascontiguousarray(a).reshape(a.shape)  # C order, as every kernel's (0-d stays 0-d)
    cupy = _cupy()
    return _cuda().to_device(host) if cupy is None else cupy.asarray(host)


def to_host(a):
    """Copy a device array (CuPy, Numba, torch, any CUDA array interface) to a NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if not is_device_array(a):
        return as_array(a)  # a torch tensor that requires grad: fastgd's TypeError
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return _cuda().as_cuda_array(a).copy_to_host().reshape(shape_of(a))
