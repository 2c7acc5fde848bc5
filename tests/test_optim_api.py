"""ParamBuffer, state_dict, clipping and guards, and every error the optimizers raise."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest

import fastgd
from fastgd.optim import OPTIMIZERS
from tests.optim_textbook import make_problem, textbook

BACKENDS = ["numpy", "numba"]
ALL = list(OPTIMIZERS)


def options_for(name):
    """Options that exercise the most state for each optimizer."""
    return {"SGD": dict(lr=0.05, momentum=0.9), "RMSprop": dict(centered=True, momentum=0.5),
            "Adam": dict(amsgrad=True), "AdamW": dict(amsgrad=True)}.get(name, {})


# -- ParamBuffer ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_param_buffer_equals_per_tensor(name, backend):
    params, grad_seq = make_problem(30)
    buf = fastgd.ParamBuffer({k: v.shape for k, v in params.items()}, np.float64,
                             backend=backend)
    for k, v in params.items():
        buf.params[k][...] = v
    per_tensor = {k: v.copy() for k, v in params.items()}
    cls = getattr(fastgd, name)
    a = cls(buf, max_grad_norm=4.0, **options_for(name))
    b = cls(per_tensor, max_grad_norm=4.0, backend=backend, **options_for(name))
    assert a.backend.name == backend
    for grads in grad_seq:
        for k, g in grads.items():
            buf.grads[k][...] = g
        ia, ib = a.step(), b.step(grads)
        assert ia.grad_norm == pytest.approx(ib.grad_norm, rel=1e-14)
    for k in params:
        np.testing.assert_allclose(buf.params[k], per_tensor[k], rtol=1e-13, atol=1e-15)
        for key in b.state[k]:
            np.testing.assert_allclose(a.state[k][key], b.state[k][key], rtol=1e-13,
                                       atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_buffer_assign_checks_every_name_and_shape_first(backend):
    buf = fastgd.ParamBuffer({"w": (2, 3), "b": 3}, dtype=np.float32, backend=backend)
    w = np.arange(6.0).reshape(2, 3)  # float64 values: converted
    buf.assign(params={"w": w, "b": [1.0, 2.0, 3.0]}, grads={"b": np.full(3, 0.5)})
    np.testing.assert_array_equal(buf.params["w"], w)
    np.testing.assert_array_equal(buf.flat_params, [0, 1, 2, 3, 4, 5, 1, 2, 3])
    np.testing.assert_array_equal(buf.flat_grads, [0] * 6 + [0.5] * 3)
    for bad, match in (({"params": {"b": np.zeros(3), "x": np.zeros(1)}}, "has no 'x'"),
                       ({"params": {"b": np.zeros(3)}, "grads": {"w": np.zeros((3, 2))}},
                        r"grads\['w'\] has shape \(3, 2\), expected \(2, 3\)")):
        with pytest.raises(ValueError, match=match):
            buf.assign(**bad)
        np.testing.assert_array_equal(buf.params["b"], [1, 2, 3])  # nothing written
    for bad, error in ((np.array(["x", "y", "z"]), ValueError), (np.ones(3) * 1j, TypeError)):
        with pytest.raises(error):  # converted before anything is written
            buf.assign(params={"w": np.zeros((2, 3))}, grads={"b": bad})
        np.testing.assert_array_equal(buf.params["w"], w)
    # views of the buffer itself (a swap): read before any is written
    buf.assign(params={"w": np.zeros((2, 3))}, grads={"b": [7.0, 8.0, 9.0]})
    buf.assign(params={"b": buf.grads["b"]}, grads={"b": buf.params["b"]})
    np.testing.assert_array_equal(buf.params["b"], [7, 8, 9])
    np.testing.assert_array_equal(buf.grads["b"], [1, 2, 3])
    scalar = fastgd.ParamBuffer({"s": ()}, dtype=np.float64, backend=backend)
    scalar.assign(params={"s": 2.5})
    assert scalar.params["s"] == 2.5 and scalar.params["s"].shape == ()


def test_param_buffer_one_launch_and_views():
    buf = fastgd.ParamBuffer({"w": (3, 4), "b": 4, "s": ()}, dtype=np.float32)
    assert buf.size == 17 and buf.flat_params.dtype == np.float32
    assert buf.params["w"].shape == (3, 4) and buf.params["b"].shape == (4,)
    assert buf.params["s"].shape == ()
    assert np.shares_memory(buf.params["w"], buf.flat_params)
    assert np.shares_memory(buf.grads["b"], buf.flat_grads)
    opt = fastgd.Adam(buf, lr=0.1)
    assert len(opt._slots) == 1  # every tensor in one kernel launch
    buf.grads["b"][...] = 1.0
    opt.step()
    np.testing.assert_allclose(buf.params["b"], -0.1, rtol=1e-6)
    np.testing.assert_array_equal(buf.params["w"], 0.0)
    # grads may also be passed: they are copied into the buffer after validation
    opt.step({"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32),
              "s": np.zeros((), np.float32)})
    np.testing.assert_array_equal(buf.grads["w"], 1.0)
    assert "ParamBuffer 3 tensors" in repr(buf)


def test_param_buffer_errors():
    with pytest.raises(ValueError, match="non-empty dict"):
        fastgd.ParamBuffer({})
    with pytest.raises(TypeError, match="float32 and float64"):
        fastgd.ParamBuffer({"w": 3}, dtype=np.int32)
    with pytest.raises(ValueError, match="non-negative ints"):
        fastgd.ParamBuffer({"w": (3, -1)})
    for shape in (True, (2, np.True_)):  # bools are not sizes (True was a tensor of 1)
        with pytest.raises(ValueError, match="non-negative ints"):
            fastgd.ParamBuffer({"w": shape})
    assert fastgd.ParamBuffer({"w": np.int64(3), "b": (np.uint8(2),)}).size == 5
    buf = fastgd.ParamBuffer({"w": 3})
    with pytest.raises(ValueError, match="needs the gradients"):
        fastgd.SGD({"w": np.zeros(3)}).step()
    with pytest.raises(ValueError, match="grad 'w' has shape"):
        fastgd.SGD(buf).step({"w": np.zeros(4, np.float32)})


# -- state_dict -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_is_bit_identical(name, backend):
    params, grad_seq = make_problem(20, dtype=np.float32)
    cls = getattr(fastgd, name)
    p1 = {k: v.copy() for k, v in params.items()}
    a = cls(p1, backend=backend, **options_for(name))
    for g in grad_seq[:10]:
        a.step(g)
    f = io.BytesIO()
    np.savez(f, **a.state_dict())
    f.seek(0)
    p2 = {k: v.copy() for k, v in p1.items()}
    b = cls(p2, backend=backend, **options_for(name))
    b.load_state_dict(np.load(f))
    assert b.step_count == 10
    for g in grad_seq[10:]:
        a.step(g)
        b.step(g)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
        for key in a.state[k]:
            np.testing.assert_array_equal(a.state[k][key], b.state[k][key])


def test_state_dict_is_a_copy_and_checked():
    p = {"w": np.ones(3)}
    opt = fastgd.Adam(p, lr=0.1)
    opt.step({"w": np.ones(3)})
    sd = opt.state_dict()
    assert sorted(sd) == ["optimizer", "state/w/exp_avg", "state/w/exp_avg_sq", "step"]
    assert int(sd["step"]) == 1 and str(sd["optimizer"]) == "Adam"
    opt.step({"w": np.ones(3)})
    assert not np.shares_memory(sd["state/w/exp_avg"], opt.state["w"]["exp_avg"])
    before = {k: v.copy() for k, v in opt.state["w"].items()}
    bad = [({**sd, "optimizer": np.array("SGD")}, "is for 'SGD', not Adam"),
           ({**sd, "step": np.array(-1)}, "step must be an integer >= 0"),
           ({**sd, "step": np.array(1.5)}, "step must be an integer >= 0"),
           ({k: v for k, v in sd.items() if k != "state/w/exp_avg"}, "has no 'state/w/exp_avg'"),
           ({**sd, "state/w/exp_avg": np.ones(4)}, r"is float64\[4\], expected float64\[3\]"),
           ({**sd, "state/w/exp_avg": np.ones(3, np.float32)}, "is float32"),
           ({**sd, "state/x/y": np.ones(3)}, "unexpected entry 'state/x/y'")]
    for d, msg in bad:
        with pytest.raises(ValueError, match=msg):
            opt.load_state_dict(d)
    assert opt.step_count == 2  # nothing was written by the failed loads
    for k, v in before.items():
        np.testing.assert_array_equal(opt.state["w"][k], v)
    nadam = fastgd.NAdam({"w": np.ones(3)})
    nadam.step({"w": np.ones(3)})
    d = nadam.state_dict()
    assert float(d["extra/mu_product"]) == nadam.mu_product != 1.0
    with pytest.raises(ValueError, match="has no 'extra/mu_product'"):
        fastgd.NAdam({"w": np.ones(3)}).load_state_dict(
            {k: v for k, v in d.items() if k != "extra/mu_product"})


# -- clipping and guards --------------------------------------------------------------------


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_norm_matches_torch(backend):
    _, grad_seq = make_problem(1)
    grads = grad_seq[0]
    for max_norm in (0.5, 100.0):
        mine = {k: v.copy() for k, v in grads.items()}
        total = fastgd.clip_grad_norm(mine, max_norm, backend=backend)
        tt = [torch.zeros(v.shape, dtype=torch.float64) for v in grads.values()]
        for t, v in zip(tt, grads.values()):
            t.grad = torch.tensor(v)
        want = torch.nn.utils.clip_grad_norm_(tt, max_norm)
        assert total == pytest.approx(float(want), rel=1e-14)
        for a, b in zip(mine.values(), tt):
            np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-14)
    lst = [v.astype(np.float32) for v in grads.values()]
    total = fastgd.clip_grad_norm(lst, 1.0, backend=backend)
    assert total == pytest.approx(math.sqrt(sum(float(np.sum(v.astype(float) ** 2))
                                                for v in grads.values())), rel=1e-6)
    assert math.sqrt(sum(float(np.sum(v.astype(float) ** 2)) for v in lst)) == pytest.approx(
        1.0, rel=1e-5)


def _torch_params(grads):
    """Torch tensors whose ``.grad`` are copies of ``grads``."""
    params = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype) for g in grads]
    for t, g in zip(params, grads):
        t.grad = torch.from_numpy(g.copy())
    return params


def test_the_clip_coefficient_is_torchs_reciprocal_times_max_norm():
    """torch's max_norm / (total + 1e-6) is a tensor's reciprocal times max_norm
    (Tensor.__rtruediv__): a division was 1 ULP off here (an audit). One element, so that
    the norms are equal."""
    g = np.array([4.731957688635529])
    mine = g.copy()
    fastgd.clip_grad_norm([mine], 1e-3)
    t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([t], 1e-3)
    assert mine[0] == t.grad.numpy()[0] == 0.0009999997886710205


def test_a_nan_norm_does_not_hide_an_lr_beyond_float32():
    """The range check of float32 steps took max() of the scalars, the clip scale among
    them: NaN where the gradients' norm is, and the check passed an lr of 1e39 (an audit)."""
    for backend in BACKENDS:
        p = np.ones(3, np.float32)
        opt = fastgd.SGD([p], lr=1e39, max_grad_norm=1.0, backend=backend)
        with pytest.raises(ValueError, match="beyond the range of the float32 params"):
            opt.step([np.array([np.nan, 1, 1], np.float32)])
        assert opt.step_count == 0 and np.all(p == 1)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # NaN coefficient
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_norm_clipping_and_clip_grad_value_match_torch(backend, dtype):
    """``norm_type=inf`` (the largest |g|) and ``clip_grad_value`` as torch's, on small host
    arrays (NumPy's path: up to clip.SMALL elements), kernel rows with tails, and a NaN or
    ±inf in either."""
    rng = np.random.default_rng(7)
    sizes = (5, 3 * 4096 + 17, 20_000)
    for at, poison in [(None, None)] + [(at, v) for at in ((1, 4100), (2, 17_000))
                                        for v in (np.nan, np.inf, -np.inf)]:
        grads = [(rng.standard_normal(n) * 3).astype(dtype) for n in sizes]
        if poison is not None:
            grads[at[0]][at[1]] = poison
        for max_norm in (0.5, 100.0, math.inf):
            mine = [g.copy() for g in grads]
            total = fastgd.clip_grad_norm(mine, max_norm, norm_type=math.inf, backend=backend)
            tt = _torch_params(grads)
            want = torch.nn.utils.clip_grad_norm_(tt, max_norm, norm_type=math.inf)
            np.testing.assert_equal(total, float(want))
            if max_norm != math.inf:  # torch: inf/inf = NaN for an infinite norm
                for a, t in zip(mine, tt):
                    np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-6 if dtype ==
                                               np.float32 else 1e-15)
        for clip_value in (0.0, 0.7, 1e39, math.inf):
            mine = [g.copy() for g in grads]
            assert fastgd.clip_grad_value(mine, clip_value, backend=backend) is None
            tt = _torch_params(grads)
            if clip_value < float(np.finfo(dtype).max):  # torch refuses one beyond: no clip here
                torch.nn.utils.clip_grad_value_(tt, clip_value)
            for a, t in zip(mine, tt):
                np.testing.assert_array_equal(a, t.grad.numpy())
    with pytest.raises(ValueError, match="norm_type must be 2 or inf"):
        fastgd.clip_grad_norm([np.ones(3)], 1.0, norm_type=1)
    for bad in (-1.0, math.nan, "1"):
        with pytest.raises(ValueError, match="clip_value must be a number >= 0"):
            fastgd.clip_grad_value([np.ones(3)], bad)
    assert fastgd.clip_grad_norm([], 1.0, norm_type=math.inf) == 0.0  # as torch


