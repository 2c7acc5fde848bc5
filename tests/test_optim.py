"""Optimizer trajectories against the textbook float64 formulas and against torch.optim."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import fastgd
from tests.optim_textbook import CONFIGS, config_id, make_problem, textbook

BACKENDS = ["numpy", "numba"]


def run(name, options, params, grad_seq, backend, dtype=np.float64):
    p = {k: v.astype(dtype) for k, v in params.items()}
    opt = getattr(fastgd, name)(p, backend=backend, **options)
    for grads in grad_seq:
        info = opt.step({k: v.astype(dtype) for k, v in grads.items()})
        assert not info.skipped
    assert opt.step_count == len(grad_seq)
    return p, opt


def assert_close(got, want, rtol):
    """Elementwise relative error, with an absolute floor at ``rtol`` times the largest
    magnitude for the entries that pass close to zero."""
    for k in want:
        w = np.asarray(want[k], np.float64)
        atol = rtol * max(float(np.max(np.abs(w))), 1e-300) * 1e-2
        np.testing.assert_allclose(np.asarray(got[k], np.float64), w, rtol=rtol, atol=atol,
                                   err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_trajectory_float64(config, backend):
    name, options = config
    params, grad_seq = make_problem(100)
    p, opt = run(name, options, params, grad_seq, backend)
    p_ref, state_ref = textbook(name, options, params, grad_seq)
    assert_close(p, p_ref, 1e-12)
    for k in p:
        assert set(opt.state[k]) == set(state_ref[k])
        assert_close(opt.state[k], state_ref[k], 1e-12)
    assert all(a.dtype == np.float64 for a in p.values())


FLOAT32_CONFIGS = [c for c in CONFIGS if c[0] != "Lion"][::2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", FLOAT32_CONFIGS, ids=config_id)
def test_trajectory_float32(config, backend):
    """float32 params follow the float64 formulas (run on the same float32 inputs) to 1e-5."""
    name, options = config
    params, grad_seq = make_problem(100, dtype=np.float32)
    p, opt = run(name, options, params, grad_seq, backend, np.float32)
    assert all(a.dtype == np.float32 for a in p.values())
    assert all(s.dtype == np.float32 for st in opt.state.values() for s in st.values())
    p_ref, _ = textbook(name, options, params, grad_seq)
    assert_close(p, p_ref, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lion_float32(backend):
    """Lion's sign() is discontinuous, so float32 can flip an update where β1·m + (1 − β1)·g
    rounds across 0; gradients bounded away from that keep it to 1e-5."""
    params, _ = make_problem(1, dtype=np.float32)
    rng = np.random.default_rng(1)
    signs = {k: np.where(rng.random(v.shape) < 0.5, -1.0, 1.0) for k, v in params.items()}
    grad_seq = [{k: (s * (1 + rng.random(s.shape))).astype(np.float32) for k, s in signs.items()}
                for _ in range(100)]  # fixed sign per element: the update never changes sign
    p, _ = run("Lion", dict(lr=1e-3, weight_decay=0.1), params, grad_seq, backend, np.float32)
    p_ref, _ = textbook("Lion", dict(lr=1e-3, weight_decay=0.1), params, grad_seq)
    assert_close(p, p_ref, 1e-5)


def test_numba_matches_numpy_backend_float32():
    """The two host backends agree closely on float32 (same inputs, same formulas)."""
    for name, options in FLOAT32_CONFIGS[:4]:
        params, grad_seq = make_problem(20, dtype=np.float32)
        a, _ = run(name, options, params, grad_seq, "numpy", np.float32)
        b, _ = run(name, options, params, grad_seq, "numba", np.float32)
        assert_close(b, a, 1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_steps_equal_the_numpy_backend_bit_for_bit(dtype):
    """Past CHEAP_PARALLEL_THRESHOLD the Numba step runs on both threads (below it, every
    rule serially): the same bits as the NumPy backend, for every configuration but those
    that clip by the gradients' norm (summed in another order on each backend)."""
    n = fastgd.config.CHEAP_PARALLEL_THRESHOLD + 37
    assert fastgd.get_backend("numba").loop_for(n, fastgd.optim.rules.adam) == "parallel"
    for name, options in [c for c in CONFIGS if "max_grad_norm" not in c[1]]:
        params, grad_seq = make_problem(3, dtype=dtype, shapes={"w": (n,)})
        a, _ = run(name, options, params, grad_seq, "numpy", dtype)
        b, _ = run(name, options, params, grad_seq, "numba", dtype)
        np.testing.assert_array_equal(b["w"], a["w"], err_msg=f"{name} {options}")


