"""fastgd.nn's kernels on the cuda backend (simulator: tiny arrays). The Linear layer's
matrix product goes through CuPy's @, which the simulator lacks, so the fused kernels
around it are tested directly: bias + activation, activation backward + bias gradient,
batch norm, dropout, residual add and the losses."""

import numpy as np
import pytest

import fastgd
from fastgd import nn
from fastgd.nn import functional as F
from fastgd.nn._kernels import get_activation
from tests.cuda.conftest import ROW_THREADS
from tests.helpers import assert_backward_contract, central_difference

dev, host = fastgd.to_device, fastgd.to_host
CUDA = fastgd.get_backend("cuda")
NUMPY = fastgd.get_backend("numpy")
RNG = np.random.default_rng(0)


def _empty(be, shape):
    return be.empty(shape, np.float64)


#: a batch below ROW_THREADS (a thread per feature column) and one above (a block each)
BATCHES = [5, 3 * ROW_THREADS + 1]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh", "identity"])
def test_bias_act_and_backward_match_numpy(act, batch):
    a = get_activation(act)
    shape = (batch, 7)
    h, b = RNG.standard_normal(shape), RNG.standard_normal(7)
    dy = RNG.standard_normal(shape)
    z, y = F.bias_act(CUDA, dev(h), dev(b), a, _empty(CUDA, shape), _empty(CUDA, shape))
    db = _empty(CUDA, (7,))
    dz = F.act_backward(CUDA, dev(dy), z, a, _empty(CUDA, shape), db)
    zr, yr = F.bias_act(NUMPY, h, b, a, np.empty(shape), np.empty(shape))
    dbr = np.empty(7)
    dzr = F.act_backward(NUMPY, dy, zr, a, np.empty(shape), dbr)
    for got, want in ((z, zr), (y, yr), (dz, dzr), (db, dbr)):
        np.testing.assert_allclose(host(got), want, rtol=1e-12, atol=1e-14)


def _bn_forward(be, x, gamma, beta, act):
    n, c = x.shape
    stats = be.empty((3, c), np.float64)
    F.batch_norm_stats(be, x, 1e-5, stats)
    mean, invstd = stats[0], stats[1]
    z, y = F.batch_norm_act(be, x, mean, invstd, gamma, beta, act, be.empty((n, c), np.float64),
                            be.empty((n, c), np.float64))
    return stats, z, y


@pytest.mark.parametrize("batch", BATCHES)
def test_batch_norm_matches_numpy_and_finite_differences(batch):
    act = get_activation("tanh")
    x = RNG.standard_normal((batch, 3)) * 2 + 1
    gamma, beta = np.array([0.5, 1.5, -1.0]), np.array([0.1, -0.2, 0.3])
    w = RNG.standard_normal((batch, 3))
    stats, z, y = _bn_forward(CUDA, dev(x), dev(gamma), dev(beta), act)
    dx, grads = _empty(CUDA, (batch, 3)), _empty(CUDA, (2, 3))
    F.batch_norm_backward(CUDA, dev(w), z, dev(x), stats[0], stats[1], dev(gamma), act, dx,
                          grads)
    stats_r, z_r, y_r = _bn_forward(NUMPY, x, gamma, beta, act)
    np.testing.assert_allclose(host(stats), stats_r, rtol=1e-12)
    np.testing.assert_allclose(host(y), y_r, rtol=1e-12, atol=1e-14)
    dx_r, grads_r = np.empty((batch, 3)), np.empty((2, 3))
    F.batch_norm_backward(NUMPY, w, z_r, x, stats_r[0], stats_r[1], gamma, act, dx_r, grads_r)
    np.testing.assert_allclose(host(dx), dx_r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(grads), grads_r, rtol=1e-10, atol=1e-12)
    # after an eval forward (running statistics: constants), on the same numbers
    dx_e, grads_e = _empty(CUDA, (batch, 3)), _empty(CUDA, (2, 3))
    F.batch_norm_backward(CUDA, dev(w), z, dev(x), stats[0], stats[1], dev(gamma), act, dx_e,
                          grads_e, train=False)
    F.batch_norm_backward(NUMPY, w, z_r, x, stats_r[0], stats_r[1], gamma, act, dx_r, grads_r,
                          train=False)
    np.testing.assert_allclose(host(dx_e), dx_r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(grads_e), grads_r, rtol=1e-10, atol=1e-12)
    if batch > ROW_THREADS:
        return  # the finite differences below are slow in the simulator's blocks

    def objective(xv, g, b):
        return float(np.sum(w * host(_bn_forward(CUDA, dev(xv), dev(g), dev(b), act)[2])))

    fd = central_difference(lambda a: objective(a, gamma, beta), x.copy())
    np.testing.assert_allclose(host(dx), fd, rtol=1e-5, atol=1e-7)
    fd_gamma = central_difference(lambda a: objective(x, a, beta), gamma.copy())
    np.testing.assert_allclose(host(grads)[0], fd_gamma, rtol=1e-5, atol=1e-7)


