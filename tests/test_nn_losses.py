"""fastgd.nn losses: values and gradients against PyTorch and finite differences."""

import numpy as np
import pytest

from fastgd import nn
from tests.helpers import assert_backward_contract, central_difference

torch = pytest.importorskip("torch")  # the reference here (the peers extra)

BACKENDS = ["numpy", "numba"]
RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5))
LABELS = RNG.integers(0, 5, 6)
PROBS = RNG.dirichlet(np.ones(5), 6)
FLOAT_T = RNG.random((6, 5))
P = RNG.uniform(0.02, 0.98, (6, 5))  # binary_cross_entropy's input: probabilities


def _input(name):
    return P if name == "binary_cross_entropy" else X


def _torch(name, x, t, reduction, go, **kw):
    xt = torch.tensor(x, requires_grad=True)
    fn = {
        "cross_entropy": torch.nn.functional.cross_entropy,
        "mse": torch.nn.functional.mse_loss,
        "binary_cross_entropy_with_logits":
            torch.nn.functional.binary_cross_entropy_with_logits,
        "binary_cross_entropy": torch.nn.functional.binary_cross_entropy,
        "nll_loss": torch.nn.functional.nll_loss,
    }[name]
    out = fn(xt, torch.tensor(t), reduction=reduction, **kw)
    out.backward(torch.as_tensor(go, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy()


CASES = [
    ("cross_entropy", LABELS, {}),
    ("cross_entropy", LABELS, {"label_smoothing": 0.2}),
    ("cross_entropy", PROBS, {}),
    ("cross_entropy", PROBS, {"label_smoothing": 0.1}),
    ("mse", FLOAT_T, {}),
    ("binary_cross_entropy_with_logits", FLOAT_T, {}),
    ("binary_cross_entropy", FLOAT_T, {}),
    ("nll_loss", LABELS, {}),
]
ROWWISE = ("cross_entropy", "nll_loss")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,target,kw", CASES)
def test_loss_matches_torch(backend, reduction, name, target, kw):
    if reduction == "none":
        shape = (6,) if name in ROWWISE else (6, 5)
        go = RNG.standard_normal(shape)
    else:
        go = 1.7
    x = _input(name)
    want_v, want_g = _torch(name, x, target, reduction, go, **kw)
    loss = nn.get_loss(name, reduction, **kw)
    value, grad = loss.value_and_grad(x, target, go, backend=backend)
    np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(30,), (30, 1), (3, 10)])
@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy_with_logits"])
def test_elementwise_losses_of_short_rows_match_torch(backend, reduction, shape, name):
    """(N,) and (N, 1) inputs (one logit per sample) run as one row on numba; the loss of
    'none' keeps their shape."""
    x, t = RNG.standard_normal(shape), RNG.random(shape)
    go = RNG.standard_normal(shape) if reduction == "none" else 0.7
    want_v, want_g = _torch(name, x, t, reduction, go)
    value, grad = nn.get_loss(name, reduction).value_and_grad(x, t, go, backend=backend)
    assert np.shape(value) == np.shape(want_v) and grad.shape == shape
    np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,target,kw", CASES)
def test_loss_backward_finite_differences(backend, name, target, kw):
    loss = nn.get_loss(name, "sum", **kw)
    _, grad = loss.value_and_grad(_input(name), target, backend=backend)
    fd = central_difference(lambda x: loss(x, target, backend=backend), _input(name).copy())
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_stays_float32_and_is_stable(backend):
    x = np.array([[1000.0, -1000.0, 0.0], [-50.0, 50.0, 1e-3]], np.float32)
    value, grad = nn.get_loss("cross_entropy").value_and_grad(x, np.array([0, 2]),
                                                              backend=backend)
    assert grad.dtype == np.float32
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, (0.0 + 50.0 - 1e-3) / 2, rtol=1e-5)
    big = np.array([[80.0, -80.0]], np.float32)
    v, g = nn.get_loss("binary_cross_entropy_with_logits").value_and_grad(
        big, np.array([[0.0, 1.0]], np.float32), backend=backend)
    np.testing.assert_allclose(v, 80.0, rtol=1e-6)
    np.testing.assert_allclose(g, [[0.5, -0.5]], rtol=1e-6)