def test_schedule_lr_is_used_per_step():
    sched = fastgd.schedules.warmup_cosine(0.05, warmup=10, total=100)
    options = dict(lr=sched, momentum=0.9)
    params, grad_seq = make_problem(100)
    for backend in BACKENDS:
        p, opt = run("SGD", options, params, grad_seq, backend)
        assert_close(p, textbook("SGD", options, params, grad_seq)[0], 1e-12)
    assert opt.lr == sched(100)


# -- torch.optim, the strongest oracle ------------------------------------------------------

torch = pytest.importorskip("torch")

TORCH_CONFIGS = [c for c in CONFIGS if c[0] != "Lion"]


@pytest.fixture
def torch_float64():
    """torch keeps NAdam's momentum product in the default dtype: make it float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def torch_run(name, options, params, grad_seq):
    h = dict(options)
    max_norm, clip_value = h.pop("max_grad_norm", None), h.pop("clip_value", None)
    tp = {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}
    opt = getattr(torch.optim, name)(list(tp.values()), foreach=False, **h)
    for grads in grad_seq:
        for k, t in tp.items():
            t.grad = torch.tensor(grads[k], dtype=torch.float64)
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(list(tp.values()), clip_value)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), max_norm)
        opt.step()
    return {k: v.numpy() for k, v in tp.items()}


@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=config_id)
def test_trajectory_matches_torch(config, torch_float64):
    name, options = config
    params, grad_seq = make_problem(100)
    want = torch_run(name, options, params, grad_seq)
    for backend in BACKENDS:
        p, _ = run(name, options, params, grad_seq, backend)
        assert_close(p, want, 1e-12)


def test_nan_gradient_propagates_as_in_torch(torch_float64):
    """Without skip_nonfinite a NaN/inf gradient goes through the update as PyTorch's does."""
    params, grad_seq = make_problem(3)
    grad_seq[1]["w"][0, 0] = np.nan
    grad_seq[1]["b"][2] = np.inf
    for name, options in [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.1, momentum=0.9)),
                          ("Adam", dict(lr=0.01, max_grad_norm=1.0))]:
        want = torch_run(name, options, params, grad_seq)
        for backend in BACKENDS:
            p, _ = run(name, options, params, grad_seq, backend)
            for k in want:
                np.testing.assert_array_equal(np.isnan(p[k]), np.isnan(want[k]))
                ok = np.isfinite(want[k])
                np.testing.assert_allclose(p[k][ok], want[k][ok], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "options"), [
    ("Adam", {}), ("Adam", dict(amsgrad=True)), ("AdamW", {}), ("NAdam", {}), ("RAdam", {}),
    ("RMSprop", {}), ("RMSprop", dict(centered=True, momentum=0.9)),
])
def test_gradients_past_the_square_root_of_the_largest_float(name, options, dtype, torch_float64):
    """|g| > √max (1.8e19 float32, 1.3e154 float64): PyTorch's ``(0.001·g)·g`` stays finite,
    so its second moment is finite and the element keeps training. A reassociated
    ``0.001·(g·g)`` overflows to inf and freezes the element for good (the Numba CPU kernels
    did this with the reassoc fast-math flag)."""
    big = 2e19 if dtype == np.float32 else 2e154
    p0 = np.array([1.0, 1.0, -0.5], dtype)
    grads = [np.array([big, 1.0, -big], dtype)] + [np.full(3, 0.5, dtype)] * 3
    tp = torch.tensor(p0, requires_grad=True)
    topt = getattr(torch.optim, name)([tp], lr=0.01, foreach=False, **options)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    want = tp.detach().numpy()
    assert np.isfinite(want).all() and (want != p0).all()
    for backend in BACKENDS:
        p = p0.copy()
        opt = getattr(fastgd, name)([p], lr=0.01, backend=backend, **options)
        for g in grads:
            opt.step([g])
        np.testing.assert_allclose(p, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   err_msg=f"{name} {options} on {backend}")
        state = opt.state_dict()
        assert all(np.isfinite(v).all() for v in _arrays_in(state)), f"{name} on {backend}"


