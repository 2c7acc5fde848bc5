"""Gradient norms and clipping: one reduction pass, NaN/inf detected on the way."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fastgd import _arrays
from fastgd.backends import resolve, to_host
from fastgd.optim import rules

#: Elements per row of the reduction. Each row's partial sum is one Numba task on the CPU and
#: one block of threads on CUDA (backends/cuda_rows: coalesced); the partial sums, one per
#: row, come back to the host (2^26 elements: 16384 of them, 128 KiB).
CHUNK = 4096


#: Host arrays up to this many elements are summed by NumPy (the numpy backend's code): a
#: kernel launch costs ~7 µs of Python, which 200 small tensors paid 200 times over.
SMALL = 1 << 14


#: The scale of :func:`global_norm`'s second pass: squares of float64 gradients from ~1e154
#: overflow, those of 2^-600 times them do not (nor their sum, up to 2^250 elements).
RESCALE = 2.0 ** -600


def global_norm(be, flats, clip: float = math.inf, strict: bool = False) -> float:
    """The L2 norm of flat gradients ``flats`` clamped to ±clip, in float64: NaN or inf
    where :func:`sum_of_squares` says an element is; finite where every element is, also
    where the squares overflow (float64 gradients from ~1e154: a second pass at
    :data:`RESCALE`; torch's norm is inf there, and skip_nonfinite skipped the step)."""
    total = sum_of_squares(be, flats, clip, strict)
    if total == math.inf:
        scaled = sum_of_squares(be, flats, clip, strict, RESCALE)
        if scaled < math.inf:
            return math.sqrt(scaled) / RESCALE
    return math.sqrt(total)


def sum_of_squares(be, flats, clip: float = math.inf, strict: bool = False,
                   scale: float = 1.0) -> float:
    """Σ (scale·min(max(g, −clip), clip))² over a flat array, or flat arrays ``flats``, of
    backend ``be``, in float64.

    One pass over each ``g`` (:func:`_row_values`). The result is NaN where an element is
    NaN, inf where one is ±inf and not clamped (or where the sum overflows float64), and
    with ``strict`` not finite where one is ±inf before the clamp: how ``skip_nonfinite``
    sees an inf that ``clip_value`` hides.
    """
    host, rows = _row_values(be, flats, rules.sumsq_row, (clip, float(strict), scale),
                             lambda g: _host_sum_of_squares(g, clip, strict, scale))
    return sum(host) + (float(np.sum(rows)) if rows is not None else 0.0)


def max_abs(be, flats) -> float:
    """The largest |g| over flat arrays ``flats`` (the inf-norm), NaN where an element is
    NaN, 0 for none; one pass, as :func:`sum_of_squares`."""
    host, rows = _row_values(be, flats, rules.maxabs_row, (),
                             lambda g: float(np.max(np.abs(g))))
    values = host + ([] if rows is None else [float(np.max(rows))])
    return float(np.max(values)) if values else 0.0


def _row_values(be, flats, row_fn, scalars, host_fn):
    """``(host values, device values)``: ``host_fn`` of each host array on the numpy
    backend, and on the others of the small host arrays laid end to end, unless there are
    enough of them for a kernel; ``row_fn`` of each row of ``CHUNK`` elements of the others,
    their values in one host array (one copy from a GPU, one wait for the device, instead
    of one a tensor) or None; empty arrays are left out. 200 host tensors of 16-4096
    float32: 0.66 ms one by one (NumPy), 0.63 laid end to end (NumPy's float64 sum of
    float32 is slow), 0.2 end to end into the kernel (PyTorch's norm: 0.34)."""
    arrays = [g for g in ([flats] if _arrays.is_array(flats) else flats) if g.size]
    small = [g.reshape(-1) for g in arrays if g.size <= SMALL and type(g) is np.ndarray]
    large = [g for g in arrays if not (g.size <= SMALL and type(g) is np.ndarray)]
    if len(small) > 1:  # one array of them
        ends = np.concatenate(small)
        if ends.size > SMALL and be.name != "numpy":
            small, large = [], large + [ends]
        else:
            small = [ends]
    host, parts = [], []  # parts: rows of the arrays the kernels reduce
    for g in large:
        n = g.size
        if be.name == "numpy":
            host.append(host_fn(g))
            continue
        length = min(n, CHUNK)
        rows = n // length
        parts.append(g[: rows * length].reshape(rows, length))  # contiguous rows
        if n > rows * length:
            parts.append(g[rows * length:].reshape(1, n - rows * length))
    host += [host_fn(g) for g in small]
    if not parts:
        return host, None
    partial = be.empty(sum(p.shape[0] for p in parts), np.float64)
    start = 0
    for part in parts:
        be.rows(row_fn, [part], scalars=scalars, result=partial[start:start + part.shape[0]],
                compute=np.float64)
        start += part.shape[0]
    return host, to_host(partial)


def _host_sum_of_squares(g, clip, strict, scale) -> float:
    """:func:`sum_of_squares` of one host array, by NumPy."""
    if clip != math.inf:
        if strict and not np.isfinite(g).all():
            return math.inf if not np.isnan(g).any() else math.nan
        g = np.clip(g.astype(np.float64), -clip, clip)  # at the float64 clip, as kernels
    if scale != 1.0:  # in float64: 2^-600 is 0 in float32 (and inf·0 NaN)
        g = np.multiply(g, scale, dtype=np.float64)
    return float(np.einsum("i,i->", g, g, dtype=np.float64))


def max_norm_value(name: str, value) -> float:
    """A bound on the gradient norm as PyTorch takes it: a number >= 0, inf to measure only."""
    if not (_arrays.is_number(value) and value >= 0):
        raise ValueError(f"{name} must be a number >= 0 (inf: measure only), got {value!r}")
    return float(value)


def _flat_grads(grads, backend, writes=True):
    """(backend, list of flat grads) for a list/dict of arrays, one array (as torch takes one
    tensor) or a ParamBuffer; views to clip in place, or copies where nothing ``writes``."""
    from fastgd.optim.buffer import ParamBuffer

    if isinstance(grads, ParamBuffer):
        return grads.backend, [grads.flat_grads]
    if _arrays.is_array(grads):
        grads = [grads]  # a list of its rows would be copies: nothing clipped in place
    arrays = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    keys = list(grads) if isinstance(grads, Mapping) else range(len(arrays))
    labels = [f"grads[{k!r}]" for k in keys]  # a dict's names, a list's positions
    if not arrays:
        return resolve(backend), []
    for label, a in zip(labels, arrays):  # clipped in place: a copy (of a list) would be lost
        if not _arrays.is_array(a):
            raise _arrays.not_an_array(label, a)
    be = resolve(backend, *arrays)
    flats = []
    for label, a in zip(labels, arrays):
        _arrays.check_float(**{label: a})  # each its own: dtypes may differ
        if not writes:
            flats.append(be.flat(a))
            continue
        view = be.flat_view(a)
        if view is None or not _arrays.is_writable(a):
            raise ValueError(f"{label} must be C-contiguous and writable to be clipped in "
                             f"place")
        flats.append(view)
    return be, flats


def clip_coefficient(max_norm: float, total: float) -> float:
    """The factor that brings a global norm ``total`` down to ``max_norm``, as torch's
    ``min(max_norm/(total + 1e-6), 1)`` (NaN stays NaN); 1 for ``max_norm=inf``, which only
    measures (torch: inf/inf = NaN where the norm is inf)."""
    if max_norm == math.inf:
        return 1.0
    coef = (1.0 / (total + 1e-6)) * max_norm  # torch's max_norm / tensor: its reciprocal,
    # times max_norm (Tensor.__rtruediv__): a division could differ in the last bit
    return 1.0 if coef > 1.0 else coef


def clip_grad_norm(grads, max_norm: float, norm_type: float = 2.0, *, backend=None) -> float:
    """Scale gradients in place so their global norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``: ``coef = min(max_norm/(total + 1e-6), 1)``.

    ``grads``: a list or dict of arrays, one array, or a ParamBuffer (its gradient buffer).
    ``norm_type``: 2 (L2, the default) or ``inf`` (the largest |g|). Returns the total norm
    before clipping, a float (inf or NaN if a gradient is not finite; the gradients are
    then multiplied by NaN or 0 as PyTorch does). ``max_norm=inf`` only measures the norm
    (PyTorch multiplies by inf/inf = NaN where the norm is inf), and reads gradients of any
    layout; ``max_norm=0`` zeroes the gradients, and no gradients have norm 0. Gradients
    may differ in dtype, as the optimizers' (and torch's) may.
    """
    max_norm = max_norm_value("max_norm", max_norm)
    if not (_arrays.is_number(norm_type) and float(norm_type) in (2.0, math.inf)):
        raise ValueError(f"norm_type must be 2 or inf (math.inf, float('inf')), got "
                         f"{norm_type!r}")
    be, flats = _flat_grads(grads, backend, writes=max_norm != math.inf)
    total = global_norm(be, flats) if norm_type == 2 else max_abs(be, flats)
    coef = clip_coefficient(max_norm, total)
    if coef != 1.0:
        for g in flats:
            if be.name == "numpy":
                g *= coef
            elif g.size:
                be.map(rules.scale, [g], [g], scalars=(coef,))
    return total


def clip_grad_value(grads, clip_value: float, *, backend=None) -> None:
    """Clamp gradients in place to ``[-clip_value, clip_value]``, as
    ``torch.nn.utils.clip_grad_value_`` (NaN stays NaN; ``inf`` changes nothing, nor does a
    value beyond a gradient's float range, which torch refuses). ``grads`` as
    :func:`clip_grad_norm` takes them."""
    if not (_arrays.is_number(clip_value) and clip_value >= 0):
        raise ValueError(f"clip_value must be a number >= 0, got {clip_value!r}")
    be, flats = _flat_grads(grads, backend)
    for g in flats:
        if clip_value > float(np.finfo(g.dtype).max):
            continue
        if be.name == "numpy":
            np.clip(g, -clip_value, clip_value, out=g)
        elif g.size:
            be.map(rules.clamp, [g], [g], scalars=(float(clip_value),))