@pytest.mark.parametrize("backend", BACKENDS)
def test_sum_of_squares_sizes(backend):
    """The reduction covers every element: chunk boundaries, tails, parallel sizes."""
    from fastgd.backends import get_backend
    from fastgd.optim.clip import CHUNK, sum_of_squares

    be = get_backend(backend)
    rng = np.random.default_rng(0)
    for n in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 70_001):
        g = rng.standard_normal(n).astype(np.float32)
        want = float(np.sum(g.astype(np.float64) ** 2))
        assert sum_of_squares(be, g) == pytest.approx(want, rel=1e-12)
        assert sum_of_squares(be, g, 0.5) == pytest.approx(
            float(np.sum(np.clip(g, -0.5, 0.5).astype(np.float64) ** 2)), rel=1e-12)
        if n:
            g[n // 2] = np.nan
            assert math.isnan(sum_of_squares(be, g))
            g[n // 2] = -np.inf
            assert sum_of_squares(be, g) == math.inf
            clamped = float(np.sum(np.clip(g, -0.5, 0.5).astype(np.float64) ** 2))
            assert sum_of_squares(be, g, 0.5) == pytest.approx(clamped, rel=1e-12)
            assert sum_of_squares(be, g, 0.5, strict=True) == math.inf
            assert sum_of_squares(be, np.clip(g, -1, 1), 0.5, strict=True) == pytest.approx(
                clamped, rel=1e-12)


def test_the_norm_of_many_tensors_reads_its_partial_sums_back_once(monkeypatch):
    """Every kernel's partial sums go into one array, read back once (on a GPU each read
    is a copy and a wait for the device: one a tensor before), with the host's small
    tensors summed beside them; the norm is the float64 norm of them all."""
    from fastgd.backends import get_backend
    from fastgd.optim import clip

    reads = []
    monkeypatch.setattr(clip, "to_host", lambda a: reads.append(a) or a)
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(n).astype(np.float32)
             for n in (20_000, 5 * clip.CHUNK + 7, 100, 40_000, 0)]
    want = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert clip.global_norm(get_backend("numba"), grads) == pytest.approx(want, rel=1e-12)
    assert len(reads) == 1 and reads[0].size == 5 + 6 + 10  # rows and tails of the three


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_host_gradients_are_reduced_together(backend):
    """Small host arrays of both dtypes are summed as one (one NumPy call): the same norm
    as tensor by tensor, NaN or inf wherever one is, clamped and strict as each alone."""
    from fastgd.backends import get_backend
    from fastgd.optim.clip import max_abs, sum_of_squares

    be = get_backend(backend)
    rng = np.random.default_rng(5)
    grads = [(rng.standard_normal(n) * 2).astype(np.float32 if n % 2 else np.float64)
             for n in (3, 16, 1000, 4096, 77)]
    each = sum(float(np.sum(np.clip(g.astype(np.float64), -1.5, 1.5) ** 2)) for g in grads)
    assert sum_of_squares(be, grads, 1.5) == pytest.approx(each, rel=1e-13)
    assert max_abs(be, grads) == max(float(np.max(np.abs(g))) for g in grads)
    grads[3][7] = -np.inf
    assert sum_of_squares(be, grads) == math.inf
    assert sum_of_squares(be, grads, 1.5) < math.inf
    assert sum_of_squares(be, grads, 1.5, strict=True) == math.inf
    grads[1][0] = np.nan
    assert math.isnan(sum_of_squares(be, grads)) and math.isnan(max_abs(be, grads))
    assert max_abs(be, [np.array(3.0), np.array(-4.0), np.ones((2, 3))]) == 4.0  # any shape
    many = [(rng.standard_normal(4000) * 2).astype(np.float32) for _ in range(10)]
    many[6][123] = np.inf  # past clip.SMALL in all: one array into the kernel (numba)
    each = sum(float(np.sum(np.clip(g.astype(np.float64), -1.5, 1.5) ** 2)) for g in many)
    assert sum_of_squares(be, many, 1.5) == pytest.approx(each, rel=1e-13)
    assert sum_of_squares(be, many, 1.5, strict=True) == math.inf == max_abs(be, many)
    many[2][5] = np.nan
    assert math.isnan(max_abs(be, many)) and math.isnan(sum_of_squares(be, many))


def test_clip_grad_norm_errors_and_paths():
    for bad in (-1.0, math.nan, True, "1"):
        with pytest.raises(ValueError, match="max_norm must be a number >= 0"):
            fastgd.clip_grad_norm([np.ones(3)], bad)
    assert fastgd.clip_grad_norm([], 1.0) == 0.0 == fastgd.clip_grad_norm({}, 1.0)  # as torch
    g = [np.full(4, 2.0), np.full(1, 4.0, np.float64)]
    assert fastgd.clip_grad_norm(g, math.inf) == pytest.approx(math.sqrt(32))  # measure only
    assert np.array_equal(g[0], np.full(4, 2.0))
    assert fastgd.clip_grad_norm(g, 0.0) == pytest.approx(math.sqrt(32))  # zeroes, as torch
    assert not g[0].any() and not g[1].any()
    with pytest.raises(TypeError, match="float32 and float64"):
        fastgd.clip_grad_norm([np.ones(3, np.int64)], 1.0)
    # clipped in place: a list, or a byte-swapped array, would be clipped in a lost copy
    with pytest.raises(TypeError, match=r"grads\[1\] is not an array: list"):
        fastgd.clip_grad_norm([np.ones(3), [30.0, 40.0]], 1.0)
    with pytest.raises(TypeError, match="non-native byte order"):
        fastgd.clip_grad_norm([np.full(3, 30.0).astype(">f8")], 1.0)
    with pytest.raises(ValueError, match="C-contiguous and writable"):
        fastgd.clip_grad_norm([np.ones((4, 4))[:, 0]], 1.0)
    buf = fastgd.ParamBuffer({"a": 3, "b": 4}, np.float64)
    buf.grads["a"][...] = 3.0
    buf.grads["b"][...] = 4.0
    total = fastgd.clip_grad_norm(buf, 1.0)
    assert total == pytest.approx(math.sqrt(27 + 64))
    assert np.linalg.norm(buf.flat_grads) == pytest.approx(1.0, rel=1e-6)
    g = [np.array([1.0, np.nan])]
    assert math.isnan(fastgd.clip_grad_norm(g, 1.0))
    assert np.isnan(g[0]).all()  # as torch: multiplied by a NaN coefficient


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_skip_nonfinite_leaves_everything_untouched(name, backend):
    params, grad_seq = make_problem(6)
    p = {k: v.copy() for k, v in params.items()}
    opt = getattr(fastgd, name)(p, skip_nonfinite=True, backend=backend, **options_for(name))
    for g in grad_seq[:3]:
        info = opt.step(g)
        assert not info.skipped and math.isfinite(info.grad_norm)
    before_p = {k: v.copy() for k, v in p.items()}
    before_s = {k: {s: a.copy() for s, a in st.items()} for k, st in opt.state.items()}
    for bad in (np.nan, np.inf, -np.inf):
        g = {k: v.copy() for k, v in grad_seq[3].items()}
        g["b"][3] = bad
        info = opt.step(g)
        assert info.skipped and info.step == 3 and not math.isfinite(info.grad_norm)
        assert opt.step_count == 3
        for k in p:
            np.testing.assert_array_equal(p[k], before_p[k])
            for s in before_s[k]:
                np.testing.assert_array_equal(opt.state[k][s], before_s[k][s])
    # the run goes on as if the bad steps never happened
    for g in grad_seq[3:]:
        opt.step(g)
    options = {"lr": opt._lr, **options_for(name)}
    h = {k: getattr(opt, k) for k in ("betas",) if hasattr(opt, k)}
    ref, _ = textbook(name, {**h, **options}, params, grad_seq)
    for k in p:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [5, 70_001])  # one row, and rows past clip.CHUNK