def _arrays_in(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _arrays_in(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _arrays_in(v)
    elif isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        yield tree


@pytest.mark.parametrize(("name", "options", "slot"), [
    ("Adam", {}, "exp_avg"), ("Adamax", {}, "exp_avg"),
    ("RMSprop", dict(centered=True), "grad_avg")])
def test_state_after_an_inf_gradient_as_torch(name, options, slot, torch_float64):
    """torch's averages are lerps: inf + w·(g − inf) is NaN on the next step. The NumPy
    backend's β·m + (1 − β)·g stayed inf, unlike numba's kernels and torch."""
    grads = [np.array([np.inf, 1.0]), np.array([1.0, 1.0])]
    tp = torch.tensor([0.5, 0.5], requires_grad=True)
    topt = getattr(torch.optim, name)([tp], lr=0.01, foreach=False, **options)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    want = topt.state[tp][slot].numpy()
    for backend in BACKENDS:
        p = np.array([0.5, 0.5])
        opt = getattr(fastgd, name)([p], lr=0.01, backend=backend, **options)
        with np.errstate(invalid="ignore"):
            for g in grads:
                opt.step([g])
        np.testing.assert_array_equal(opt.state[0][slot], want, err_msg=backend)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_centered_rmsprop_past_the_overflow_of_the_mean_square(dtype, momentum, torch_float64):
    """Gradients whose mean's square overflows (ga = 0.01·g, so |g| > 1.3e156 in float64,
    1.8e21 in float32) with v = inf: torch's fused addcmul keeps v − ga² = inf, a step of 0,
    where v − ga² was inf − inf = NaN and the parameter NaN for good."""
    big = 1e22 if dtype == np.float32 else 1e200
    grads = [np.array([big, 1.0], dtype), np.array([0.5, 0.5], dtype)]
    tp = torch.ones(2, dtype=torch.float32 if dtype == np.float32 else torch.float64,
                    requires_grad=True)
    topt = torch.optim.RMSprop([tp], lr=0.01, centered=True, momentum=momentum, foreach=False)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    want = tp.detach().numpy()
    assert np.isfinite(want).all()
    for backend in BACKENDS:
        p = np.ones(2, dtype)
        opt = fastgd.RMSprop([p], lr=0.01, centered=True, momentum=momentum, backend=backend)
        for g in grads:
            opt.step([g])
        np.testing.assert_allclose(p, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   err_msg=backend)


# A fresh interpreter: ATEN_CPU_CAPABILITY is read when torch is imported. "default" turns
# off the vectorized kernels, whose FMAs round a·b + c once; torch's float64 CPU sqrt is not
# correctly rounded at times either (sqrt(1.3919881029741112) ends ...266, not ...268): both
# replaced, torch.optim is an exact oracle of the order of operations.
_BITWISE = r"""
import json, sys
import numpy as np, torch, fastgd
from tests.optim_textbook import CONFIGS, make_problem
torch.Tensor.sqrt = lambda t: torch.from_numpy(np.sqrt(t.detach().numpy()))
torch.Tensor.sqrt_ = lambda t: t.copy_(torch.from_numpy(np.sqrt(t.detach().numpy())))
# NAdam's momentum product in float64, as fastgd keeps it (torch: the default dtype's)
torch.set_default_dtype(torch.float64)
out = []
for name, options in CONFIGS:
    if name == "Lion" or "max_grad_norm" in options:  # no torch Lion; norms sum in other orders
        continue
    for dtype in (np.float64, np.float32):
        params, grads = make_problem(30, dtype=dtype, shapes={"w": (40, 30), "b": (300,)})
        h = dict(options)
        clip = h.pop("clip_value", None)
        tp = [torch.tensor(v) for v in params.values()]
        opt = getattr(torch.optim, name)(tp, foreach=False, **h)
        for g in grads:
            for t, v in zip(tp, g.values()):
                t.grad = torch.tensor(v)
            if clip is not None:
                torch.nn.utils.clip_grad_value_(tp, clip)
            opt.step()
        for backend in ("numpy", "numba"):
            mine = [v.copy() for v in params.values()]
            o = getattr(fastgd, name)(mine, backend=backend, **options)
            for g in grads:
                o.step([v.copy() for v in g.values()])
            differ = sum(int(np.sum(a != t.numpy())) for a, t in zip(mine, tp))
            out.append([name, str(options), np.dtype(dtype).name, backend, differ])
print(json.dumps(out))
"""


def test_every_rule_equals_torch_bit_for_bit_without_its_fmas():
    """The order of operations, element for element: RAdam's adaptive lr as torch's
    √bc2 / tensor, a reciprocal times √bc2 (Tensor.__rtruediv__), not one division (an
    audit: 1 ULP off from the first rectified step on)."""
    import json
    import os
    import subprocess

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    run = subprocess.run([sys.executable, "-c", _BITWISE], env=env, capture_output=True,
                         text=True, cwd=Path(__file__).parent.parent, check=True)
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * 2 * sum(1 for n, o in CONFIGS
                                    if n != "Lion" and "max_grad_norm" not in o)
    assert [r for r in rows if r[-1]] == []
