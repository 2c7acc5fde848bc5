"""The optimizers' CUDA kernels (simulator or GPU) against the textbook float64 formulas.

Every option combination runs 100 steps over a ParamBuffer (one launch a step, which keeps
the simulator fast); the per-tensor path, float32, state_dict, clipping and the guards are
checked on a few combinations.
"""

from __future__ import annotations

import importlib
import io
import math

import numpy as np
import pytest

import fastgd
from tests.optim_textbook import CONFIGS, config_id, make_problem, textbook
from tests.test_optim import assert_close

dev, host = fastgd.to_device, fastgd.to_host
SMALL = {"w": (4, 5), "b": (3,)}


def buffer_run(name, options, params, grad_seq, dtype=np.float64):
    buf = fastgd.ParamBuffer({k: v.shape for k, v in params.items()}, dtype, backend="cuda")
    buf.assign(params={k: v.astype(dtype) for k, v in params.items()})  # host values
    opt = getattr(fastgd, name)(buf, **options)
    assert opt.backend.name == "cuda"
    for grads in grad_seq:
        buf.assign(grads={k: dev(v.astype(dtype)) for k, v in grads.items()})  # device ones
        info = opt.step()
        assert not info.skipped
    return {k: host(v) for k, v in buf.params.items()}, opt


def tensor_run(name, options, params, grad_seq, dtype=np.float64):
    p = {k: dev(v.astype(dtype)) for k, v in params.items()}
    opt = getattr(fastgd, name)(p, **options)
    for grads in grad_seq:
        opt.step({k: dev(v.astype(dtype)) for k, v in grads.items()})
    return {k: host(v) for k, v in p.items()}, opt


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_trajectory_float64_on_cuda(config):
    name, options = config
    params, grad_seq = make_problem(100, shapes=SMALL)  # one block: the simulator is slow
    p, opt = buffer_run(name, options, params, grad_seq)
    p_ref, state_ref = textbook(name, options, params, grad_seq)
    assert_close(p, p_ref, 1e-12)
    for k in p:
        assert_close({s: host(a) for s, a in opt.state[k].items()}, state_ref[k], 1e-12)


@pytest.mark.parametrize("config", [CONFIGS[14], CONFIGS[17]],
                         ids=config_id)
def test_per_tensor_on_cuda(config):
    """One launch per tensor, and grads passed as device arrays."""
    name, options = config
    params, grad_seq = make_problem(100)
    p, opt = tensor_run(name, options, params, grad_seq)
    assert len(opt._slots) == len(params)
    assert_close(p, textbook(name, options, params, grad_seq)[0], 1e-12)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[11], CONFIGS[17], CONFIGS[22]],
                         ids=config_id)
def test_trajectory_float32_on_cuda(config):
    """float32 over a ParamBuffer of 37 elements: two blocks of the shrunken launch."""
    name, options = config
    params, grad_seq = make_problem(100, dtype=np.float32)
    p, opt = buffer_run(name, options, params, grad_seq, np.float32)
    assert all(a.dtype == np.float32 for a in p.values())
    assert_close(p, textbook(name, options, params, grad_seq)[0], 1e-5)


def test_state_dict_round_trip_on_cuda():
    params, grad_seq = make_problem(12, dtype=np.float32)
    a_p = {k: dev(v) for k, v in params.items()}
    a = fastgd.Adam(a_p, lr=0.01, amsgrad=True)
    for g in grad_seq[:6]:
        a.step({k: dev(v) for k, v in g.items()})
    f = io.BytesIO()
    np.savez(f, **a.state_dict())
    f.seek(0)
    b_p = {k: dev(host(v)) for k, v in a_p.items()}
    b = fastgd.Adam(b_p, lr=0.01, amsgrad=True)
    b.load_state_dict(np.load(f))
    for g in grad_seq[6:]:
        a.step({k: dev(v) for k, v in g.items()})
        b.step({k: dev(v) for k, v in g.items()})
    for k in params:
        np.testing.assert_array_equal(host(a_p[k]), host(b_p[k]))
        for s in a.state[k]:
            np.testing.assert_array_equal(host(a.state[k][s]), host(b.state[k][s]))