MASKED = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, 0.5], [0.3, 0.1, -np.inf]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("masked", [-1e4, -1e9, -np.inf])
def test_cross_entropy_on_rows_half_masked(backend, dtype, soft, masked):
    """Logits masked with -1e4, -1e9 or -inf in half of each row (the kernels take e^(x -
    max) as 0 there without computing the underflow, which cost 5x): the gradient there is
    exactly torch's, 0 for labels and -q·g for probabilities, the rest within 1e-6."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, (8, 40))
    x[:, 20:] = masked
    x = x.astype(dtype)
    t = rng.integers(0, 20, 8) if not soft else np.abs(rng.normal(size=(8, 40))).astype(dtype)
    if soft:
        t /= t.sum(axis=1, keepdims=True)
    xt = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt, torch.tensor(t), reduction="none")
    want.sum().backward()
    value, grad = nn.get_loss("cross_entropy", "none").value_and_grad(x, t, backend=backend)
    if not soft or masked != -np.inf:  # torch: 0·(-inf) = NaN for probabilities
        np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(grad[:, 20:], xt.grad.numpy()[:, 20:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,kw", [
    (np.array([2, 0, 2]), {}),  # finite: the masked logits are other classes'
    (np.array([2, 0, 2]), {"label_smoothing": 0.1}),  # inf: smoothing puts mass on them
    (np.array([0, 0, 1]), {}),  # inf: a masked label
    (np.array([[0, 0.5, 0.5], [1, 0, 0], [0.5, 0.5, 0]]), {}),  # NaN in torch: 0·(-inf)
])
def test_cross_entropy_with_masked_logits_matches_torch(backend, dtype, target, kw):
    x = MASKED.astype(dtype)
    t = target.astype(dtype) if target.ndim == 2 else target
    xt = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt, torch.tensor(t), reduction="none", **kw)
    want.sum().backward()
    value, grad = nn.get_loss("cross_entropy", "none", **kw).value_and_grad(
        x, t, backend=backend)
    np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,target,kw", CASES)
def test_mean_of_an_empty_batch_is_nan_as_in_torch(backend, name, target, kw):
    x, t = _input(name)[:0], target[:0]
    value, grad = nn.get_loss(name, **kw).value_and_grad(x, t, backend=backend)
    assert np.isnan(value) and np.isnan(_torch(name, x, t, "mean", 1.0, **kw)[0])
    assert grad.shape == x.shape
    assert nn.get_loss(name, "sum", **kw)(x, t, backend=backend) == 0.0


def test_public_functions():
    np.testing.assert_allclose(nn.cross_entropy(X, LABELS),
                               _torch("cross_entropy", X, LABELS, "mean", 1.0)[0])
    np.testing.assert_allclose(nn.cross_entropy_backward(X, LABELS, 2.0, reduction="sum"),
                               _torch("cross_entropy", X, LABELS, "sum", 2.0)[1])
    np.testing.assert_allclose(nn.mse(X, FLOAT_T), _torch("mse", X, FLOAT_T, "mean", 1.0)[0])
    np.testing.assert_allclose(nn.mse_backward(X, FLOAT_T),
                               _torch("mse", X, FLOAT_T, "mean", 1.0)[1])
    bce = "binary_cross_entropy_with_logits"
    np.testing.assert_allclose(nn.binary_cross_entropy_with_logits(X, FLOAT_T),
                               _torch(bce, X, FLOAT_T, "mean", 1.0)[0])
    np.testing.assert_allclose(nn.binary_cross_entropy_with_logits_backward(X, FLOAT_T),
                               _torch(bce, X, FLOAT_T, "mean", 1.0)[1])


# -- bad input --------------------------------------------------------------------------


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\), got values in \[0, 5\]"):
        nn.cross_entropy(X, np.array([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match=r"got values in \[-1, "):
        nn.cross_entropy(X, np.array([-1, 1, 2, 3, 4, 0]))


def test_labels_wrong_shape():
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\).*got \(5,\)"):
        nn.cross_entropy(X, LABELS[:5])


def test_logits_targets_shape_mismatch():
    with pytest.raises(ValueError, match=r"input shape \(6, 5\) and target shape \(6, 4\)"):
        nn.mse(X, FLOAT_T[:, :4])
    with pytest.raises(ValueError, match=r"input shape \(6, 5\) and target shape \(5, 5\)"):
        nn.cross_entropy(X, PROBS[:5])
    with pytest.raises(ValueError, match=r"one sample, logits \(6,\), takes a 0-d label"):
        nn.cross_entropy(X[:, 0], LABELS)
    with pytest.raises(ValueError, match=r"must be \(N, C\) logits \(or \(C,\) for one"):
        nn.cross_entropy(X[None], LABELS)


def test_numpy_scalar_label_smoothing_is_a_number():
    """label_smoothing=np.float32(0.1) (read from a config array) is 0.1; True is refused."""
    a = nn.cross_entropy(X, LABELS, label_smoothing=np.float32(0.25))
    assert a == nn.cross_entropy(X, LABELS, label_smoothing=0.25)
    with pytest.raises(ValueError, match="label_smoothing must be a number, got True"):
        nn.get_loss("cross_entropy", label_smoothing=True)


def test_grad_output_on_another_device_is_refused_before_any_kernel():
    """A device grad_output with host data (or the reverse) reached the row kernel or
    Numba's unboxing; it is named with the transfer helper."""
    class DeviceLike:  # a device array's surface (its data is never read)
        shape, dtype = (len(LABELS),), np.dtype(np.float64)
        __cuda_array_interface__ = {"shape": shape, "typestr": "<f8", "data": (0, False),
                                    "version": 3}
    with pytest.raises(TypeError, match="grad_output is on another device.*fastgd.to_host"):
        nn.cross_entropy_backward(X, LABELS, grad_output=DeviceLike(), reduction="none",
                                  backend="numba")