def test_skip_nonfinite_sees_an_inf_that_clip_value_clamps(backend, n):
    """skip_nonfinite skips a step whose raw gradient holds ±inf also under clip_value (an
    overflow is what it guards against); without it, clip_value clamps the inf as torch's
    clip_grad_value_ does, and the step goes on."""
    g = np.linspace(-1, 1, n)
    g[n // 2] = np.inf
    p = np.zeros(n)
    opt = fastgd.Adam([p], lr=0.1, clip_value=0.5, skip_nonfinite=True, backend=backend)
    info = opt.step([g])
    assert info.skipped and info.grad_norm == math.inf and (p == 0).all()
    opt = fastgd.Adam([p], lr=0.1, clip_value=0.5, max_grad_norm=1e3, backend=backend)
    info = opt.step([g])
    assert not info.skipped
    assert info.grad_norm == pytest.approx(np.linalg.norm(np.clip(g, -0.5, 0.5)), rel=1e-12)
    assert p[n // 2] == pytest.approx(-0.1)  # Adam's first step: -lr·sign(g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_info(backend):
    p = {"w": np.ones(4)}
    opt = fastgd.SGD(p, lr=fastgd.schedules.step(0.1, 1, 0.5), max_grad_norm=1.0,
                     backend=backend)
    info = opt.step({"w": np.full(4, 2.0)})
    assert info == (0.1, pytest.approx(4.0), False, 1)
    assert info.lr == 0.1 and info.grad_norm == pytest.approx(4.0) and info.step == 1
    np.testing.assert_allclose(p["w"], 1 - 0.1 * 2.0 / (4.0 + 1e-6))
    info = fastgd.SGD({"w": np.ones(2)}).step({"w": np.ones(2)})
    assert info.grad_norm is None and info.skipped is False


def test_clip_value_alone():
    p = {"w": np.zeros(4)}
    fastgd.SGD(p, lr=1.0, clip_value=0.5).step({"w": np.array([-2.0, -0.1, 0.2, np.inf])})
    np.testing.assert_array_equal(p["w"], [0.5, 0.1, -0.2, -0.5])


def test_mixed_dtypes_and_list_params():
    a, b = np.ones(3, np.float32), np.ones(2, np.float64)
    opt = fastgd.Adam([a, b], lr=0.1)
    opt.step([np.ones(3, np.float32), np.ones(2)])
    np.testing.assert_allclose(a, 0.9, rtol=1e-6)
    np.testing.assert_allclose(b, 1 - 0.1 / (1 + 1e-8), rtol=1e-15)
    assert a.dtype == np.float32 and b.dtype == np.float64
    assert opt.bytes_per_step() == 7 * (3 * 4 + 2 * 8)
    assert "Adam 2 tensors on numba" in repr(opt)


def test_bytes_per_step_counts_streams():
    n = 1000
    count = lambda cls, **k: cls({"w": np.zeros(n, np.float32)}, **k).bytes_per_step() / n
    assert count(fastgd.SGD) == 12
    assert count(fastgd.SGD, momentum=0.9) == 20
    assert count(fastgd.Adam) == 28 and count(fastgd.AdamW) == 28
    assert count(fastgd.Adam, amsgrad=True) == 36


def test_empty_and_zero_size_params():
    p = {"w": np.zeros(0), "b": np.ones(2)}
    opt = fastgd.Adam(p, max_grad_norm=1.0)
    opt.step({"w": np.zeros(0), "b": np.ones(2)})
    assert p["w"].size == 0 and (p["b"] < 1).all()


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("lr", [-1e-3, float("nan"), float("inf")])
def test_bad_lr(name, lr):
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        getattr(fastgd, name)({"w": np.zeros(2)}, lr=lr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_zero_moves_nothing_but_the_state_as_torch(backend):
    """torch.optim takes lr=0 (a step that only updates the optimizer's statistics)."""
    p, g = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    opt = fastgd.Adam([p], lr=0.0, backend=backend)
    opt.step([g])
    tp = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.0)
    tp.grad = torch.tensor(g)
    topt.step()
    np.testing.assert_array_equal(p, [1.0, -2.0])
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], topt.state[tp]["exp_avg_sq"].numpy(),
                               rtol=1e-15)


