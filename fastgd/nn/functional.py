"""The fused elementwise and per-column kernels the layers are built from.

Each function takes a backend object (``fastgd.get_backend(name)``) and 2-D C-contiguous
arrays of that backend, writes into the given outputs and returns them. On ``numba`` and
``cuda`` they run the kernels generated from ``fastgd.nn.formulas``; on ``numpy`` they run
the independent ``fastgd.nn.reference``. Matrix products are not here: layers call the
backend's BLAS (``@``) directly.
"""

from __future__ import annotations

import math

import numpy as np

from fastgd.nn import formulas as fm
from fastgd.nn import reference as ref
from fastgd.nn._kernels import bind, column_sums
from fastgd.nn._profile import PROFILE

#: The profiler's section for every kernel of this module
FUSED = "fused kernels"


def bias_act(be, h, bias, act, z_out, y_out):
    """``z = h + bias`` (one bias per column, or none), ``y = act(z)``; returns ``(z, y)``.

    Without an activation ``z`` is ``y``; without bias and activation both are ``h``."""
    identity = act.name == "identity"
    if identity and bias is None:
        return h, h
    t0 = PROFILE.mark()
    z = z_out if bias is not None else h
    if identity:
        z = y_out
    if be.name == "numpy":
        if bias is not None:
            z[...] = h + bias
        if not identity:
            y_out[...] = act.reference(z)
    elif identity:
        be.grid(fm.bias_add, [h], [bias], [y_out])
    elif bias is None:
        be.grid(bind(fm.act_only, act), [h], outs=[y_out], scalars=act.scalars)
    else:
        be.grid(bind(fm.bias_act, act), [h], [bias], [z_out, y_out], act.scalars)
    PROFILE.done(FUSED, t0)
    return z, y_out


def act_backward(be, dy, z, act, dz_out, db_out=None):
    """``dz = act'(z)·dy`` and, when ``db_out`` is given, its column sums (the bias
    gradient) in the same pass. Returns ``dz`` (``dy`` itself for the identity)."""
    identity = act.name == "identity"
    if identity and db_out is None:
        return dy
    t0 = PROFILE.mark()
    dz = dy if identity else dz_out
    if be.name == "numpy":
        if not identity:
            dz[...] = act.reference_backward(dy, z)
        if db_out is not None:
            db_out[...] = dz.sum(axis=0)
    elif identity:
        column_sums(be, dy, db_out)
    elif db_out is None or be.name != "cuda":  # the CPU sums dz in row order afterwards
        be.grid(bind(fm.act_grad, act), [dy, z], outs=[dz_out], scalars=act.scalars)
        if db_out is not None:
            column_sums(be, dz_out, db_out)
    else:
        be.run_columns(bind(fm.act_grad_colsum, act), [dy, z, dz_out],
                       scalars=act.scalars, result=db_out, writes=(2,))
    PROFILE.done(FUSED, t0)
    return dz


def batch_norm_stats(be, h, eps, stats_out):
    """Per column of ``h``: ``stats_out[0] = mean``, ``[1] = 1/sqrt(var + eps)``,
    ``[2] = unbiased var`` (for the running estimate)."""
    t0 = PROFILE.mark()
    if be.name == "numpy":
        for k, v in enumerate(ref.batch_norm_stats(h, eps)):
            stats_out[k] = v
    else:
        be.run_columns(fm.bn_stats, [h, stats_out], scalars=(eps,), writes=(1,))
    PROFILE.done(FUSED, t0)
    return stats_out


def batch_norm_act(be, h, mean, invstd, gamma, beta, act, z_out, y_out):
    """``z = gamma·(h - mean)·invstd + beta``, ``y = act(z)``; returns ``(z, y)``."""
    t0 = PROFILE.mark()
    if be.name == "numpy":
        z_out[...] = gamma * ((h - mean) * invstd) + beta
        y_out[...] = act.reference(z_out)
    else:
        be.grid(bind(fm.bn_act, act), [h], [mean, invstd, gamma, beta], [z_out, y_out],
                act.scalars)
    PROFILE.done(FUSED, t0)
    return z_out, y_out


def batch_norm_backward(be, dy, z, h, mean, invstd, gamma, act, dx_out, grads_out,
                        train=True):
    """Input gradient of ``act(batch_norm(h))`` into ``dx_out``; ``grads_out[0]`` and
    ``[1]`` receive the gamma and beta gradients. ``train``: whether the forward normalized
    with the batch's statistics (which then depend on every input) or, in eval, with the
    running ones (constants)."""
    t0 = PROFILE.mark()
    if be.name == "numpy":
        du = act.reference_backward(dy, z)
        dx, dgamma, dbeta = ref.batch_norm_backward(du, h, mean, invstd, gamma, train)
        dx_out[...] = dx
        grads_out[0], grads_out[1] = dgamma, dbeta
    else:
        line = fm.bn_backward if train else fm.bn_backward_eval
        be.run_columns(bind(line, act), [dy, z, h, dx_out, grads_out],
                       per_column=[mean, invstd, gamma], scalars=act.scalars, writes=(3, 4))
    PROFILE.done(FUSED, t0)
    return dx_out, grads_out


def ema_(be, running, stat, momentum):
    """In place: ``running = (1 - momentum)·running + momentum·stat`` (1-D arrays)."""
    if be.name == "numpy":
        running *= 1 - momentum
        running += momentum * stat
        return running
    r2 = running.reshape(1, -1)
    be.grid(fm.ema, [r2, stat.reshape(1, -1)], outs=[r2], scalars=(momentum,))
    return running


def inv_std(be, var, eps, out):
    """``1/sqrt(var + eps)`` of a 1-D array."""
    if be.name == "numpy":
        out[...] = 1 / np.sqrt(var + eps)
    else:
        be.grid(fm.inv_std, [var.reshape(1, -1)], outs=[out.reshape(1, -1)],
                scalars=(eps,))
    return out


def dropout(be, x, p, seed, step, out):
    """``x·mask/(1 - p)`` with the mask a hash of ``(seed, step, flat index)``: the same
    on every backend. The backward is this function applied to the upstream gradient."""
    t0 = PROFILE.mark()
    if be.name == "numpy":
        out[...] = ref.dropout(x, p, seed, step)
    else:
        scalars = (np.uint64(ref.dropout_base(seed, step)),
                   np.uint64(ref.dropout_threshold(p)), ref.dropout_scale(p))
        be.grid(fm.dropout, [x], outs=[out], scalars=scalars, index=True)
    PROFILE.done(FUSED, t0)
    return out


def dropout_mask(be, shape, p, seed, step, dtype=np.float32):
    """The dropout multiplier (0 or 1/(1 - p)) for an array of ``shape``, on ``be``."""
    rows = shape[0] if len(shape) > 1 else 1
    ones = be.full(math.prod(shape), dtype, 1.0).reshape(rows, math.prod(shape) // max(rows, 1))
    return dropout(be, ones, p, seed, step, ones).reshape(shape)


def add(be, a, b, out):
    """``a + b`` elementwise."""
    t0 = PROFILE.mark()
    if be.name == "numpy":
        np.add(a, b, out=out)
    else:
        be.grid(fm.add, [a, b], outs=[out])
    PROFILE.done(FUSED, t0)
    return out