def test_skip_nonfinite_and_clipping_on_cuda():
    params, grad_seq = make_problem(4)
    buf = fastgd.ParamBuffer({k: v.shape for k, v in params.items()}, np.float64,
                             backend="cuda")
    buf.assign(params=params)
    opt = fastgd.AdamW(buf, lr=0.01, max_grad_norm=1.0, skip_nonfinite=True)
    infos = [opt.step({k: dev(v) for k, v in g.items()}) for g in grad_seq[:2]]
    want_norm = math.sqrt(sum(float(np.sum(v**2)) for v in grad_seq[1].values()))
    assert infos[1].grad_norm == pytest.approx(want_norm, rel=1e-13)
    before = host(buf.flat_params).copy()
    bad = {k: v.copy() for k, v in grad_seq[2].items()}
    bad["w"][1, 1] = np.nan
    info = opt.step({k: dev(v) for k, v in bad.items()})
    assert info.skipped and math.isnan(info.grad_norm) and opt.step_count == 2
    np.testing.assert_array_equal(host(buf.flat_params), before)
    for g in grad_seq[2:]:
        opt.step({k: dev(v) for k, v in g.items()})
    want, _ = textbook("AdamW", dict(lr=0.01, max_grad_norm=1.0), params, grad_seq)
    assert_close({k: host(v) for k, v in buf.params.items()}, want, 1e-12)


def test_clip_grad_norm_on_cuda():
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(n) for n in (5, 300, 1)]
    d = [dev(g) for g in grads]
    total = fastgd.clip_grad_norm(d, 0.5)
    want = math.sqrt(sum(float(np.sum(g**2)) for g in grads))
    assert total == pytest.approx(want, rel=1e-13)
    for a, g in zip(d, grads):
        np.testing.assert_allclose(host(a), g * (0.5 / (want + 1e-6)), rtol=1e-14)


def test_inf_norm_and_clip_grad_value_on_cuda():
    """The largest |g| on the rows kernel (a block's threads share a row), NaN kept; the
    clamp in place."""
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(n) * 3 for n in (5, 300, 1)]
    d = [dev(g) for g in grads]
    want = max(float(np.max(np.abs(g))) for g in grads)
    assert fastgd.clip_grad_norm(d, 0.5, norm_type=math.inf) == want
    for a, g in zip(d, grads):
        np.testing.assert_allclose(host(a), g * (0.5 / (want + 1e-6)), rtol=1e-14)
    grads[1][123] = np.nan
    d = [dev(g.astype(np.float32)) for g in grads]
    assert math.isnan(fastgd.clip_grad_norm(d, math.inf, norm_type=math.inf))
    fastgd.clip_grad_value(d, 0.1)
    for a, g in zip(d, grads):
        np.testing.assert_array_equal(host(a), np.clip(g.astype(np.float32), -0.1, 0.1))


def test_huge_float64_gradients_and_device_state_values_on_cuda():
    """The norm's rescaled second pass (squares of 1e200 overflow) on the rows kernel; a
    state dict holding device arrays loads (values are read through to_host)."""
    d = [dev(np.array([3e200, 0.0])), dev(np.array([4e200]))]
    assert fastgd.clip_grad_norm(d, 1.0) == pytest.approx(5e200, rel=1e-14)
    np.testing.assert_allclose(np.concatenate([host(a) for a in d]), [0.6, 0.0, 0.8],
                               rtol=1e-12)
    p = {"w": dev(np.zeros(3))}
    opt = fastgd.SGD(p, lr=1.0, max_grad_norm=1.0, skip_nonfinite=True)
    info = opt.step({"w": dev(np.array([3e200, 4e200, 0.0]))})
    assert not info.skipped and info.grad_norm == pytest.approx(5e200, rel=1e-14)
    np.testing.assert_allclose(host(p["w"]), [-0.6, -0.8, 0.0], rtol=1e-12)
    a = fastgd.Adam({"w": dev(np.ones(3))}, lr=0.1)
    a.step({"w": dev(np.full(3, 0.5))})
    saved = {k: (dev(v) if k.startswith("state/") else v) for k, v in a.state_dict().items()}
    b = fastgd.Adam({"w": dev(np.ones(3))}, lr=0.1)
    b.load_state_dict(saved)
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(host(b.state["w"][key]), host(a.state["w"][key]))


def test_sum_of_squares_rows_and_tail_on_cuda(monkeypatch):
    from fastgd.backends import get_backend
    from fastgd.optim import clip

    monkeypatch.setattr(clip, "CHUNK", 16)  # rows of a block each, and a short tail
    be = get_backend("cuda")
    g = np.random.default_rng(4).standard_normal(100).astype(np.float32)
    assert clip.sum_of_squares(be, be.flat(dev(g))) == pytest.approx(
        float(np.sum(g.astype(np.float64) ** 2)), rel=1e-12)
    g[77] = np.inf
    assert clip.sum_of_squares(be, be.flat(dev(g))) == math.inf
    clamped = float(np.sum(np.clip(g, -0.5, 0.5).astype(np.float64) ** 2))
    assert clip.sum_of_squares(be, be.flat(dev(g)), 0.5) == pytest.approx(clamped, rel=1e-12)
    assert clip.sum_of_squares(be, be.flat(dev(g)), 0.5, strict=True) == math.inf