BAD_OPTIONS = [
    ("Adam", dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
    ("AdamW", dict(betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\)"),
    ("NAdam", dict(betas=(0.9, float("nan"))), r"betas\[1\] must be in \[0, 1\)"),
    ("Lion", dict(betas=(0.9,)), "betas must be a pair"),
    ("RAdam", dict(eps=-1.0), "eps must be a finite number >= 0"),
    ("Adamax", dict(eps=-1e-8), "eps must be a finite number >= 0"),
    ("Adagrad", dict(eps=float("nan")), "eps must be a finite number >= 0"),
    ("RMSprop", dict(eps=float("inf")), "eps must be a finite number >= 0"),
    ("SGD", dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
    ("Adam", dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
    ("Lion", dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    ("SGD", dict(nesterov=True), "nesterov momentum needs momentum > 0 and dampening = 0"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov momentum needs"),
    ("SGD", dict(momentum=-0.5), "momentum must be a finite number >= 0"),
    ("RMSprop", dict(alpha=1.5), r"alpha must be in \[0, 1\]"),
    ("SGD", dict(lr=lambda s: True), "the lr schedule returned True at step 0"),
    ("Adagrad", dict(lr_decay=-1.0), "lr_decay must be"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value must be"),
    ("NAdam", dict(momentum_decay=-1.0), "momentum_decay must be"),
    ("Adam", dict(max_grad_norm=-1.0), r"max_grad_norm must be a number >= 0 \(inf"),
    ("SGD", dict(momentum=0.9, dampening=float("inf")), "dampening must be a finite number"),
    ("Adam", dict(clip_value=-1.0), "clip_value must be a finite number > 0"),
    ("SGD", dict(lr="fast"), "lr must be a number"),
    ("Adam", dict(maximize="false"), "maximize must be True or False, got 'false'"),  # was on
    ("SGD", dict(momentum=0.9, nesterov=2), "nesterov must be True or False"),
    ("SGD", dict(lr=lambda s: float("nan")), "the lr schedule returned nan at step 0"),
    ("SGD", dict(lr=lambda s: "x"), "the lr schedule returned 'x' at step 0"),
    ("SGD", dict(lr=lambda s: "0.1"), "the lr schedule returned '0.1' at step 0"),  # as lr=
]


@pytest.mark.parametrize("name,options,msg", BAD_OPTIONS)
def test_bad_hyperparameters(name, options, msg):
    with pytest.raises(ValueError, match=msg):
        getattr(fastgd, name)({"w": np.zeros(2)}, **options)


def test_bad_params():
    with pytest.raises(TypeError, match="params must be a list or dict"):
        fastgd.Adam(np.zeros(3))
    with pytest.raises(ValueError, match="got no parameters"):
        fastgd.Adam({})
    with pytest.raises(TypeError, match="param 'w' is not an array: list"):
        fastgd.Adam({"w": [1.0, 2.0]})
    torch = pytest.importorskip("torch")
    t = torch.zeros(3)
    with pytest.raises(TypeError, match=r"param 'w' is not an array: Tensor \(a torch CPU "
                                        r"tensor: pass t.detach\(\).numpy\(\)"):
        fastgd.Adam({"w": t})
    fastgd.SGD({"w": t.detach().numpy()}, lr=1.0).step({"w": np.ones(3, np.float32)})
    assert t.tolist() == [-1.0, -1.0, -1.0]  # the tensor's memory was updated
    with pytest.raises(TypeError, match="float32 and float64 arrays, got param 'w': int64"):
        fastgd.Adam({"w": np.zeros(3, np.int64)})
    with pytest.raises(TypeError, match="param 'w': >f4 \\(non-native byte order\\)"):
        fastgd.Adam({"w": np.zeros(3, ">f4")})  # updated in place: no copy can stand in
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="param 'w' is read-only"):
        fastgd.Adam({"w": ro})
    with pytest.raises(ValueError, match="param 1 is not C-contiguous"):
        fastgd.Adam([np.zeros(3), np.zeros((3, 3))[:, 1]])
    with pytest.raises(ValueError, match="param 'w' is not C-contiguous .*Fortran order"):
        fastgd.Adam({"w": np.zeros((3, 4), order="F")})
    w = np.zeros(10)
    with pytest.raises(ValueError, match="params 'w' and 'v' share memory"):
        fastgd.Adam({"w": w, "b": np.zeros(2), "v": w[5:].reshape(5, 1)})
    with pytest.raises(ValueError, match="params 0 and 2 share memory"):
        fastgd.SGD([w, np.zeros(3), w])  # the same param twice would be updated twice
    fastgd.SGD([w[:5], w[5:]])  # two halves of one buffer are two params
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        fastgd.Adam({"w": np.zeros(3)}, backend="gpu")


def test_params_on_different_backends():
    class FakeDevice:  # anything with __cuda_array_interface__ counts as a device array
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False),
                                    "version": 3}
        dtype, shape = np.dtype(np.float32), (3,)

    with pytest.raises(ValueError, match="'w' is a host array, 'v' a device array"):
        fastgd.Adam({"w": np.zeros(3, np.float32), "v": FakeDevice()})


def test_schedule_going_bad_mid_run_writes_nothing():
    p = {"w": np.ones(3)}
    opt = fastgd.SGD(p, lr=lambda s: 0.1 if s < 1 else -1.0)
    opt.step({"w": np.ones(3)})
    with pytest.raises(ValueError, match="the lr schedule returned -1.0 at step 1"):
        opt.step({"w": np.ones(3)})
    np.testing.assert_allclose(p["w"], 0.9)
    assert opt.step_count == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_grads_raise_before_writing(backend):
    p = {"w": np.ones((2, 3)), "b": np.ones(3)}
    opt = fastgd.Adam(p, lr=0.1, backend=backend)
    good = {"w": np.ones((2, 3)), "b": np.ones(3)}
    cases = [
        ({"w": good["w"]}, "grads has no entry for param 'b'"),
        ({**good, "x": np.ones(3)}, "grads has 'x', which is not a param"),
        ({"w": np.ones((3, 2)), "b": np.ones(2)},
         r"grad 'w' has shape \(3, 2\), expected \(2, 3\)"),
        ({"w": good["w"], "b": np.ones(3, np.float32)},
         "grad 'b' has dtype float32, expected float64"),
        ({"w": [[1.0] * 3] * 2, "b": good["b"]}, r"grad 'w' is not an array \(list\)"),
        ([good["w"], good["b"]], "grads must be a dict with the params' names"),
    ]
    for grads, msg in cases:
        with pytest.raises(ValueError, match=msg):
            opt.step(grads)
    assert opt.step_count == 0
    np.testing.assert_array_equal(p["w"], 1.0)
    np.testing.assert_array_equal(opt.state["b"]["exp_avg"], 0.0)
    lst = fastgd.SGD([np.ones(2), np.ones(3)], backend=backend)
    with pytest.raises(ValueError, match="grads has 1 arrays, params has 2"):
        lst.step([np.ones(2)])
    with pytest.raises(ValueError, match="grads must be a list of 2 arrays"):
        lst.step({"0": np.ones(2)})
    with pytest.raises(ValueError, match="grad 1 has shape"):
        lst.step([np.ones(2), np.ones(4)])


def test_non_contiguous_grads_are_read():
    p = {"w": np.zeros(3)}
    fastgd.SGD(p, lr=1.0).step({"w": np.arange(6.0)[::2]})
    np.testing.assert_array_equal(p["w"], [0.0, -2.0, -4.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffer_and_state_views_cannot_be_replaced(backend):
    """An array put in place of a ParamBuffer view or of an optimizer's state view was left
    out of every step (step(buf.grads) used the old gradients), of state_dict and of
    load_state_dict: the mappings are read-only; writing into the views still works."""
    buf = fastgd.ParamBuffer({"w": 3, "b": 2}, np.float64, backend=backend)
    opt = fastgd.Adam(buf, lr=0.1)
    for mapping in (buf.params, buf.grads, opt.state, opt.state["w"]):
        with pytest.raises(TypeError):
            mapping["w" if mapping is not opt.state["w"] else "exp_avg"] = np.ones(3)
    buf.grads["w"][...] = 1.0
    opt.step(buf.grads)
    np.testing.assert_allclose(buf.params["w"], -0.1, rtol=1e-6)  # Adam's first step
    assert (buf.params["b"] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffer_grads_given_from_the_buffers_own_storage(backend):
    """Grads that are other tensors' views of the buffer's gradients (swapped, or shifted
    slices) are read before any is written: copied one by one, a later source had already
    been overwritten."""
    buf = fastgd.ParamBuffer({"a": 3, "b": 3}, np.float64, backend=backend)
    buf.grads["a"][...] = 1.0
    buf.grads["b"][...] = 2.0
    fastgd.SGD(buf, lr=1.0).step({"a": buf.grads["b"], "b": buf.grads["a"]})
    np.testing.assert_array_equal(buf.params["a"], -2.0)
    np.testing.assert_array_equal(buf.params["b"], -1.0)
    other = fastgd.ParamBuffer({"a": 3, "b": 3}, np.float64, backend=backend)
    other.flat_grads[...] = np.arange(6.0)
    want = {"a": other.flat_grads[1:4].copy(), "b": other.flat_grads[2:5].copy()}
    fastgd.SGD(other, lr=1.0).step({"a": other.flat_grads[1:4], "b": other.flat_grads[2:5]})
    np.testing.assert_array_equal(other.params["a"], -want["a"])
    np.testing.assert_array_equal(other.params["b"], -want["b"])


def test_param_names_must_differ_as_text():
    """0 and "0" were one state_dict entry, and a load gave both params the same state."""
    with pytest.raises(ValueError, match="param names must differ as text.*'0'"):
        fastgd.Adam({0: np.ones(2), "0": np.ones(2)}, lr=0.1)
    with pytest.raises(ValueError, match="param names must differ as text"):
        fastgd.Adam(fastgd.ParamBuffer({0: 2, "0": 3}, np.float64), lr=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hyperparameters_changed_between_steps_act_as_torch_param_groups(backend):
    """lr, momentum, weight_decay, betas and eps set on the optimizer take effect at the next
    step, as edits of torch's param_groups do (lr had no setter)."""
    torch = pytest.importorskip("torch")

    rng = np.random.default_rng(8)
    p0, grads = rng.normal(size=6), rng.normal(size=(6, 6))
    for name, first, later in (
            ("SGD", dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
            ("Adam", dict(lr=0.01), dict(lr=0.002, betas=(0.5, 0.9), eps=1e-3)),
            ("RMSprop", dict(lr=0.01, momentum=0.9), dict(momentum=0.2, alpha=0.5))):
        mine = {"w": p0.copy()}
        opt = getattr(fastgd, name)(mine, backend=backend, **first)
        tp = torch.tensor(p0.copy(), requires_grad=True)
        topt = getattr(torch.optim, name)([tp], **first)
        for k, g in enumerate(grads):
            if k == 3:
                for key, value in later.items():
                    setattr(opt, key, value)
                    topt.param_groups[0][key] = value
            opt.step({"w": g})
            tp.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(mine["w"], tp.detach().numpy(), rtol=1e-13, err_msg=name)
        assert opt.lr == later.get("lr", first["lr"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,setting,value", [
    ("SGD", "momentum", 0.0), ("RMSprop", "momentum", 0.0), ("RMSprop", "centered", True),
    ("Adam", "amsgrad", True), ("AdamW", "amsgrad", True)])
def test_a_change_of_rule_after_construction_is_refused(backend, name, setting, value):
    """SGD's momentum from 0.9 to 0 chose another scalar layout for the kernel built for
    momentum: it read past its scalars (an out-of-bounds read in the numba kernel)."""
    kw = {"momentum": 0.9} if setting == "momentum" else {}
    p = {"w": np.ones(4)}
    opt = getattr(fastgd, name)(p, lr=0.1, backend=backend, **kw)
    opt.step({"w": np.ones(4)})
    before = getattr(opt, setting)
    with pytest.raises(ValueError, match=f"{setting}={value!r} would change {name}'s rule"):
        setattr(opt, setting, value)
    assert getattr(opt, setting) == before
    opt.step({"w": np.ones(4)})  # the optimizer goes on as it was
    want = {"w": np.ones(4)}
    ref = getattr(fastgd, name)(want, lr=0.1, backend="numpy", **kw)
    ref.step({"w": np.ones(4)})
    ref.step({"w": np.ones(4)})
    np.testing.assert_allclose(p["w"], want["w"], rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_guards_and_lr_set_after_construction(backend):
    """clip_value, max_grad_norm and skip_nonfinite were read once, when the optimizer was
    built: set later they were silently ignored."""
    p = {"w": np.zeros(2)}
    opt = fastgd.SGD(p, lr=1.0, backend=backend)
    opt.clip_value = 0.5
    opt.step({"w": np.array([3.0, -3.0])})
    np.testing.assert_array_equal(p["w"], [-0.5, 0.5])
    opt.clip_value = None
    opt.max_grad_norm = 1.0
    info = opt.step({"w": np.array([3.0, 4.0])})
    assert info.grad_norm == 5.0
    np.testing.assert_allclose(p["w"], [-0.5 - 0.6, 0.5 - 0.8], rtol=1e-6)
    opt.skip_nonfinite = True
    assert opt.step({"w": np.array([np.nan, 1.0])}).skipped
    opt.lr = fastgd.schedules.constant(0.5)
    assert opt.lr == 0.5
    for bad, match in ((("clip_value", -1.0), "clip_value must be a finite number > 0"),
                       (("lr", -0.1), "lr must be a finite number >= 0"),
                       (("lr", lambda s: math.nan), "the lr schedule returned nan at step 2"),
                       (("momentum", -1.0), "momentum must be")):
        with pytest.raises(ValueError, match=match):
            setattr(opt, *bad)
    assert opt.lr == 0.5 and opt.clip_value is None  # left as they were


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_finite_float64_gradients_are_not_skipped(backend):
    """Squares of 1e200 overflow float64: the norm was inf, so skip_nonfinite skipped a step
    whose gradients were all finite, and max_grad_norm zeroed them (as torch's does)."""
    p = {"w": np.zeros(3)}
    opt = fastgd.SGD(p, lr=1.0, max_grad_norm=1.0, skip_nonfinite=True, backend=backend)
    info = opt.step({"w": np.array([3e200, 4e200, 0.0])})
    assert not info.skipped and info.grad_norm == pytest.approx(5e200, rel=1e-14)
    np.testing.assert_allclose(p["w"], [-0.6, -0.8, 0.0], rtol=1e-12)
    assert opt.step({"w": np.array([1e200, np.inf, 0.0])}).skipped  # an inf still is
    g = [np.array([3e200]), np.array([4e200])]
    assert fastgd.clip_grad_norm(g, 1.0, backend=backend) == pytest.approx(5e200, rel=1e-14)
    np.testing.assert_allclose(np.concatenate(g), [0.6, 0.8], rtol=1e-12)


def test_load_state_dict_checks_host_values_before_writing():
    opt = fastgd.NAdam({"w": np.ones(3)}, lr=0.1)
    opt.step({"w": np.ones(3)})
    good = opt.state_dict()
    for bad, match in ((np.array([0.5, 0.5]), "must be one finite number"),
                       (np.array(np.nan), "must be one finite number"),
                       (np.array(-0.5), r"must be in \[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict({**good, "extra/mu_product": bad,
                                 "state/w/exp_avg": np.full(3, 7.0)})
        assert not (opt.state["w"]["exp_avg"] == 7.0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_zero_and_rmsprop_alpha_one_as_torch(backend):
    """torch.optim takes eps = 0 and RMSprop's alpha = 1 (square_avg stays 0)."""
    torch = pytest.importorskip("torch")

    rng = np.random.default_rng(2)
    p0, grads = rng.normal(size=5), rng.normal(size=(3, 5))
    for name, kw in (("Adam", dict(lr=0.01, eps=0.0)), ("RMSprop", dict(lr=0.01, alpha=1.0)),
                     ("Adagrad", dict(lr=0.1, eps=0.0))):
        mine = {"w": p0.copy()}
        opt = getattr(fastgd, name)(mine, backend=backend, **kw)
        tp = torch.tensor(p0.copy(), requires_grad=True)
        topt = getattr(torch.optim, name)([tp], **kw)
        for g in grads:
            opt.step({"w": g})
            tp.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(mine["w"], tp.detach().numpy(), rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,options", [
    ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.1)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1))])
def test_compiled_rules_round_as_written(name, options, dtype):
    """The numba kernels compile the rules in IEEE arithmetic (no FMA contraction): SGD,
    RMSprop and Lion equal the NumPy reference bit for bit, and a tensor's result does not
    depend on where it sits (a ParamBuffer of 1 + 36 elements against one of 5 + 32)."""
    rng = np.random.default_rng(6)
    p0 = rng.normal(size=37).astype(dtype)
    grads = rng.normal(size=(5, 37)).astype(dtype)
    results = []
    for backend, split in (("numpy", None), ("numba", None), ("numba", 1), ("numba", 5)):
        if split is None:
            p = {"w": p0.copy()}
            opt = getattr(fastgd, name)(p, backend=backend, **options)
            for g in grads:
                opt.step({"w": g})
            results.append(p["w"])
            continue
        buf = fastgd.ParamBuffer({"a": split, "b": 37 - split}, dtype, backend=backend)
        buf.params["a"][...], buf.params["b"][...] = p0[:split], p0[split:]
        opt = getattr(fastgd, name)(buf, **options)
        for g in grads:
            buf.grads["a"][...], buf.grads["b"][...] = g[:split], g[split:]
            opt.step()
        results.append(np.concatenate([buf.params["a"], buf.params["b"]]))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


def test_inf_gradients_skip_without_a_numpy_warning():
    """The rescaled second pass of the norm ran in float32 on the NumPy backend: 2^-600 was
    0 there and inf·0 warned 'invalid value' (an error under -W error)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for backend in BACKENDS:
            opt = fastgd.Adam({"w": np.zeros(3, np.float32)}, skip_nonfinite=True,
                              backend=backend)
            info = opt.step({"w": np.array([np.inf, 1, 2], np.float32)})
            assert info.skipped and info.grad_norm == math.inf


def test_nadam_state_with_a_product_of_zero_loads():
    """betas[0] = 0 makes mu_product 0 after a step (and 0.5 underflows to it): its own
    state_dict was refused."""
    opt = fastgd.NAdam({"w": np.ones(2)}, betas=(0.0, 0.999), backend="numpy")
    opt.step({"w": np.full(2, 0.1)})
    again = fastgd.NAdam({"w": np.ones(2)}, betas=(0.0, 0.999), backend="numpy")
    again.load_state_dict(opt.state_dict())
    assert again.mu_product == opt.mu_product == 0.0


def test_settings_that_do_not_go_together_are_refused_after_construction_too():
    opt = fastgd.SGD({"w": np.ones(2)}, lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="nesterov momentum needs"):
        opt.dampening = 0.5
    assert opt.dampening == 0.0
    plain = fastgd.SGD({"w": np.ones(2)}, lr=0.1)
    with pytest.raises(ValueError, match="nesterov momentum needs"):
        plain.nesterov = True
    assert plain.nesterov is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_grad_norm_inf_measures_and_zero_freezes(backend):
    p = {"w": np.zeros(2)}
    opt = fastgd.SGD(p, lr=1.0, max_grad_norm=math.inf, backend=backend)
    assert opt.step({"w": np.array([3.0, 4.0])}).grad_norm == 5.0
    np.testing.assert_array_equal(p["w"], [-3.0, -4.0])
    opt.max_grad_norm = 0.0
    opt.step({"w": np.array([3.0, 4.0])})
    np.testing.assert_array_equal(p["w"], [-3.0, -4.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ALL)
def test_every_rule_equals_the_numpy_reference_bit_for_bit(name, dtype):
    """The compiled rules round as written, and the NumPy reference writes torch's order of
    operations (addcdiv's (c·m)/denom, RAdam's ((m/bc1)·lr)·adaptive·r): equal in every bit,
    clipping, decay and a schedule included."""
    rng = np.random.default_rng(9)
    p0 = rng.normal(size=1000).astype(dtype)
    grads = rng.normal(size=(6, 1000)).astype(dtype)
    options = {**options_for(name), "clip_value": 1.5,
               "lr": fastgd.schedules.warmup_cosine(1e-2, warmup=2, total=6)}
    if name in ("SGD", "Adagrad", "RMSprop", "Adam", "NAdam", "RAdam", "Adamax"):
        options["weight_decay"] = 0.01
    results = []
    for backend in ("numpy", "numba"):
        p = {"w": p0.copy()}
        opt = getattr(fastgd, name)(p, backend=backend, **options)
        for g in grads:
            opt.step({"w": g})
        results.append(p["w"])
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,options", [
    ("Adam", dict(betas=(0.1, 0.34))), ("AdamW", dict(betas=(0.2, 0.995))),
    ("NAdam", dict(betas=(0.4, 0.34))), ("RAdam", dict(betas=(0.5 + 2**-30, 0.98))),
    ("Adamax", dict(betas=(0.2, 0.34))), ("RMSprop", dict(alpha=0.1, centered=True))])
def test_numba_equals_the_reference_where_torchs_scalar_rounding_matters(name, options, dtype):
    """Two host-side roundings where the NumPy reference and torch (and so the kernels)
    parted: √(1 − β2^t) as torch's ``**0.5``, which is not always ``math.sqrt``'s (Adam 25
    elements of 1000 differed with β2 = 0.34, float64), and a lerp weight ≥ 0.5 (β1 < 0.5,
    RMSprop α < 0.5) taken in the tensor's dtype, 1 − w included, where the reference took
    it in float64 (24 and 306 elements in float32; β1 = 0.5 + 2^-30 took the other branch)."""
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=1000).astype(dtype)
    grads = rng.normal(size=(12, 1000)).astype(dtype)
    results = []
    for backend in ("numpy", "numba"):
        p = {"w": p0.copy()}
        opt = getattr(fastgd, name)(p, lr=1e-2, backend=backend, **options)
        for g in grads:
            opt.step({"w": g})
        results.append(p["w"])
    np.testing.assert_array_equal(results[1], results[0])


def test_a_setting_the_optimizer_does_not_have_is_refused():
    """``opt.momentum = 0.9`` on Adam, ``opt.betas`` on SGD, a typo such as
    ``opt.learning_rate``: they were stored and did nothing."""
    adam = fastgd.Adam([np.ones(3)], lr=1e-3, backend="numpy")
    sgd = fastgd.SGD([np.ones(3)], lr=0.1, momentum=0.9, backend="numpy")
    for opt, name, value in ((adam, "momentum", 0.9), (adam, "learning_rate", 0.5),
                             (sgd, "betas", (0.9, 0.99))):
        with pytest.raises(AttributeError, match=f"has no setting '{name}'.* it has .*lr"):
            setattr(opt, name, value)
        assert name not in vars(opt)
    adam.betas, adam.lr, sgd.momentum = (0.8, 0.9), 0.01, 0.5  # its own: still taken
    assert adam.betas == (0.8, 0.9) and adam.lr == 0.01 and sgd.momentum == 0.5
    for name in ("state", "params"):  # replaced, state_dict() failed with a KeyError
        with pytest.raises(AttributeError, match=f"Adam.{name} is the optimizer's own"):
            setattr(adam, name, {})
    assert adam.state_dict()["step"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_norm_takes_one_array_as_torch_takes_one_tensor(backend):
    """It iterated over the array's rows ('grads[0] is not an array: float64')."""
    g = np.full((2, 2), 3.0)
    assert fastgd.clip_grad_norm(g, 1.0, backend=backend) == pytest.approx(6.0)
    np.testing.assert_allclose(g, 3.0 / (6.0 + 1e-6))


def test_a_subclass_may_add_attributes_of_its_own():
    """The refusal of unknown settings is for fastgd's own optimizers: a subclass setting
    self.tag after super().__init__ failed."""
    class Tagged(fastgd.Adam):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self.tag = "run-1"

    opt = Tagged([np.ones(3)], lr=0.1, backend="numpy")
    assert opt.tag == "run-1"
    opt.step([np.ones(3)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_measuring_the_norm_changes_nothing_also_where_it_is_inf(backend):
    """max_grad_norm=inf (and clip_grad_norm's max_norm=inf) only measures: an inf gradient
    element made every parameter NaN through a coefficient inf/inf."""
    g = np.array([1, 1, 1, np.inf], np.float32)
    p, q = {"w": np.ones(4, np.float32)}, {"w": np.ones(4, np.float32)}
    info = fastgd.Adam(p, lr=0.1, max_grad_norm=math.inf, backend=backend).step({"w": g})
    fastgd.Adam(q, lr=0.1, backend=backend).step({"w": g.copy()})
    assert info.grad_norm == math.inf
    np.testing.assert_array_equal(p["w"], q["w"])  # [0.9, 0.9, 0.9, nan]
    strided = np.full((3, 3), 2.0)[:, 0]  # measured without being written: any layout
    strided.flags.writeable = False
    grads = [g.copy(), strided]  # and mixed dtypes
    assert fastgd.clip_grad_norm(grads, math.inf, backend=backend) == math.inf
    np.testing.assert_array_equal(grads[0], g)
    grads[0] = np.full(3, 3.0, np.float32)
    assert fastgd.clip_grad_norm(grads, math.inf, backend=backend) == pytest.approx(
        math.sqrt(27 + 12), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_norm_of_mixed_dtypes_as_torch(backend):
    torch = pytest.importorskip("torch")
    g = {"w": np.full(3, 3.0, np.float32), "b": np.full(2, 4.0)}
    t = [torch.tensor(a).requires_grad_() for a in g.values()]
    for a, tt in zip(g.values(), t):
        tt.grad = torch.tensor(a.copy())
    want = float(torch.nn.utils.clip_grad_norm_(t, 1.0))
    assert fastgd.clip_grad_norm(g, 1.0, backend=backend) == pytest.approx(want, rel=1e-6)
    for a, tt in zip(g.values(), t):
        np.testing.assert_allclose(a, tt.grad.numpy(), rtol=1e-6)


def test_adamax_has_no_decoupled_weight_decay_setting():
    opt = fastgd.Adamax([np.ones(3)], lr=0.1, weight_decay=0.5)
    with pytest.raises(AttributeError, match="has no setting 'decoupled_weight_decay'"):
        opt.decoupled_weight_decay = True  # it was kept, and did nothing


def test_gradient_norms_agree_across_the_small_array_threshold():
    """Host arrays up to clip.SMALL elements are summed by NumPy, larger ones by a kernel:
    both clamp at the float64 clip (NumPy had clamped float32 gradients at float32(clip),
    4e-8 relative apart)."""
    from fastgd.optim import clip

    norms = []
    for n in (clip.SMALL, clip.SMALL + 1):
        for backend in ("numba", "numpy"):
            opt = fastgd.SGD({"w": np.ones(n, np.float32)}, lr=0.1, clip_value=0.3,
                             max_grad_norm=1e9, backend=backend)
            norms.append(opt.step({"w": np.full(n, 0.5, np.float32)}).grad_norm / math.sqrt(n))
    assert max(norms) - min(norms) <= 1e-12 and norms[0] == pytest.approx(0.3, rel=1e-12)


# -- inputs found by the optimizer audit ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_np_matrix_gradients_update_every_param(backend):
    """An np.matrix gradient (its reshape(-1) is (1, n)) updates its param like an array;
    the second tensor's update had failed after the first was written."""
    got = [np.ones((2, 3)), np.ones((2, 3))]
    want = [np.ones((2, 3)), np.ones((2, 3))]
    grads = [np.full((2, 3), 0.5), np.arange(6.0).reshape(2, 3)]
    with warnings.catch_warnings():  # numpy's PendingDeprecationWarning for np.matrix
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        fastgd.Adam(got, lr=0.1, backend=backend).step([grads[0], np.asmatrix(grads[1])])
    fastgd.Adam(want, lr=0.1, backend=backend).step(grads)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["AdamW", "Lion", "NAdam", "RAdam"])
def test_a_gradient_that_is_the_param_itself(name, backend):
    """The gradient of |p|²/2 is p: step([p]) reads it before the decoupled weight decay
    writes p, as torch (the NumPy backend read the decayed p)."""
    kwargs = {"weight_decay": 0.5}
    if name in ("NAdam", "RAdam"):
        kwargs["decoupled_weight_decay"] = True
    p = np.array([1.0, -2.0, 3.0])
    q = p.copy()
    a = OPTIMIZERS[name]([p], lr=0.1, backend=backend, **kwargs)
    b = OPTIMIZERS[name]([q], lr=0.1, backend=backend, **kwargs)
    for _ in range(3):
        a.step([p])
        b.step([q.copy()])
    np.testing.assert_array_equal(p, q)
    for key in a.state[0]:
        np.testing.assert_array_equal(a.state[0][key], b.state[0][key])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("view", ["reversed", "shifted"])
def test_a_gradient_over_its_param_at_an_offset(name, backend, view):
    """A gradient that is a view of its own parameter elsewhere than element for element:
    read whole before the step writes p (the Numba kernel read elements it had already
    written: SGD of p = 1..8 with g = p[::-1] gave 4.25 where 3 was right)."""
    buf = np.arange(1, 41, dtype=np.float32)
    p, g = (buf, buf[::-1]) if view == "reversed" else (buf[4:], buf[:-4])
    q = p.copy()
    a = OPTIMIZERS[name]([p], lr=0.5, backend=backend)
    b = OPTIMIZERS[name]([q], lr=0.5, backend=backend)
    for _ in range(3):
        want = g.copy()
        a.step([g])
        b.step([want])
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_gradients_over_other_params_and_state_are_read_before_the_step(name, backend):
    """A gradient that is another parameter's array (stepped before its own), or a view of
    one, or an optimizer state array: the step equals the step from copies of them (an
    audit: b's gradient a was read after a's update; the NumPy step read a state gradient
    after updating that state)."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal(12)  # three params, views of one buffer, and their twins
    (a, b, c), (ra, rb, rc) = ([buf[:4], buf[4:8], buf[8:]] for buf in (start, start.copy()))
    opt = OPTIMIZERS[name]([a, b, c], lr=0.1, backend=backend)
    ref = OPTIMIZERS[name]([ra, rb, rc], lr=0.1, backend=backend)
    first = [rng.standard_normal(4) for _ in range(3)]
    opt.step(first)
    ref.step([g.copy() for g in first])
    crossed = [[b, a, c[::-1]], [rb, ra, rc[::-1]]]
    keys = list(opt.state[0])
    if keys:  # a state array of another parameter and one of the parameter's own
        crossed.append([opt.state[1][keys[0]], opt.state[1][keys[-1]], a])
        crossed.append([ref.state[1][keys[0]], ref.state[1][keys[-1]], ra])
    for grads, want in zip(crossed[::2], crossed[1::2]):
        opt.step(grads)
        ref.step([g.copy() for g in want])
        for got, expected in ((a, ra), (b, rb), (c, rc)):
            np.testing.assert_array_equal(got, expected)
        for k in range(3):
            for key in keys:
                np.testing.assert_array_equal(opt.state[k][key], ref.state[k][key])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_groups_gradient_over_another_groups_param_is_read_first(backend):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])
    opt = fastgd.Groups(fastgd.SGD({"a": a}, lr=0.5, backend=backend),
                        fastgd.SGD({"b": b}, lr=0.5, backend=backend))
    opt.step({"a": b, "b": a})
    np.testing.assert_array_equal(a, [-4.0, -8.0, -12.0])
    np.testing.assert_array_equal(b, [9.5, 19.0, 28.5])  # from a as it was: 1, 2, 3


def test_a_footprint_knows_memory_by_its_owner_and_its_bytes():
    from fastgd._arrays import Footprint

    raw = bytearray(80)
    p = np.frombuffer(raw, np.float64)[:5]
    other = np.frombuffer(raw, np.float64)  # another memoryview of the same bytes
    buf = np.zeros(20)
    q = buf[10:15]
    fp = Footprint([p, q, np.zeros(0)])
    assert fp.overlaps(other[4:]) and fp.overlaps(other[::-1]) and not fp.overlaps(other[5:])
    assert fp.overlaps(buf[14:16]) and fp.overlaps(buf) and fp.overlaps(q.reshape(1, 5))
    assert not fp.overlaps(buf[:10]) and not fp.overlaps(buf[15:])
    assert not fp.overlaps(np.zeros(5)) and not fp.overlaps(buf[:0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalars_beyond_the_params_dtype(backend):
    """An lr that overflows float32 is refused before anything is written (torch refuses it;
    it wrote -inf); a clip_value beyond float32 is no clip there, without a cast warning
    (under warnings-as-errors the float64 tensor was updated, the float32 one not)."""
    c = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="beyond the range of the float32 params"):
        fastgd.SGD([c], lr=1e39, backend=backend).step([np.ones(3, np.float32)])
    assert (c == 1).all()
    a, b = np.ones(3), np.ones(3, np.float32)
    opt = fastgd.SGD([a, b], lr=0.1, clip_value=1e39, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step([np.full(3, 2.0), np.full(3, np.inf, np.float32)])
    np.testing.assert_array_equal(a, 0.8)
    assert (b == -np.inf).all() and opt.step_count == 1  # the inf gradient, unclipped
    # a float64 param after a float32 one keeps the clip (the float32's inf was taken for all)
    params = {"a32": np.zeros(4, np.float32), "b64": np.zeros(4)}
    opt = fastgd.SGD(params, lr=1.0, clip_value=1e39, backend=backend)
    opt.step({"a32": np.ones(4, np.float32), "b64": np.full(4, 1e300)})
    assert (params["b64"] == -1e39).all() and (params["a32"] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_state_dict_of_its_own_state_swapped(backend):
    opt = fastgd.SGD({"a": np.ones(3), "b": np.ones(3)}, lr=0.1, momentum=0.9, backend=backend)
    opt.step({"a": np.full(3, 1.0), "b": np.full(3, 2.0)})
    opt.load_state_dict({"optimizer": "SGD", "step": 1,
                         "state/a/momentum_buffer": opt.state["b"]["momentum_buffer"],
                         "state/b/momentum_buffer": opt.state["a"]["momentum_buffer"]})
    assert (opt.state["a"]["momentum_buffer"] == 2).all()
    assert (opt.state["b"]["momentum_buffer"] == 1).all()


def test_a_schedule_that_overflows_and_clip_errors_that_name_the_key():
    p = np.ones(3)
    opt = fastgd.SGD([p], lr=fastgd.schedules.exponential(1.0, gamma=10.0))
    for _ in range(3):
        opt.step([np.zeros(3)])
    opt._step = 400
    with pytest.raises(ValueError, match="overflowed at step 400"):
        opt.step([np.ones(3)])
    assert (p == 1).all()
    with pytest.raises(ValueError, match=r"grads\['b'\] must be C-contiguous"):
        fastgd.clip_grad_norm({"w": np.ones(3), "b": np.ones((3, 2))[:, 0]}, 1.0)


def test_a_byte_swapped_gradient_is_named_so():
    opt = fastgd.SGD([np.ones(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match=r"has dtype >f4, expected float32 \(byte-swapped"):
        opt.step([np.ones(3, ">f4")])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_skipped_step_reports_a_nan_gradient_norm_as_nan(backend):
    """With clip_value the NaN could be clamped away before the norm: skip_nonfinite's
    report must still say NaN, not inf (a log searched for NaN missed it)."""
    p, g = np.zeros(10, np.float32), np.ones(10, np.float32)
    g[3] = np.nan
    info = fastgd.SGD([p], lr=0.1, skip_nonfinite=True, clip_value=1.0,
                      backend=backend).step([g])
    assert info.skipped and math.isnan(info.grad_norm)
    np.testing.assert_array_equal(p, 0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_clip_grad_norm_refuses_a_read_only_grad_before_writing_any(backend):
    a, b = np.full(100, 3.0, np.float32), np.full(100, 3.0, np.float32)
    b.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fastgd.clip_grad_norm([a, b], 1.0, backend=backend)
    np.testing.assert_array_equal(a, 3.0)  # the first grad was not clipped either


# -- parameter groups ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_match_torch_param_groups(backend):
    """Weight decay on one group only, another learning rate on the other, and an lr
    changed on one group mid-run: torch's param groups step for step (float64)."""
    rng = np.random.default_rng(9)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    p = {"w": w.copy(), "b": b.copy()}
    opt = fastgd.Groups(fastgd.AdamW({"w": p["w"]}, lr=0.01, weight_decay=0.1, backend=backend),
                        fastgd.AdamW({"b": p["b"]}, lr=0.05, weight_decay=0.0, backend=backend))
    assert list(opt.params) == ["w", "b"] and opt.lr == 0.01
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    topt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1, "lr": 0.01},
                              {"params": [tb], "weight_decay": 0.0, "lr": 0.05}])
    for k in range(12):
        if k == 6:
            opt.optimizers[1].lr = topt.param_groups[1]["lr"] = 0.2
        gw, gb = rng.standard_normal((4, 3)), rng.standard_normal(3)
        info = opt.step({"b": gb, "w": gw})
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
        assert info.step == k + 1 and not info.skipped
    np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p["b"], tb.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_groups_skip_together_and_restore_together():
    """A non-finite gradient in one group skips every group (skip_nonfinite in any); a
    state_dict round-trips, and one a group refuses leaves every group as it was."""
    p = {"w": np.ones(3), "b": np.ones(2)}
    opt = fastgd.Groups([fastgd.SGD({"w": p["w"]}, lr=0.1, skip_nonfinite=True),
                         fastgd.SGD({"b": p["b"]}, lr=0.1, momentum=0.9)])
    info = opt.step({"w": np.ones(3), "b": np.array([1.0, np.inf])})
    assert info.skipped and info.step == 0
    np.testing.assert_array_equal(p["w"], 1.0)
    np.testing.assert_array_equal(p["b"], 1.0)  # the group without the guard: not stepped
    info = opt.step({"w": np.ones(3), "b": np.ones(2)})
    assert not info.skipped and info.step == 1
    assert info.grad_norm == pytest.approx(math.sqrt(5))  # every group's, for the guard
    np.testing.assert_allclose(p["w"], 0.9)
    saved = opt.state_dict()
    assert sorted(saved) == ["group0/optimizer", "group0/step", "group1/optimizer",
                             "group1/state/b/momentum_buffer", "group1/step"]
    opt.step({"w": np.ones(3), "b": np.ones(2)})
    bad = {**saved, "group1/step": np.array(-1)}
    with pytest.raises(ValueError, match="step must be an integer"):
        opt.load_state_dict(bad)
    assert opt.optimizers[0].step_count == 2  # group 0 loaded, then put back
    opt.load_state_dict(saved)
    assert [o.step_count for o in opt.optimizers] == [1, 1]
    for bad, error, match in (({"w": np.ones(3)}, ValueError, "missing \\['b'\\]"),
                              ([np.ones(3)], TypeError, "dict of gradients")):
        with pytest.raises(error, match=match):
            opt.step(bad)
    with pytest.raises(ValueError, match="'w' is in two groups"):
        fastgd.Groups(fastgd.SGD({"w": p["w"]}), fastgd.SGD({"w": p["w"]}))
    # one array under two names, or overlapping views: stepped twice (torch refuses it)
    big = np.zeros(10)
    for a, b in ((p["w"], p["w"]), (big[:6], big[4:])):
        with pytest.raises(ValueError, match="'x' and 'y' share memory"):
            fastgd.Groups(fastgd.SGD({"x": a}), fastgd.SGD({"y": b}))
    with pytest.raises(TypeError, match="group 0 is not an optimizer"):
        fastgd.Groups(fastgd.SGD([p["w"]]))


def test_groups_over_buffers_check_every_gradient_before_writing_any():
    """An audit: a step refused for a later group's gradient had already copied an earlier
    group's into its ParamBuffer."""
    b1 = fastgd.ParamBuffer({"a": (3,)}, dtype=np.float64)
    b2 = fastgd.ParamBuffer({"b": (2,)}, dtype=np.float64)
    opt = fastgd.Groups(fastgd.SGD(b1, lr=0.1), fastgd.SGD(b2, lr=0.1))
    with pytest.raises(ValueError, match=r"grad 'b' has shape \(5,\), expected \(2,\)"):
        opt.step({"a": np.full(3, 7.0), "b": np.ones(5)})
    np.testing.assert_array_equal(b1.flat_grads, 0.0)
    opt.step({"a": np.full(3, 7.0), "b": np.ones(2)})
    np.testing.assert_allclose(b1.params["a"], -0.7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_clip_by_the_norm_of_every_group_as_torch(backend):
    """max_grad_norm in each group clips by the norm of all the groups' gradients, as
    torch's clip_grad_norm_ over every param before the step (a group of small gradients is
    scaled too), and the step reports that norm (found by an audit: each group clipped by
    its own norm)."""
    rng = np.random.default_rng(12)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    p = {"w": w.copy(), "b": b.copy()}
    opt = fastgd.Groups(
        fastgd.Adam({"w": p["w"]}, lr=0.01, max_grad_norm=1.0, backend=backend),
        fastgd.Adam({"b": p["b"]}, lr=0.05, max_grad_norm=1.0, backend=backend))
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    topt = torch.optim.Adam([{"params": [tw], "lr": 0.01}, {"params": [tb], "lr": 0.05}])
    for _ in range(5):
        gw, gb = 3 * rng.standard_normal((4, 3)), 0.01 * rng.standard_normal(3)
        info = opt.step({"w": gw, "b": gb})
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        norm = torch.nn.utils.clip_grad_norm_([tw, tb], 1.0)
        topt.step()
        assert info.grad_norm == pytest.approx(float(norm), rel=1e-14)
    np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p["b"], tb.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_a_step_one_group_refuses_updates_no_group():
    """Every group's gradients and scalars are checked before any group is updated (found
    by an audit: the groups before the one that refused had stepped)."""
    w, b = np.ones(3), np.ones(2, np.float32)
    opt = fastgd.Groups(fastgd.Adam({"w": w}, lr=0.1), fastgd.SGD({"b": b}, lr=0.1))
    with pytest.raises(ValueError, match="grad 'b' has shape"):
        opt.step({"w": np.ones(3), "b": np.ones(5, np.float32)})
    opt.optimizers[1].lr = 1e39  # past float32's range: refused when the step's scalars are
    with pytest.raises(ValueError, match="float32"):
        opt.step({"w": np.ones(3), "b": np.ones(2, np.float32)})
    np.testing.assert_array_equal(w, 1.0)
    np.testing.assert_array_equal(b, 1.0)
    assert [o.step_count for o in opt.optimizers] == [0, 0]
    for moment in opt.optimizers[0].state["w"].values():
        np.testing.assert_array_equal(moment, 0.0)


def test_groups_train_a_model_and_follow_a_plateau():
    """nn.train takes Groups (decay on the weights only) and a ReduceLROnPlateau on it
    reduces each group's learning rate, as torch's reduces each param group's."""
    from fastgd import nn

    model = nn.MLP([64, 16, 10], batch_norm=True, backend="numba", seed=2)
    decay = {k: v for k, v in model.params.items() if k.endswith("weight")}
    rest = {k: v for k, v in model.params.items() if k not in decay}
    opt = fastgd.Groups(fastgd.SGD(decay, lr=0.4, weight_decay=1e-3),
                        fastgd.SGD(rest, lr=0.2))
    plateau = fastgd.schedules.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    h = nn.train(model, nn.datasets.digits(), optimizer=opt, epochs=5, progress=False,
                 plateau=plateau)
    assert h.test_accuracy[-1] > 0.8
    ratio = opt.optimizers[0].lr / opt.optimizers[1].lr
    assert ratio == 2.0 and opt.lr < 0.4  # both halved together


def test_groups_edges_found_by_review():
    """step() without grads checks every ParamBuffer group's gradients before any steps;
    float64 gradients of 1e200 are finite (their norm rescaled, the groups' combined by
    hypot); Groups do not nest; a state_dict missing a group or with an aliased group key
    is refused before anything is written."""
    a = fastgd.ParamBuffer({"w": 3}, np.float64)
    b = fastgd.ParamBuffer({"v": 2}, np.float64)
    a.assign(params={"w": np.ones(3)}, grads={"w": np.ones(3)})
    b.assign(params={"v": np.ones(2)}, grads={"v": [np.nan, 1.0]})
    opt = fastgd.Groups(fastgd.SGD(a, lr=0.1), fastgd.SGD(b, lr=0.1, skip_nonfinite=True))
    info = opt.step()
    assert info.skipped and np.isnan(info.grad_norm)
    np.testing.assert_array_equal(a.flat_params, 1.0)  # the other group not stepped either
    mixed = fastgd.Groups(fastgd.SGD(a, lr=0.1), fastgd.SGD({"u": np.ones(2)}, lr=0.1))
    with pytest.raises(ValueError, match="groups \\[1\\] are not"):
        mixed.step()
    np.testing.assert_array_equal(a.flat_params, 1.0)
    big = fastgd.Groups(fastgd.SGD({"w": np.ones(4)}, lr=1e-300, skip_nonfinite=True),
                        fastgd.SGD({"x": np.ones(1)}, lr=1.0, skip_nonfinite=True))
    info = big.step({"w": np.full(4, 1e200), "x": np.full(1, 3e200)})
    assert not info.skipped and info.grad_norm == pytest.approx(math.hypot(2e200, 3e200))
    with pytest.raises(TypeError, match="group 0 is a Groups"):
        fastgd.Groups(big)
    saved = big.state_dict()
    for bad, match in (({k: v for k, v in saved.items() if k.startswith("group0")},
                        "nothing for groups \\[1\\]"),
                       ({**saved, "group01/step": np.array(3)}, "not 'group<i>/...'")):
        with pytest.raises(ValueError, match=match):
            big.load_state_dict(bad)
    assert [o.step_count for o in big.optimizers] == [1, 1]