def test_running_stats_and_eval_kernels():
    running, stat = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -2.0])
    r = dev(running.copy())
    F.ema_(CUDA, r, dev(stat), 0.1)
    np.testing.assert_allclose(host(r), 0.9 * running + 0.1 * stat, rtol=1e-14)
    out = _empty(CUDA, (3,))
    F.inv_std(CUDA, dev(np.array([1.0, 3.0, 0.0])), 1e-5, out)
    np.testing.assert_allclose(host(out), 1 / np.sqrt(np.array([1.0, 3.0, 0.0]) + 1e-5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_identical_to_cpu_backends(dtype):
    shape = (6, 11)
    masks = [host(F.dropout_mask(be, shape, 0.3, 5, 9, dtype)) for be in
             (CUDA, NUMPY, fastgd.get_backend("numba"))]
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], masks[2])
    x = RNG.standard_normal(shape).astype(dtype)
    y = F.dropout(CUDA, dev(x), 0.3, 5, 9, CUDA.empty(shape, dtype))
    np.testing.assert_array_equal(host(y), x * masks[1])


def test_residual_add():
    a, b = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    np.testing.assert_allclose(host(F.add(CUDA, dev(a), dev(b), _empty(CUDA, (3, 4)))), a + b)


LOSS_CASES = [
    ("cross_entropy", RNG.integers(0, 4, 3), {}),
    ("cross_entropy", RNG.integers(0, 4, 3), {"label_smoothing": 0.2}),
    ("cross_entropy", RNG.dirichlet(np.ones(4), 3), {}),
    ("mse", RNG.random((3, 4)), {}),
    ("binary_cross_entropy_with_logits", RNG.random((3, 4)), {}),
    ("binary_cross_entropy", RNG.random((3, 4)), {}),
    ("nll_loss", RNG.integers(0, 4, 3), {}),
]


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name,target,kw", LOSS_CASES)
def test_losses_match_numpy(name, target, kw, reduction):
    x = RNG.standard_normal((3, 4))
    if name == "binary_cross_entropy":  # probabilities, 0 and 1 among them
        x = np.clip(x, -1, 1) * 0.5 + 0.5
        x[0, :2] = 0.0, 1.0
    loss = nn.get_loss(name, reduction, **kw)
    v, g = loss.value_and_grad(dev(x), dev(target))
    vr, gr = loss.value_and_grad(x, target, backend="numpy")
    np.testing.assert_allclose(host(v) if reduction == "none" else v, vr, rtol=1e-12)
    np.testing.assert_allclose(host(g), gr, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("target", ["labels", "probabilities"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_with_a_block_per_row(smoothing, target):
    """Rows of ROW_THREADS classes or more run a block each (backends/cuda_rows)."""
    classes = 3 * ROW_THREADS + 1
    x = RNG.normal(0, 3, (5, classes))
    x[1, 4] = -np.inf
    t = (np.array([0, 3, classes - 1, 7, 2]) if target == "labels"
         else RNG.dirichlet(np.ones(classes), 5))
    loss = nn.get_loss("cross_entropy", "none", label_smoothing=smoothing)
    v, g = loss.value_and_grad(dev(x), dev(t))
    vr, gr = loss.value_and_grad(x, t, backend="numpy")
    np.testing.assert_allclose(host(v), vr, rtol=1e-12)
    np.testing.assert_allclose(host(g), gr, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("soft", [False, True])
def test_float32_cross_entropy_gradient_with_large_logits_on_cuda(soft):
    """As on the CPU (tests/test_nn_losses.py): logits near 150, in float64 inside."""
    rng = np.random.default_rng(22)
    x = (rng.normal(0, 1, (16, 20)) * np.geomspace(1, 30, 16)[:, None] + 150).astype(np.float32)
    t = rng.dirichlet(np.ones(20), 16).astype(np.float32) if soft else rng.integers(0, 20, 16)
    loss = nn.get_loss("cross_entropy", "sum", label_smoothing=0.1)
    _, grad = loss.value_and_grad(dev(x), dev(t))
    _, want = loss.value_and_grad(x.astype(np.float64), t.astype(np.float64) if soft else t,
                                  backend="numpy")
    assert_backward_contract(host(grad), want, np.ones_like(want), np.float32, "cross-entropy")


def test_float32_bce_gradient_against_float64_on_cuda():
    rng = np.random.default_rng(24)
    x = rng.normal(0, 3, (16, 20)).astype(np.float32)
    t = rng.random(x.shape).astype(np.float32)
    loss = nn.get_loss("binary_cross_entropy_with_logits", "none")
    _, grad = loss.value_and_grad(dev(x), dev(t))
    _, want = loss.value_and_grad(x.astype(np.float64), t.astype(np.float64), backend="numpy")
    assert_backward_contract(host(grad), want, np.ones_like(want), np.float32, "BCE")


@pytest.mark.parametrize("classes", [4, 3 * ROW_THREADS + 1])
@pytest.mark.parametrize("target", ["labels", "probabilities"])
def test_cross_entropy_of_huge_logits_and_float32_smoothing(target, classes):
    """Logits near 1e30 do not cancel in the loss (Σ q·(max - x)); float32 logits keep
    smoothing 0.1 whole (the gradient within the backward contract)."""
    x = RNG.standard_normal((3, classes)) + 1e30
    t = (np.array([0, 2, 1]) if target == "labels"
         else RNG.dirichlet(np.ones(classes), 3))
    loss = nn.get_loss("cross_entropy", "none", label_smoothing=0.1)
    np.testing.assert_allclose(host(loss(dev(x), dev(t))),
                               loss(x, t, backend="numpy"), rtol=1e-12)
    x32 = RNG.normal(0, 3, (3, classes)).astype(np.float32)
    t32 = t if target == "labels" else t.astype(np.float32)
    _, grad = loss.value_and_grad(dev(x32), dev(t32))
    # against the targets the kernel got: float32 rounding of a probability of 0.3 moves
    # p - q by up to 1.5e-8, 30 ULP of a gradient of 6e-3 (10.7 in one draw)
    t64 = t if target == "labels" else t32.astype(np.float64)
    _, want = loss.value_and_grad(x32.astype(np.float64), t64, backend="numpy")
    assert_backward_contract(host(grad), want, np.ones_like(want), np.float32, "cross-entropy")


def test_bce_limits_and_float32_sum_of_a_long_row():
    x = np.array([np.inf, np.inf, -np.inf, -np.inf])
    loss = nn.get_loss("binary_cross_entropy_with_logits", "none")
    np.testing.assert_array_equal(host(loss(dev(x), dev(np.array([0.0, 1, 1, 0])))),
                                  [np.inf, 0, np.inf, 0])
    x = (1 + 1e-3 * RNG.random((1, 3000))).astype(np.float32)
    mse = nn.get_loss("mse")
    assert mse(dev(x), dev(np.zeros_like(x))) == pytest.approx(
        mse(x.astype(np.float64), np.zeros(x.shape), backend="numpy"), rel=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_with_masked_logits(smoothing):
    x = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, 0.5]])  # labels not masked
    loss = nn.get_loss("cross_entropy", "none", label_smoothing=smoothing)
    v, g = loss.value_and_grad(dev(x), dev(np.array([2, 0])))
    vr, gr = loss.value_and_grad(x, np.array([2, 0]), backend="numpy")
    assert np.all(np.isfinite(vr)) == (smoothing == 0)  # smoothing puts mass on -inf
    np.testing.assert_allclose(host(v), vr, rtol=1e-12)
    np.testing.assert_allclose(host(g), gr, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [-1e9, -np.inf])
def test_cross_entropy_on_rows_half_masked_on_cuda(dtype, masked):
    """The gradient is exactly the reference's where half of each row is masked (0 for
    labels), the rest within float32's or float64's rounding."""
    x = RNG.normal(0, 3, (3, 12))
    x[:, 6:] = masked
    x = x.astype(dtype)
    labels = np.array([0, 5, 2])
    loss = nn.get_loss("cross_entropy", "none")
    v, g = loss.value_and_grad(dev(x), dev(labels))
    vr, gr = loss.value_and_grad(x, labels, backend="numpy")
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(v), vr, rtol=rtol)
    np.testing.assert_allclose(host(g), gr, rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_array_equal(host(g)[:, 6:], 0)


@pytest.mark.parametrize("name,target,kw", LOSS_CASES[1:])
def test_loss_backward_finite_differences(name, target, kw):
    x = RNG.standard_normal((3, 4))
    if name == "binary_cross_entropy":  # probabilities, away from the ends
        x = RNG.uniform(0.05, 0.95, (3, 4))
    loss = nn.get_loss(name, "sum", **kw)
    _, g = loss.value_and_grad(dev(x), dev(target))
    fd = central_difference(lambda a: loss(dev(a), dev(target)), x.copy())
    np.testing.assert_allclose(host(g), fd, rtol=1e-6, atol=1e-8)


def test_host_data_for_a_cuda_loss_is_refused():
    with pytest.raises(TypeError, match="fastgd.to_device"):
        nn.cross_entropy(dev(np.zeros((2, 3))), np.array([0, 1]), backend="cuda")


def test_loss_grad_output_on_the_loss_device_or_as_one_number():
    """A host grad_output for device logits is refused by name (mse failed in the backend's
    contiguity check, cross-entropy took it into its row kernel); a 0-d device grad_output
    is one number for any reduction."""
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(4, 5)), rng.random((4, 5))
    labels = np.array([0, 4, 2, 1])
    with pytest.raises(TypeError, match="grad_output is on another device.*fastgd.to_device"):
        nn.get_loss("mse", "none").value_and_grad(dev(x), dev(t), np.full((4, 5), 2.0))
    with pytest.raises(TypeError, match="grad_output is on another device"):
        nn.get_loss("cross_entropy", "none").value_and_grad(dev(x), dev(labels), np.ones(4))
    for reduction in ("mean", "sum", "none"):
        loss = nn.get_loss("mse", reduction)
        _, g = loss.value_and_grad(dev(x), dev(t), dev(np.array(2.0)))
        _, want = loss.value_and_grad(x, t, 2.0, backend="numpy")
        np.testing.assert_allclose(host(g), want, rtol=1e-12)
    x32 = x.astype(np.float32)  # a device array in another dtype, as on the CPU
    with pytest.raises(TypeError, match="grad_output is float64, the input float32"):
        nn.get_loss("cross_entropy", "none").value_and_grad(dev(x32), dev(labels),
                                                            dev(np.ones(4)))


def test_model_state_dict_round_trip_on_cuda():
    """Batch norm and dropout (Linear needs CuPy's matrix product, absent in the simulator)."""
    def build(seed):
        return nn.Sequential([nn.BatchNorm1d(4, "tanh", name="bn", backend="cuda"),
                              nn.Dropout(0.5, seed=seed, name="drop", backend="cuda")])

    model = build(0)
    x = dev(RNG.standard_normal((8, 4)).astype(np.float32))
    model.forward(x, train=True)
    saved = model.state_dict()
    assert isinstance(saved["bn.running_mean"], np.ndarray)
    assert saved["bn.num_batches_tracked"] == 1 and saved["drop.step"] == 1
    other = build(3)
    other.load_state_dict(saved)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)
    np.testing.assert_array_equal(host(other.forward(x, train=True)),
                                  host(model.forward(x, train=True)))


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(("name", "kw"), [
    ("mse", {}), ("binary_cross_entropy_with_logits", {}), ("cross_entropy", {}),
    ("cross_entropy", {"label_smoothing": 0.1}),
])
def test_a_loss_value_alone_on_cuda(name, kw, reduction):
    """Loss.value runs the loss formula alone (no gradient array) on the GPU too."""
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((8, 300)), rng.random((8, 300))
    if kw:
        t = rng.integers(0, 300, 8)
    elif name == "cross_entropy":
        t /= t.sum(axis=1, keepdims=True)
    loss = nn.get_loss(name, reduction, **kw)
    got = loss.value(dev(x), dev(t))
    want = loss.value(x, t, backend="numpy")
    np.testing.assert_allclose(host(got) if reduction == "none" else got, want, rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("act", ["identity", "relu"])
def test_float32_bias_gradient_sums_in_float64(act, monkeypatch):
    """The bias gradient of float32 data down a column, one thread a column (as where there
    are LINES_PER_THREAD columns or more): within 2e-7 of the float64 sum (float32 sums
    drifted as the column grew: 1.6e-4 down 2^20 rows)."""
    from fastgd import config

    monkeypatch.setattr(config, "LINES_PER_THREAD", 1)
    rng = np.random.default_rng(3)
    shape = (4096, 3)
    dy = (10 + rng.standard_normal(shape)).astype(np.float32)
    z = np.abs(rng.standard_normal(shape)).astype(np.float32) + 0.5  # relu' = 1
    db = CUDA.empty((3,), np.float32)
    F.act_backward(CUDA, dev(dy), dev(z), get_activation(act), CUDA.empty(shape, np.float32),
                   db)
    want = dy.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(host(db), want, rtol=2e-7)


@pytest.mark.parametrize("affine,track", [(False, True), (True, False)])
def test_batch_norm_options_on_cuda(affine, track):
    """affine=False and track_running_stats=False on the device, against the numpy backend
    (a training step, then eval)."""
    x = RNG.standard_normal((8, 4)) * 2 + 1
    dy = RNG.standard_normal((8, 4))
    layers = [nn.BatchNorm1d(4, "tanh", affine=affine, track_running_stats=track,
                             backend=b, dtype=np.float64) for b in ("cuda", "numpy")]
    for train in (True, False):
        got = [host(layers[0].forward(dev(x), train=train)), host(layers[0].backward(dev(dy)))]
        want = [layers[1].forward(x, train=train), layers[1].backward(dy)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_weights_and_ignored_labels_on_cuda(name, reduction):
    """Per-row gradient scales and the 'none' loss's weights multiplied on the device."""
    x = RNG.standard_normal((5, 4))
    labels = np.array([0, -100, 3, 2, -100])
    go = RNG.standard_normal(5) if reduction == "none" else 1.0
    loss = nn.get_loss(name, reduction, weight=np.array([1.0, 2.0, 0.5, 3.0]),
                       ignore_index=-100)
    v, g = loss.value_and_grad(dev(x), dev(labels), dev(go) if reduction == "none" else go)
    vr, gr = loss.value_and_grad(x, labels, go, backend="numpy")
    np.testing.assert_allclose(host(v) if reduction == "none" else v, vr, rtol=1e-12)
    np.testing.assert_allclose(host(g), gr, rtol=1e-12, atol=1e-15)