def test_bad_targets_and_grad_output_say_what_is_expected():
    with pytest.raises(ValueError, match="class labels must be integers"):
        nn.cross_entropy(X, LABELS.astype(X.dtype))
    with pytest.raises(ValueError, match="grad_output of reduction='mean' is one number"):
        nn.cross_entropy_backward(X, LABELS, grad_output=np.ones(len(LABELS)))


def test_bad_options():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        nn.get_loss("hinge")
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.get_loss("mse", "avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        nn.get_loss("cross_entropy", label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"mse has no option\(s\) \['label_smoothing'\]"):
        nn.get_loss("mse", label_smoothing=0.1)
    with pytest.raises(TypeError, match="mse needs float targets"):
        nn.mse(X, LABELS.reshape(6, 1) * np.ones((1, 5), int))
    with pytest.raises(TypeError, match="float32 and float64"):
        nn.cross_entropy(X.astype(np.float16), LABELS)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(6,\)"):
        nn.cross_entropy_backward(X, LABELS, np.ones(5), reduction="none")
    x32 = X.astype(np.float32)  # an array in another dtype: refused, as torch's backward
    for loss, target in ((nn.cross_entropy_backward, LABELS), (nn.mse_backward, x32)):
        with pytest.raises(TypeError, match="grad_output is float64, the input float32"):
            loss(x32, target, np.full(len(LABELS) if loss is not nn.mse_backward else
                                      x32.shape, 1e300), reduction="none")
    with pytest.raises(TypeError, match="grad_output is float64, the input float32"):
        nn.get_loss("cross_entropy", "none", weight=np.ones(5)).value_and_grad(
            x32, LABELS, np.ones(len(LABELS)))
    one = nn.cross_entropy_backward(x32, LABELS, np.float64(2.0))  # one number: any type
    np.testing.assert_array_equal(one, 2 * nn.cross_entropy_backward(x32, LABELS))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
def test_float32_cross_entropy_gradient_with_large_logits(backend, smoothing, soft):
    """Logits near 150: a rounded logsumexp (ULP 1.5e-5) in exp(x - lse) would make every
    probability of the gradient off by up to 64 ULP; within the activations' backward
    contract instead, against float64. Rows of spread 1 to 30: probabilities near 1 as well
    as in between, where p - q cancels."""
    rng = np.random.default_rng(21)
    spread = np.geomspace(1, 30, 64)[:, None]
    x = (rng.normal(0, 1, (64, 50)) * spread + 150).astype(np.float32)
    t = rng.dirichlet(np.ones(50), 64).astype(np.float32) if soft else rng.integers(0, 50, 64)
    loss = nn.get_loss("cross_entropy", "sum", label_smoothing=smoothing)
    _, grad = loss.value_and_grad(x, t, backend=backend)
    t64 = t.astype(np.float64) if soft else t
    _, want = loss.value_and_grad(x.astype(np.float64), t64, backend="numpy")
    assert_backward_contract(grad, want, np.ones_like(want), np.float32, "cross-entropy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["binary_cross_entropy_with_logits", "mse"])
def test_float32_elementwise_losses_against_float64(backend, name):
    """Soft targets near the prediction: BCE's gradient sigmoid(x) - t cancels there (float32
    math was 457 ULP off), so it computes in float64; loss and gradient within the backward
    contract."""
    rng = np.random.default_rng(23)
    x = rng.normal(0, 3, (256, 64)).astype(np.float32)
    t = rng.random(x.shape).astype(np.float32)
    loss = nn.get_loss(name, "none")
    value, grad = loss.value_and_grad(x, t, backend=backend)
    want_value, want = loss.value_and_grad(x.astype(np.float64), t.astype(np.float64),
                                           backend="numpy")
    assert value.dtype == grad.dtype == np.float32
    ones = np.ones_like(want)
    assert_backward_contract(grad, want, ones, np.float32, f"{name} gradient")
    assert_backward_contract(value, want_value, ones, np.float32, f"{name} loss")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_labels_past_2_to_the_24(backend):
    """Labels reach the kernel in the compute type; past 2^24 classes float32 would round
    label 2^24 + 1 to 2^24 and put the gradient's -1 on the wrong class."""
    c, label = (1 << 24) + 3, (1 << 24) + 1
    x = np.zeros((1, c), np.float32)
    loss, grad = nn.get_loss("cross_entropy").value_and_grad(x, np.array([label]),
                                                             backend=backend)
    assert grad.dtype == np.float32 and int(np.argmin(grad)) == label
    assert loss == pytest.approx(np.log(c), rel=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy_with_logits"])
def test_zero_dimensional_input_keeps_its_shape(name, backend):
    """A 0-d input gives a 0-d gradient (and 'none' loss), as torch's do; they were (1,)."""
    x, t = np.array(0.3), np.array(1.0)
    for reduction in ("mean", "none"):
        loss, grad = nn.get_loss(name, reduction).value_and_grad(x, t, backend=backend)
        assert grad.shape == () and np.shape(loss) == ()
        xt = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        fn = (torch.nn.functional.mse_loss if name == "mse"
              else torch.nn.functional.binary_cross_entropy_with_logits)
        want = fn(xt, torch.tensor(1.0, dtype=torch.float64), reduction=reduction)
        want.backward()
        assert float(loss) == pytest.approx(want.item(), rel=1e-12)
        assert float(grad) == pytest.approx(xt.grad.item(), rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_of_one_unbatched_sample_as_torch(reduction, backend):
    """Logits (C,) with a 0-d label or (C,) probabilities, as torch takes them."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=5)
    probs = rng.dirichlet(np.ones(5))
    for target, ttarget in ((np.array(3), torch.tensor(3)), (probs, torch.tensor(probs))):
        loss, grad = nn.get_loss("cross_entropy", reduction, label_smoothing=0.1) \
            .value_and_grad(x, target, backend=backend)
        xt = torch.tensor(x, requires_grad=True)
        want = torch.nn.functional.cross_entropy(xt, ttarget, reduction=reduction,
                                                 label_smoothing=0.1)
        want.backward()
        assert np.shape(loss) == () and grad.shape == (5,)
        assert float(loss) == pytest.approx(want.item(), rel=1e-12)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        nn.cross_entropy(x, np.array(5), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target,kw", [(PROBS, {}), (LABELS, {"label_smoothing": 0.1})])
@pytest.mark.parametrize("offset", [1e8, 1e30])
def test_cross_entropy_of_huge_logits_as_torch(backend, target, kw, offset):
    """Logits of 1e8 or 1e30 plus a spread: each row's loss sums q·(max - x), terms >= 0
    (Σq·x and the max cancelled: loss 0 for [1e30, 1e30], 5.9e12 where 0.69 was right)."""
    x = X + offset
    loss = nn.cross_entropy(x, target, reduction="none", backend=backend, **kw)
    want = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target),
                                             reduction="none", **kw).numpy()
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    both = nn.cross_entropy(np.full((1, 2), offset), np.full((1, 2), 0.5), backend=backend)
    assert both == pytest.approx(np.log(2), rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("soft", [False, True])
def test_float32_label_smoothing_is_not_rounded_to_float32(backend, soft):
    """Smoothing 0.1 reaches the float64 row math whole (it was float32(0.1), 1.5e-9 off:
    13 ULP on gradients of 1e-3 at the label's class, C = 1000)."""
    c, eps = 1000, 0.1
    p_k = 0.9 + eps / c + np.linspace(1e-3, 3e-3, 16)  # gradient p_k - q_k in [1e-3, 3e-3]
    x = np.zeros((16, c), np.float32)
    x[:, 0] = np.log(p_k * (c - 1) / (1 - p_k))
    t = np.zeros(16, np.int64)
    if soft:
        t = np.eye(c, dtype=np.float32)[t]
    loss = nn.get_loss("cross_entropy", "sum", label_smoothing=eps)
    _, grad = loss.value_and_grad(x, t, backend=backend)
    _, want = loss.value_and_grad(x.astype(np.float64), t.astype(t.dtype if not soft else
                                                                 np.float64), backend="numpy")
    assert_backward_contract(grad, want, np.ones_like(want), np.float32, "cross-entropy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("shape", [(1, 1 << 20), (2, 1 << 19)])
def test_float32_reduction_of_long_rows(backend, name, shape):
    """The mean of a few long float32 rows (an image batch flattened) is summed in float64:
    float32 lane sums were 7.7e-4 off at 1e7 elements in one row."""
    rng = np.random.default_rng(5)
    x = (1 + 1e-3 * rng.random(shape)).astype(np.float32)
    t = np.zeros(shape, np.float32)
    got = nn.get_loss(name)(x, t, backend=backend)
    want = nn.get_loss(name)(x.astype(np.float64), t.astype(np.float64), backend="numpy")
    assert got == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_of_no_classes_as_torch(backend):
    """Rows of no classes lose 0 against probability rows (torch: -0); NumPy divided by 0."""
    loss, grad = nn.get_loss("cross_entropy", "none", label_smoothing=0.1).value_and_grad(
        np.zeros((3, 0)), np.zeros((3, 0)), backend=backend)
    assert np.array_equal(loss, np.zeros(3)) and grad.shape == (3, 0)
    empty = nn.cross_entropy(np.zeros((0, 0)), np.zeros(0, np.int64), reduction="none",
                             backend=backend)
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="labels must be in"):
        nn.cross_entropy(np.zeros((2, 0)), np.zeros(2, np.int64), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_of_infinite_logits_gives_the_limits(backend, dtype):
    """max(x, 0) - x·t at x = ±inf: inf where the target disagrees, 0 where it agrees
    (inf·0 gave NaN at x = inf, t = 0; torch's (1 - t)·x gives NaN at x = -inf, t = 1)."""
    x = np.array([np.inf, np.inf, -np.inf, -np.inf, np.nan], dtype)
    t = np.array([0, 1, 1, 0, 0], dtype)
    loss, grad = nn.get_loss("binary_cross_entropy_with_logits", "none").value_and_grad(
        x, t, backend=backend)
    np.testing.assert_array_equal(loss, [np.inf, 0, np.inf, 0, np.nan])
    np.testing.assert_array_equal(grad, [1, 0, -1, 0, np.nan])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_label_smoothing_beside_a_masked_label_logit(backend, dtype):
    """ε = 1 and a -inf logit at the label: the label's own term has weight 0, and 0·inf was
    NaN on numba (and CUDA); the loss is inf (the uniform target puts mass on that class)."""
    x = np.array([[-np.inf, 1.0, 2.0], [0.5, 1.0, 2.0]], dtype)
    loss = nn.get_loss("cross_entropy", "none", label_smoothing=1.0)
    got = loss(x, np.array([0, 0]), backend=backend)
    assert got[0] == np.inf
    want = -np.mean(np.log(np.exp(x[1]) / np.exp(x[1]).sum()))  # the uniform target's loss
    assert got[1] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_smoothing_beside_logits_near_the_float64_limit(backend):
    """Σ(max - x_i) over logits at finfo.min overflowed before its scaling by ε/C: inf
    where the loss is 1.75e308 (finite); a real -inf logit still gives inf."""
    f = np.finfo(np.float64).min
    x = np.array([[f, f, f, -1.0], [-np.inf, 0, 1, 2]])
    got = nn.get_loss("cross_entropy", "none", label_smoothing=0.1)(x, np.array([0, 1]),
                                                                     backend=backend)
    want = 0.9 * (-1.0 - f) + 0.1 / 4 * 3 * (-1.0 - f)  # log Σ e^(x - max) is 0 here
    assert got[0] == pytest.approx(want, rel=1e-12) and got[1] == np.inf


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(("name", "target", "kw"), [
    ("mse", "probs", {}), ("binary_cross_entropy_with_logits", "probs", {}),
    ("cross_entropy", "labels", {}), ("cross_entropy", "labels", {"label_smoothing": 0.1}),
    ("cross_entropy", "probs", {"label_smoothing": 0.1}),
])
def test_a_value_alone_computes_no_gradient(name, target, kw, reduction):
    """Loss.value (and the functions nn.mse, nn.cross_entropy..., a Loss called) compute the
    loss alone on numba: the value_and_grad's value, without the gradient's array
    (value-only calls took twice the memory; cross-entropy's two exponentials per element)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 512)).astype(np.float32)
    t = rng.random((512, 512)).astype(np.float32)
    if target == "labels":
        t = rng.integers(0, 512, 512)
    elif name == "cross_entropy":
        t /= t.sum(axis=1, keepdims=True)
    loss = nn.get_loss(name, reduction, **kw)
    want = loss.value_and_grad(x, t, backend="numba")[0]
    loss.value(x, t, backend="numba")  # compiled first
    tracemalloc.start()
    got = loss(x, t, backend="numba")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=0)
    np.testing.assert_allclose(got, loss.value(x, t, backend="numpy"), rtol=1e-6)
    # the loss's own array (one per element, or per row for cross-entropy), no gradient
    assert peak < (0.5 if name == "cross_entropy" else 1.5) * x.nbytes


@pytest.mark.parametrize("label_dtype", [np.float32, np.float64])
def test_float_class_labels_get_the_hint_whatever_their_dtype(label_dtype):
    """Float labels of shape (N,) are named as labels that must be integers, float64 ones
    too (they got "mixed dtypes" before the hint)."""
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="class labels must be integers"):
        nn.cross_entropy(x, np.array([0.0, 2.0], label_dtype))


def test_numpy_backend_loss_past_float32_is_inf_without_a_warning():
    """A float32 loss past float32's range is inf on the NumPy backend as on the kernels,
    without the cast's RuntimeWarning (a diverging run printed it every step)."""
    import warnings

    x = np.array([[1e38, -1e38, 0.0]], np.float32)
    for backend in ("numpy", "numba"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss, grad = nn.get_loss("mse").value_and_grad(x, np.zeros_like(x),
                                                           backend=backend)
        assert loss == np.inf and np.isfinite(grad).all(), backend


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_probability_targets_whose_rows_do_not_sum_to_one_as_torch(backend):
    """torch's gradient is softmax·Σq − q: the Σq factor matters where a row's targets do
    not sum to 1 (no test had such targets)."""
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    t = np.array([[0.5, 0.25, 0.0], [2.0, 0.0, 1.0]])
    xt = torch.tensor(x, requires_grad=True)
    value = torch.nn.functional.cross_entropy(xt, torch.tensor(t), label_smoothing=0.1)
    value.backward()
    assert nn.cross_entropy(x, t, label_smoothing=0.1, backend=backend) == pytest.approx(
        value.item(), rel=1e-12)
    got = nn.cross_entropy_backward(x, t, label_smoothing=0.1, backend=backend)
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_at_the_ends_as_torch(backend, dtype):
    """Probabilities 0 and 1 (each log clamped at -100), next to them, and targets at and
    between the ends: torch's values and gradients (its denominator's floor is a float32
    1e-12, in float64 too)."""
    p = np.array([0.0, 1.0, 1e-30, 1e-7, 1 - 1e-7, 0.5, 1.0, 0.0, 0.25])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.3, 0.2, 0.9, 0.25])
    p, t = p.astype(dtype), t.astype(dtype)
    pt = torch.tensor(p, requires_grad=True)
    want = torch.nn.functional.binary_cross_entropy(pt, torch.tensor(t), reduction="none")
    want.backward(torch.ones_like(want))
    value, grad = nn.get_loss("binary_cross_entropy", "none").value_and_grad(
        p, t, np.ones_like(p), backend=backend)
    assert value.dtype == grad.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(value, want.detach().numpy(), rtol=rtol)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=rtol)
    for bad in (np.array([0.5, 1.5]), np.array([-0.1, 0.5]), np.array([np.nan, 0.5])):
        with pytest.raises(ValueError, match="probabilities in \\[0, 1\\].*with_logits"):
            nn.binary_cross_entropy(bad, np.zeros(2), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_of_log_softmax_is_cross_entropy(backend, reduction):
    """The lesson in two steps: nll_loss of log_softmax's output is cross_entropy of the
    logits, and their gradients chain (log_softmax's backward from its output)."""
    import fastgd

    logp = fastgd.log_softmax(X, backend=backend)
    value, dlogp = nn.get_loss("nll_loss", reduction).value_and_grad(logp, LABELS,
                                                                      backend=backend)
    dx = fastgd.log_softmax_backward(dlogp, y=logp, backend=backend)
    want_v, want_g = nn.get_loss("cross_entropy", reduction).value_and_grad(X, LABELS,
                                                                            backend=backend)
    np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-12)
    np.testing.assert_allclose(dx, want_g, rtol=1e-10, atol=1e-15)
    one, g1 = nn.get_loss("nll_loss", reduction).value_and_grad(logp[2], LABELS[2],
                                                                  backend=backend)
    lt = torch.tensor(logp[2], requires_grad=True)
    w = torch.nn.functional.nll_loss(lt, torch.tensor(LABELS[2]), reduction=reduction)
    w.backward()
    np.testing.assert_allclose(np.asarray(one), w.detach().numpy(), rtol=1e-15)
    np.testing.assert_array_equal(g1, lt.grad.numpy())


def test_nll_loss_errors():
    with pytest.raises(TypeError, match="nll_loss needs integer class labels, got float64 "
                                        "\\(probability targets: cross_entropy\\)"):
        nn.nll_loss(X, PROBS)
    with pytest.raises(ValueError, match="labels must be in \\[0, 5\\)"):
        nn.nll_loss(X, LABELS + 1)
    with pytest.raises(ValueError, match="nll_loss labels must have shape \\(6,\\) for "
                                         "log-probabilities"):
        nn.nll_loss(X, LABELS[:4])
    with pytest.raises(ValueError, match="nll_loss of one sample, log-probabilities \\(5,\\), "
                                         "takes a 0-d label, got"):
        nn.nll_loss(X[0], LABELS[:2])


def test_accuracy_thresholds_probabilities_at_one_half():
    from fastgd.nn.trainer import accuracy

    out, y = np.array([[0.6], [0.4], [-0.2]]), np.array([[1.0], [1.0], [0.0]])
    assert accuracy(nn.get_loss("binary_cross_entropy"), out, y) == pytest.approx(2 / 3)
    assert accuracy(nn.get_loss("binary_cross_entropy_with_logits"), out, y) == 1.0
    assert accuracy(nn.get_loss("nll_loss"), X, X.argmax(axis=1)) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_edges_found_by_review(backend):
    """A 0-d input; targets outside [0, 1] or NaN refused, as torch refuses them; the
    gradient divided before it is scaled (torch's order: a subnormal p − t scaled by 1/N
    first went to 0); an unbatched nll_loss given a float label says it needs an int."""
    value, grad = nn.get_loss("binary_cross_entropy").value_and_grad(
        np.array(0.3), np.array(1.0), backend=backend)
    assert value == pytest.approx(1.2039728043259361, rel=1e-15)
    assert grad.shape == () and float(grad) == pytest.approx(-1 / 0.3, rel=1e-15)
    for t in (np.array([1.5]), np.array([-0.1]), np.array([np.nan])):
        with pytest.raises(ValueError, match="binary_cross_entropy takes targets in \\[0, 1\\]"):
            nn.binary_cross_entropy(np.array([0.5]), t, backend=backend)
    p, t = np.array([5e-324] + [0.5] * 12), np.zeros(13)
    pt = torch.tensor(p, requires_grad=True)
    torch.nn.functional.binary_cross_entropy(pt, torch.tensor(t)).backward()
    got = nn.binary_cross_entropy_backward(p, t, backend=backend)
    assert got[0] == pt.grad[0].item() > 0
    with pytest.raises(TypeError, match="nll_loss needs an integer class label, got float64"):
        nn.nll_loss(np.log(np.full(5, 0.2)), np.array(2.0), backend=backend)


def test_training_on_binary_cross_entropy_checks_outputs_and_targets():
    """A model whose outputs are not probabilities (no sigmoid layer) is told so at its first
    step and in evaluate, not trained into NaN; targets outside [0, 1] before any step."""
    import fastgd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (rng.uniform(size=(64, 1)) > 0.5).astype(np.float32)
    model = nn.MLP([4, 8, 1], backend="numba")
    before = {k: v.copy() for k, v in model.params.items()}
    opt = fastgd.SGD(model.params, lr=0.1)
    with pytest.raises(ValueError, match="takes probabilities in \\[0, 1\\].*with_logits"):
        nn.train(model, (x, y), loss="binary_cross_entropy", optimizer=opt, epochs=1,
                 progress=False)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="takes probabilities"):
        nn.evaluate(model, x, y, loss="binary_cross_entropy")
    with pytest.raises(ValueError, match="takes targets \\(y_train\\) in \\[0, 1\\]"):
        nn.train(model, (x, 2 * y), loss="binary_cross_entropy", optimizer=opt, epochs=1,
                 progress=False)


WEIGHT = RNG.uniform(0.2, 3.0, 5)
IGNORED = np.where(np.arange(6) % 3 == 1, -100, LABELS)  # rows 1 and 4 ignored


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,kw", [
    ("cross_entropy", {"weight": WEIGHT}),
    ("cross_entropy", {"ignore_index": -100}),
    ("cross_entropy", {"weight": WEIGHT, "ignore_index": -100}),
    ("cross_entropy", {"ignore_index": -100, "label_smoothing": 0.2}),
    ("nll_loss", {"weight": WEIGHT, "ignore_index": -100}),
])
def test_class_weights_and_ignored_labels_as_torch(backend, reduction, name, kw):
    """Each row's loss times its class's weight (0 for an ignored label), the mean over the
    weights' sum, per-row grad_output for 'none': torch's values and gradients."""
    labels = IGNORED if "ignore_index" in kw else LABELS
    go = RNG.standard_normal(6) if reduction == "none" else 1.3
    tkw = {k: torch.tensor(v) if k == "weight" else v for k, v in kw.items()}
    want_v, want_g = _torch(name, X, labels, reduction, go, **tkw)
    value, grad = nn.get_loss(name, reduction, **kw).value_and_grad(X, labels, go,
                                                                    backend=backend)
    np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-14)