def test_buffer_grads_are_untouched_when_a_later_grad_cannot_be_read(monkeypatch):
    """A non-contiguous device grad (no CuPy to copy it) fails before the buffer's grads
    are written: the first tensor's was copied in before the second's failed. (On a real
    GPU with CuPy installed the copy would succeed: CuPy is hidden here.)"""
    monkeypatch.setattr(importlib.import_module("fastgd.backends.cuda_backend"), "_cupy",
                        lambda: None)
    buf = fastgd.ParamBuffer({"w": 3, "b": 2}, np.float64, backend="cuda")
    opt = fastgd.SGD(buf, lr=0.1)
    with pytest.raises(ValueError, match="non-contiguous device arrays need CuPy"):
        opt.step({"w": dev(np.ones(3)), "b": dev(np.ones(4))[::2]})
    assert (host(buf.flat_grads) == 0).all() and (host(buf.flat_params) == 0).all()


def test_cuda_errors():
    p = {"w": dev(np.zeros(3))}
    opt = fastgd.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="grad 'w' is not a device array"):
        opt.step({"w": np.ones(3)})
    with pytest.raises(ValueError, match=r"grad 'w' has shape \(4,\), expected \(3,\)"):
        opt.step({"w": dev(np.ones(4))})
    with pytest.raises(ValueError, match="grad 'w' has dtype float32"):
        opt.step({"w": dev(np.ones(3, np.float32))})
    with pytest.raises(ValueError, match="grad 'w' is a device array; the params are host"):
        fastgd.SGD({"w": np.zeros(3)}).step({"w": dev(np.ones(3))})
    with pytest.raises(TypeError, match="fastgd.to_device"):
        fastgd.SGD({"w": np.zeros(3)}, backend="cuda")
    np.testing.assert_array_equal(host(p["w"]), 0.0)
    w = dev(np.zeros(10))
    with pytest.raises(ValueError, match="params 'a' and 'b' share memory"):
        fastgd.SGD({"a": w[:6], "b": w[4:]})
    fastgd.SGD({"a": w[:5], "b": w[5:]})


def test_groups_on_cuda_skip_together():
    """fastgd.Groups on device arrays: a step as each group's own, and an inf gradient in
    one group skipping both (its finiteness read by the device's norm kernel)."""
    p = {"w": dev(np.ones(300)), "b": dev(np.ones(5))}
    opt = fastgd.Groups(fastgd.SGD({"w": p["w"]}, lr=0.1, skip_nonfinite=True),
                        fastgd.SGD({"b": p["b"]}, lr=0.5))
    bad = np.ones(300)
    bad[200] = np.inf
    assert opt.step({"w": dev(bad), "b": dev(np.ones(5))}).skipped
    np.testing.assert_array_equal(host(p["b"]), 1.0)
    assert not opt.step({"w": dev(np.ones(300)), "b": dev(np.ones(5))}).skipped
    np.testing.assert_allclose(host(p["w"]), 0.9)
    np.testing.assert_allclose(host(p["b"]), 0.5)


def test_groups_refuse_a_device_array_in_two_groups():
    """Two groups stepping overlapping views of one device array would update it twice."""
    w = dev(np.zeros(10))
    with pytest.raises(ValueError, match="params 'a' and 'b' share memory"):
        fastgd.Groups(fastgd.SGD({"a": w[:6]}), fastgd.Adam({"b": w[4:]}))
    fastgd.Groups(fastgd.SGD({"a": w[:5]}), fastgd.Adam({"b": w[5:]}))


def test_a_gradient_over_its_param_at_an_offset_on_cuda():
    """As on the CPU (tests/test_optim_api.py): a device gradient that is a view of its own
    parameter elsewhere is read whole before the kernel writes the parameter (a reversed
    view needs CuPy to be flattened, which the simulator runs without)."""
    host_buf = np.arange(1, 41, dtype=np.float64)
    buf = dev(host_buf)
    p, g = buf[4:], buf[:-4]
    q = host_buf[4:].copy()
    a = fastgd.Adam([p], lr=0.5, backend="cuda")
    b = fastgd.Adam([q], lr=0.5, backend="numpy")
    for _ in range(3):
        want = host(g).copy()
        a.step([g])
        b.step([want])
        np.testing.assert_allclose(host(p), q, rtol=1e-12)