def test_class_weight_and_ignore_index_errors():
    every = np.full(6, -100)
    value, grad = nn.get_loss("cross_entropy", ignore_index=-100).value_and_grad(X, every)
    assert np.isnan(value) and not grad.any()  # torch: NaN, zero gradient
    for kw, match in (({"weight": np.ones(4)}, "weight has 4 classes, the input 5"),
                      ({"weight": np.ones((5, 1))}, "one weight per class"),
                      ({"ignore_index": 1.5}, "ignore_index must be an int"),
                      ({"weight": WEIGHT, "label_smoothing": 0.1}, "not supported")):
        with pytest.raises(ValueError, match=match):
            nn.get_loss("cross_entropy", **kw).value(X, LABELS)
    with pytest.raises(ValueError, match="take class labels, not probability targets"):
        nn.get_loss("cross_entropy", weight=WEIGHT).value(X, PROBS)
    with pytest.raises(ValueError, match="labels must be in \\[0, 5\\)"):  # -100 not ignored
        nn.cross_entropy(X, IGNORED)
    with pytest.raises(ValueError, match="has no option"):
        nn.get_loss("mse", weight=WEIGHT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_losses_at_their_edges_as_torch(backend):
    """An ignored row whose loss is inf (a -inf logit at class 0, the class it is read as)
    adds 0, as a NaN weight of a class no kept row has; kept rows of total weight 0 give
    NaN gradients (torch's 0/0)."""
    x = np.array([[0.0, 1.0, 2.0], [-np.inf, 0.0, 1.0], [0.5, 0.2, 0.1]])
    y = np.array([1, -100, 2])
    for name, kw in (("cross_entropy", {"ignore_index": -100}),
                     ("cross_entropy", {"ignore_index": -100,
                                        "weight": np.array([np.nan, 2.0, 0.5])}),
                     ("nll_loss", {"ignore_index": -100})):
        for reduction in ("mean", "none"):
            tkw = {k: torch.tensor(v) if k == "weight" else v for k, v in kw.items()}
            want_v, want_g = _torch(name, x, y, reduction, 1.0 if reduction == "mean"
                                    else np.ones(3), **tkw)
            value, grad = nn.get_loss(name, reduction, **kw).value_and_grad(
                x, y, 1.0 if reduction == "mean" else np.ones(3), backend=backend)
            np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-12)
            np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-15)
    zero = nn.get_loss("nll_loss", weight=np.zeros(3))
    value, grad = zero.value_and_grad(x[[0, 2]], y[[0, 2]], backend=backend)
    assert np.isnan(value) and np.isnan(grad[0, 1]) and np.isnan(grad[1, 2])
    for bad in ([1.0, None, 2.0], ["a", "b", "c"], np.ones(3) * 1j):
        with pytest.raises(ValueError, match="weight must be one real number per class"):
            nn.get_loss("cross_entropy", weight=bad)
    w = torch.ones(3, requires_grad=True)
    assert nn.get_loss("cross_entropy", weight=w).weight.tolist() == [1.0, 1.0, 1.0]
