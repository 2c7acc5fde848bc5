"""fastgd.nn layers: every backward against finite differences, batch norm against torch,
and the dropout mask identical on every backend."""

import copy

import numpy as np
import pytest

from fastgd import nn
from fastgd.nn import functional as F
from fastgd.nn._kernels import get_activation
from tests.helpers import central_difference, run_threads

torch = pytest.importorskip("torch")  # the reference here (the peers extra)

BACKENDS = ["numpy", "numba"]


def _check_gradients(model, x, reset=None, rtol=1e-5, atol=1e-7):
    """Compare backward's input and parameter gradients with central differences of
    L = Σ w·model(x)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal(model.forward(x).shape)

    def objective():
        if reset:
            reset()
        return float(np.sum(w * model.forward(x, train=True)))

    objective()
    dx = model.backward(w.copy())
    grads = {k: v.copy() for k, v in model.grads.items()}
    if dx is not None:
        fd = central_difference(lambda _: objective(), x)
        np.testing.assert_allclose(dx, fd, rtol=rtol, atol=atol, err_msg="input gradient")
    for key, p in model.params.items():
        fd = central_difference(lambda _: objective(), p)
        np.testing.assert_allclose(grads[key], fd, rtol=rtol, atol=atol, err_msg=key)


ACTS = [
    ("relu", {}), ("leaky_relu", {"negative_slope": 0.1}), ("gelu", {}),
    ("gelu", {"approximate": "tanh"}), ("tanh", {}), ("sigmoid", {}),
    ("softplus", {"beta": 2.0, "threshold": 20.0}), ("identity", {}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act,params", ACTS)
def test_linear_gradients(backend, act, params):
    layer = nn.Linear(3, 4, act, activation_params=params, backend=backend,
                      dtype=np.float64, seed=2)
    layer.params["bias"][...] = np.linspace(-0.5, 0.5, 4)
    x = np.random.default_rng(3).standard_normal((5, 3))
    _check_gradients(layer, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_without_bias_and_first_layer(backend):
    layer = nn.Linear(3, 4, "tanh", bias=False, backend=backend, dtype=np.float64)
    assert list(layer.params) == ["weight"]
    _check_gradients(layer, np.random.default_rng(3).standard_normal((5, 3)))
    first = nn.Linear(3, 2, backend=backend, dtype=np.float64, input_grad=False)
    first.forward(np.ones((2, 3)))
    assert first.backward(np.ones((2, 2))) is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["identity", "tanh", "relu"])
def test_batch_norm_gradients(backend, act):
    bn = nn.BatchNorm1d(3, act, backend=backend, dtype=np.float64)
    bn.params["gamma"][...] = [0.5, 1.5, -1.0]
    bn.params["beta"][...] = [0.1, -0.2, 0.3]
    x = np.random.default_rng(4).standard_normal((6, 3)) * 2 + 1
    _check_gradients(bn, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_matches_torch(backend):
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm1d(4, backend=backend, dtype=np.float64, momentum=0.2)
    ref = torch.nn.BatchNorm1d(4, momentum=0.2, dtype=torch.float64)
    for _ in range(3):
        x = rng.standard_normal((8, 4)) * 3 + 2
        np.testing.assert_allclose(bn.forward(x, train=True),
                                   ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=1e-12)
    ref.eval()
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(bn.forward(x, train=False),
                               ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("features", [20, 70])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_of_a_large_batch_matches_torch(dtype, features):
    """Past PARALLEL_THRESHOLD elements the CPU runs the columns as rows, swapped in and out
    (20 features: less than COLUMN_MIN_BYTES apart; 70: too few blocks to give every thread
    two): statistics, the input gradient and gamma's and beta's, with an activation. The
    side-by-side path (``backends.columns``) has its own test below."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((300, features)) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    bn = nn.BatchNorm1d(features, "tanh", backend="numba", dtype=dtype)
    bn.params["gamma"][...] = rng.uniform(0.5, 2, features)
    bn.params["beta"][...] = rng.uniform(-1, 1, features)
    ref = torch.nn.BatchNorm1d(features, dtype=torch.float64)
    with torch.no_grad():
        ref.weight[:] = torch.tensor(bn.params["gamma"], dtype=torch.float64)
        ref.bias[:] = torch.tensor(bn.params["beta"], dtype=torch.float64)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tanh(ref(xt))
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10,
                                                                        "atol": 1e-12}
    np.testing.assert_allclose(bn.forward(x), yt.detach().numpy(), **tol)
    np.testing.assert_allclose(bn.backward(dy), xt.grad.numpy(), **tol)
    np.testing.assert_allclose(bn.grads["gamma"], ref.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(bn.grads["beta"], ref.bias.grad.numpy(), **tol)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), **tol)


@pytest.mark.parametrize("features", [8, 64])
def test_batch_norm_sums_a_long_batch_in_float64(features):
    """The statistics and gamma's and beta's gradients sum in float64, as torch's CPU kernel:
    a float32 sum down 2^18 rows of mean 10 put the variance 8e-5 off."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1 << 18, features)) * 3 + 10).astype(np.float32)
    bn = nn.BatchNorm1d(features, backend="numba")
    y = bn.forward(x)
    bn.backward(x)
    x64 = x.astype(np.float64)
    n = x.shape[0]
    var = x64.var(axis=0)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-7)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x64.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bn.grads["beta"], x64.sum(axis=0), rtol=1e-6)
    xhat = (x64 - x64.mean(axis=0)) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(bn.grads["gamma"], (x64 * xhat).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(y, xhat, atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_cumulative_average_as_torch(backend):
    """momentum=None: running statistics average every batch so far, as torch's do."""
    rng = np.random.default_rng(9)
    bn = nn.BatchNorm1d(3, momentum=None, backend=backend, dtype=np.float64)
    ref = torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    for _ in range(4):
        x = rng.normal(2, 3, (8, 3))
        bn.forward(x, train=True)
        ref(torch.tensor(x))
    np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=1e-13)
    assert bn.num_batches_tracked == ref.num_batches_tracked.item() == 4
    for bad in (1.5, "0.1", True):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] or None"):
            nn.BatchNorm1d(3, momentum=bad, backend=backend)
    for bad in (0.0, float("inf"), float("nan"), "1e-5"):
        with pytest.raises(ValueError, match="eps must be a"):
            nn.BatchNorm1d(3, eps=bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["identity", "tanh"])
def test_batch_norm_backward_after_an_eval_forward_matches_torch(backend, act):
    """Eval normalizes with the running statistics, constants of the input: dx is
    gamma·invstd·act'(z)·dy, not the training formula (which subtracts the batch means)."""
    rng = np.random.default_rng(8)
    bn = nn.BatchNorm1d(3, act, backend=backend, dtype=np.float64)
    ref = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    gamma = np.array([0.5, 1.5, -1.0])
    bn.params["gamma"][...] = gamma
    ref.weight.data = torch.tensor(gamma)
    x = rng.standard_normal((6, 3)) * 2 + 1
    bn.forward(x, train=True)
    ref(torch.tensor(x))
    ref.eval()
    dy = rng.standard_normal((6, 3))
    bn.forward(x, train=False)
    dx = bn.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    out = ref(xt)
    out = torch.tanh(out) if act == "tanh" else out
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.grads["gamma"], ref.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.grads["beta"], ref.bias.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_checks_dy_before_any_kernel(backend):
    """A dy of another shape than the forward's output would be read (and dz written) past
    the forward's buffers by a kernel sized by dy: every layer refuses it first."""
    x = np.ones((8, 4), np.float32)
    layers = [nn.Linear(4, 3, "relu", backend=backend), nn.BatchNorm1d(4, backend=backend),
              nn.Dropout(0.5, backend=backend),
              nn.MLP([4, 5, 3], batch_norm=True, dropout=0.1, backend=backend)]
    for layer in layers:
        with pytest.raises(RuntimeError, match="backward needs a forward first"):
            layer.backward(np.ones((8, 3), np.float32))
        y = layer.forward(x, train=True)
        for bad in (np.ones((8, y.shape[1] + 1), np.float32), np.ones((64, y.shape[1]),
                                                                        np.float32)):
            with pytest.raises(ValueError, match="dy has shape"):
                layer.backward(bad)
        with pytest.raises(TypeError, match="float32 but the gradient dy is float64"):
            layer.backward(np.ones(y.shape))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, features\)"):
        nn.Dropout(0.5, backend=backend).forward(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="float32 but the input is float64"):
        nn.Dropout(0.5, backend=backend).forward(np.ones((2, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_and_residual_gradients(backend):
    drop = nn.Dropout(0.4, seed=7, backend=backend, dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((4, 5))

    def reset():
        drop.step = 0

    _check_gradients(drop, x, reset=reset)
    block = nn.Residual([nn.Linear(3, 3, "tanh", backend=backend, dtype=np.float64, seed=1)])
    _check_gradients(block, np.random.default_rng(7).standard_normal((4, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_gradients(backend):
    model = nn.MLP([3, 4, 4, 2], activation="gelu", batch_norm=True, dropout=0.25,
                   residual=True, backend=backend, dtype=np.float64, seed=3)
    assert list(model.params) == [
        "fc1.weight", "bn1.gamma", "bn1.beta", "res2.fc2.weight", "res2.bn2.gamma",
        "res2.bn2.beta", "fc3.weight", "fc3.bias"]
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]

    def reset():
        for d in drops:
            d.step = 0

    _check_gradients(model, np.random.default_rng(8).standard_normal((6, 3)), reset=reset)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_identical_on_every_backend(dtype):
    masks = [nn.functional.dropout_mask(nn.layers.backend_of(b), (64, 33), 0.3, seed=11,
                                        step=5, dtype=dtype) for b in BACKENDS]
    np.testing.assert_array_equal(masks[0], masks[1])
    keep = masks[0] != 0
    assert 0.65 < keep.mean() < 0.75
    np.testing.assert_allclose(masks[0][keep], 1 / 0.7, rtol=1e-7)
    other = nn.functional.dropout_mask(nn.layers.backend_of("numba"), (64, 33), 0.3,
                                       seed=11, step=6, dtype=dtype)
    assert (other != masks[0]).any()


def test_dropout_train_and_eval():
    drop = nn.Dropout(0.5, seed=1, backend="numba", dtype=np.float64)
    x = np.ones((10, 10))
    assert drop.forward(x, train=False) is x
    y1 = drop.forward(x, train=True).copy()
    y2 = drop.forward(x, train=True).copy()
    assert set(np.unique(y1)) == {0.0, 2.0} and not np.array_equal(y1, y2)
    assert nn.Dropout(0.0, backend="numba", dtype=np.float64).forward(x, train=True) is x


def test_numpy_scalar_options_are_numbers():
    """Dropout's p and a Linear's init std as NumPy scalars act as the Python numbers."""
    assert nn.Dropout(np.float32(0.25)).p == 0.25
    a = nn.Linear(4, 3, init=np.float32(0.5), seed=1, backend="numpy")
    b = nn.Linear(4, 3, init=0.5, seed=1, backend="numpy")
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(True)


def test_layer_errors():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        nn.MLP([2, 3, 1], activation="swishy")
    with pytest.raises(ValueError, match="unknown activation 'softmax'"):
        nn.Linear(2, 3, "softmax")
    with pytest.raises(ValueError, match="leaky_relu has no parameter"):
        nn.Linear(2, 3, "leaky_relu", activation_params={"slope": 0.1})
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\]"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="unknown init 'lecun'"):
        nn.Linear(2, 3, init="lecun")
    with pytest.raises(ValueError, match="residual block res maps width 3 to 4"):
        nn.Residual([nn.Linear(3, 4), nn.Dropout(0.1)], name="res")  # before any forward
    with pytest.raises(ValueError, match=r"MLP sizes must be at least \[in, out\]"):
        nn.MLP([4])
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        nn.MLP([2, 1], backend="tpu")
    model = nn.MLP([4, 3, 2], backend="numba", dtype=np.float64)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 4\), got \(2, 5\)"):
        model.forward(np.ones((2, 5)))
    with pytest.raises(TypeError, match="is float64 but the input is float32"):
        model.forward(np.ones((2, 4), np.float32))
    bn = nn.BatchNorm1d(3, backend="numba", dtype=np.float64)
    with pytest.raises(ValueError, match="more than 1 sample per batch"):
        bn.forward(np.ones((1, 3)), train=True)
    batch_stats = nn.BatchNorm1d(3, backend="numba", dtype=np.float64,
                                 track_running_stats=False)
    with pytest.raises(ValueError, match="more than 1 sample per batch"):  # an audit: gave
        batch_stats.forward(np.ones((1, 3)), train=False)  # beta, where torch raises
    assert batch_stats.forward(np.ones((0, 3)), train=False).shape == (0, 3)
    with pytest.raises(ValueError, match="all layers need one backend and dtype"):
        nn.Sequential([nn.Linear(2, 2, backend="numba"), nn.Linear(2, 2, backend="numpy")])


def test_sequential_numbers_repeated_names_and_refuses_what_is_not_a_layer():
    """Two unnamed Linears (both "linear") were refused as a name clash: they are numbered,
    as torch numbers a Sequential's layers, and the model trains."""
    model = nn.Sequential([nn.Linear(8, 4, "relu", backend="numpy"),
                           nn.Linear(4, 3, backend="numpy", name="out"),
                           nn.Linear(3, 3, backend="numpy")])
    assert [layer.name for layer in model.layers] == ["linear1", "out", "linear2"]
    assert list(model.params) == ["linear1.weight", "linear1.bias", "out.weight", "out.bias",
                                  "linear2.weight", "linear2.bias"]
    assert model.forward(np.ones((2, 8), np.float32)).shape == (2, 3)
    for item in (1, "relu"):
        with pytest.raises(TypeError, match="item 1 is not a layer"):
            nn.Sequential([nn.Linear(2, 2), item])
    twice = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="in the Sequential twice"):
        nn.Sequential([twice, twice])
    inner = nn.Linear(2, 2, backend="numpy", name="a")  # one weight under two names
    with pytest.raises(ValueError, match="in the Sequential twice"):
        nn.Sequential([inner, nn.Residual([inner], name="r")])


def test_a_sequential_that_fails_to_build_leaves_its_layers_names():
    """An audit: the layers were renamed before the checks that then refused them; and a
    number another layer's name held made a clash."""
    a = nn.Linear(2, 3, backend="numpy")
    b = nn.Linear(3, 2, backend="numpy", dtype=np.float64)
    with pytest.raises(ValueError, match="one backend and dtype"):
        nn.Sequential([a, b])
    with pytest.raises(ValueError, match="takes width 2, but linear1 gives 3"):
        nn.Sequential([a, nn.Linear(2, 2, backend="numpy")])
    assert (a.name, b.name) == ("linear", "linear")
    model = nn.Sequential([a, nn.Linear(3, 2, backend="numpy"),
                           nn.Linear(2, 2, backend="numpy", name="linear1")])
    assert [layer.name for layer in model.layers] == ["linear2", "linear3", "linear1"]


def test_layers_of_the_users_own_and_a_refused_residual_keep_their_names():
    """A review: the nested-duplicate check walked any ``layers`` attribute (a user layer's
    int failed, its list of ints was 'twice'); a Residual refused for its widths had
    already had its layers renamed."""

    class Widen(nn.Layer):
        def __init__(self):
            super().__init__("numpy", np.float32, "widen")
            self.layers = [4, 4]

        def forward(self, x, train=True):
            return x

    nn.Sequential([Widen(), nn.Linear(3, 3, backend="numpy")])
    a, b = nn.Linear(4, 8, backend="numpy"), nn.Linear(8, 5, backend="numpy")
    with pytest.raises(ValueError, match="maps width 4 to 5"):
        nn.Residual([a, b])
    assert (a.name, b.name) == ("linear", "linear")


def test_a_dropout_seed_past_64_bits_round_trips():
    """An audit: MLP(seed=s) seeds its dropout layers s*1000 + k, past 2^64 from s ~ 1.8e16,
    which state_dict held as an object array that load_state_dict refused. The mask uses
    the seed's low 64 bits: the layer keeps those."""
    model = nn.MLP([2, 3, 2], dropout=0.5, seed=10**17, backend="numpy")
    drop = model.layers[1]
    assert drop.seed == (10**17 * 1000 + 1) % 2**64
    state = model.state_dict()
    model.load_state_dict(state)
    x = np.ones((4, 3), np.float32)
    big = nn.Dropout(0.5, seed=drop.seed + 2**64, backend="numpy")
    np.testing.assert_array_equal(big.forward(x), nn.Dropout(0.5, seed=drop.seed,
                                                             backend="numpy").forward(x))


@pytest.mark.parametrize("shape", [(300, 70), (1, 5000), (5000, 1), (3, 4), (0, 6), (1100, 480),
                                   (1103, 480)])  # a prime row count: the chunks' remainder
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_in_row_order_match_numpy(shape, dtype):
    import numba

    from fastgd import get_backend
    from fastgd.nn._kernels import column_sums

    a = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    before = numba.get_num_threads()
    try:
        for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):  # one chunk per thread
            numba.set_num_threads(threads)
            out = np.full(shape[1], np.nan, dtype)
            column_sums(get_backend("numba"), a, out)  # serial, and parallel (> 2^19 elements)
            np.testing.assert_allclose(out, a.astype(np.float64).sum(axis=0), rtol=1e-6,
                                       atol=1e-12, err_msg=f"{threads} threads")
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("sizes", [(2.5, 3), (True, 3), ("4", 3), (4, 0)])
def test_linear_sizes_must_be_ints(sizes):
    """Linear took int() of its sizes: 2.5 gave 2 rows, True 1, '4' 4 (MLP refused them)."""
    with pytest.raises(ValueError, match="Linear (in|out)_features must be an int >= 1"):
        nn.Linear(*sizes)


def _one_step(model, x, y):
    """A training forward and backward: the loss and a copy of every gradient."""
    out = model.forward(x, train=True)
    loss, g = nn.get_loss("cross_entropy").value_and_grad(out, y)
    model.backward(g)
    return loss, {k: v.copy() for k, v in model.grads.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_model_trains_as_the_original(backend, how):
    """``copy.deepcopy`` (a best model kept aside) and ``pickle`` of an MLP with batch norm,
    dropout and residual blocks: its own arrays with the same values, the same loss and
    gradients on the next step (dropout's seed and step, batch norm's running statistics
    copied), its grads the arrays its layers write (batch norm's are views of one block),
    and no last forward to run a backward from."""
    import copy
    import pickle

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    model = nn.MLP([4, 8, 8, 3], "gelu", batch_norm=True, dropout=0.2, residual=True,
                   backend=backend)
    _one_step(model, x, y)
    twin = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert twin.be is model.be
    for key, value in model.params.items():
        assert twin.params[key] is not value
        np.testing.assert_array_equal(twin.params[key], value)
    with pytest.raises(RuntimeError, match="needs a forward first"):
        twin.backward(np.zeros((16, 3), np.float32))
    want = _one_step(model, x, y)
    got = _one_step(twin, x, y)
    assert got[0] == want[0]
    for key, g in want[1].items():
        np.testing.assert_array_equal(got[1][key], g, err_msg=key)
    for name, layer, key in twin._state():
        if key in layer.grads:
            assert twin.grads[name] is layer.grads[key], name
    bn = next(m for m in twin.modules() if isinstance(m, nn.BatchNorm1d))
    assert np.shares_memory(bn.grads["gamma"], bn._grad_block)


def test_calling_a_model_needs_the_mode():
    """``model(x)`` names its mode: an eval default had trained without batch statistics or
    dropout, in silence; torch's modules keep a mode, these layers do not."""
    model = nn.MLP([4, 8, 3], batch_norm=True, dropout=0.5, backend="numba")
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="needs train=True .* or train=False"):
        model(x)
    np.testing.assert_array_equal(model(x, train=False), model.predict(x))
    model(x, train=True)
    assert model.layers[1].num_batches_tracked == 1 and model.layers[2].step == 1


def test_dropout_layers_draw_independent_masks_unless_seeded():
    """Two Dropout layers without a seed drop different elements (one default seed gave
    every layer of a hand-built model the same mask); a seed, or the state_dict, gives the
    same masks again."""
    x = np.ones((64, 100), np.float32)
    a, b = nn.Dropout(0.5), nn.Dropout(0.5)
    mask_a = a.forward(x).copy() == 0
    assert 0.3 < np.mean(mask_a != (b.forward(x) == 0)) < 0.7  # independent: half differ
    c = nn.Dropout(0.5)
    c.load_state_dict({"seed": np.int64(a.seed), "step": np.int64(0)})
    np.testing.assert_array_equal(c.forward(x) == 0, mask_a)
    np.testing.assert_array_equal(nn.Dropout(0.5, seed=3).forward(x),
                                  nn.Dropout(0.5, seed=3).forward(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_input_gradient_on_request(backend):
    """``MLP(input_grad=True)``: backward returns dL/dx (finite differences); the default
    skips that product and returns None."""
    model = nn.MLP([3, 5, 2], "tanh", backend=backend, dtype=np.float64, seed=4,
                   input_grad=True)
    _check_gradients(model, np.random.default_rng(2).standard_normal((6, 3)))
    plain = nn.MLP([3, 5, 2], backend=backend, dtype=np.float64)
    plain.forward(np.ones((2, 3)))
    assert plain.backward(np.ones((2, 2))) is None


def test_copies_keep_what_a_subclass_adds():
    """A Sequential subclass's own parameters survive a copy (the layers' arrays are linked
    again, nothing else rebuilt), and a custom layer keeps an attribute named as a built-in
    layer's forward state."""
    import copy

    class Scaled(nn.Sequential):
        def __init__(self, layers):
            super().__init__(layers, name="scaled")
            self.params["scale"] = np.full(1, 2.0, np.float32)
            self.grads["scale"] = np.zeros(1, np.float32)

    class Keeps(nn.Layer):
        def __init__(self):
            super().__init__(backend="numpy")
            self._x = np.arange(3.0)  # lasting data under a name Linear's forward uses

    twin = copy.deepcopy(Scaled([nn.Linear(4, 3, name="a", backend="numpy")]))
    assert list(twin.params) == ["a.weight", "a.bias", "scale"]
    assert twin.params["a.weight"] is twin.layers[0].params["weight"]
    assert twin.params["scale"][0] == 2.0 and "scale" in twin.grads
    np.testing.assert_array_equal(copy.deepcopy(Keeps())._x, np.arange(3.0))


def test_mlp_without_input_grad_returns_none_with_a_residual_first_block_too():
    x = np.ones((8, 6), np.float32)
    model = nn.MLP([6, 6, 3], residual=True, dropout=0.2, seed=None, backend="numba")
    model.forward(x, train=True)
    assert model.backward(np.ones((8, 3), np.float32)) is None
    model.input_grad = True
    model.forward(x, train=True)
    assert model.backward(np.ones((8, 3), np.float32)).shape == (8, 6)


def _bn_backward_on(backend, dy, z, h, mean, invstd, gamma, act, train):
    dx = np.empty_like(h)
    grads = np.empty((2, h.shape[1]), h.dtype)
    F.batch_norm_backward(nn.layers.backend_of(backend), dy, z, h, mean, invstd, gamma, act, dx,
                          grads, train)
    return dx, grads


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_backward_side_by_side_uses_each_columns_own_statistics(train):
    """16 rows of 128 float64 features (2048 elements, under PARALLEL_THRESHOLD, 1024 bytes
    wide): the CPU runs the columns in blocks side by side (``backends.columns``), where
    mean, invstd and gamma are one value per column: each column must get its own."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((16, 128)) * 3 + 1
    dy = rng.standard_normal(h.shape)
    mean, var = h.mean(axis=0), h.var(axis=0)
    invstd = 1 / np.sqrt(var + 1e-5)
    gamma = rng.uniform(0.5, 2, 128)
    act = get_activation("tanh")
    z = gamma * (h - mean) * invstd + 0.1
    be = nn.layers.backend_of("numba")
    assert be.fits_columns([h.reshape(1, *h.shape)])  # the path under test
    got = _bn_backward_on("numba", dy, z, h, mean, invstd, gamma, act, train)
    want = _bn_backward_on("numpy", dy, z, h, mean, invstd, gamma, act, train)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


def test_fused_kernels_of_two_variants_of_one_activation_keep_apart():
    """gelu and gelu(approximate="tanh") share a name: the fused bias+activation kernels
    (``_kernels.bind``, memoized) must be told apart by variant, or whichever variant a
    process binds first serves the other too (up to 5e-4 off: both are plausible values, so a
    gradient check of one layer against its own forward cannot see it)."""
    rng = np.random.default_rng(2)
    h = rng.standard_normal((8, 16)) * 2
    bias = rng.standard_normal(16)
    be = nn.layers.backend_of("numba")
    for values in ({}, {"approximate": "tanh"}, {}):
        act = get_activation("gelu", **values)
        z, y = np.empty_like(h), np.empty_like(h)
        F.bias_act(be, h, bias, act, z, y)
        np.testing.assert_allclose(y, act.reference(h + bias), rtol=1e-12, atol=1e-14,
                                   err_msg=str(values))
        dz, db = np.empty_like(h), np.empty(16)
        F.act_backward(be, y, h + bias, act, dz, db)
        np.testing.assert_allclose(dz, act.reference_backward(y, h + bias), rtol=1e-12,
                                   atol=1e-14, err_msg=str(values))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_before_any_backward_leaves_the_weights(backend):
    """The gradients start as zeros, not uninitialized memory: torch skips a parameter
    with no ``.grad``; ours had moved weights by 1e20 or made them NaN."""
    import fastgd

    garbage = [np.full(n, np.nan) for n in (48, 24, 16, 8, 3) for _ in range(4)]
    del garbage  # freed memory that empty arrays would be handed
    model = nn.MLP([6, 8, 3], batch_norm=True, backend=backend, seed=1)
    before = {k: v.copy() for k, v in model.params.items()}
    assert all(not np.any(g) for g in model.grads.values())
    fastgd.SGD(model.params, lr=0.1).step(model.grads)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize("shape", [(5, 1000), (4099, 3), (1000, 77)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_with_rows_split_among_threads_matches_numpy(shape, train, monkeypatch):
    """Past PARALLEL_THRESHOLD the CPU runs batch norm's lines all at once, each loop's rows
    shared by the threads (``columns(..., split_rows=True)``): fewer rows than parts of the
    sums (SPLIT_ROWS_MIN lowered), parts of one row, odd widths; statistics, input and
    parameter gradients against the NumPy backend."""
    from fastgd import config
    from fastgd.backends.numba_backend import splits_rows
    from fastgd.nn import formulas as fm
    from fastgd.nn._kernels import bind

    monkeypatch.setattr(config, "SPLIT_ROWS_MIN", 1)
    monkeypatch.setattr(nn.layers.backend_of("numba"), "_kernels", {})
    rng = np.random.default_rng(11)
    h = rng.standard_normal(shape) * 3 + 1
    dy = rng.standard_normal(shape)
    act = get_activation("tanh")
    be = nn.layers.backend_of("numba")
    assert splits_rows(bind(fm.bn_backward, act), 5, 3) and splits_rows(fm.bn_stats, 2, 0)
    assert be.fits_columns([h.reshape(1, *shape)], fm.bn_stats)
    stats = {b: F.batch_norm_stats(nn.layers.backend_of(b), h, 1e-5, np.empty((3, shape[1])))
             for b in BACKENDS}
    np.testing.assert_allclose(stats["numba"], stats["numpy"], rtol=1e-12)
    mean, invstd = stats["numpy"][0], stats["numpy"][1]
    gamma = rng.uniform(0.5, 2, shape[1])
    z = gamma * (h - mean) * invstd + 0.1
    got = _bn_backward_on("numba", dy, z, h, mean, invstd, gamma, act, train)
    want = _bn_backward_on("numpy", dy, z, h, mean, invstd, gamma, act, train)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    assert sum(key[3] == "split_rows" for key in be._kernels) == 2  # stats and backward


def test_a_running_maximum_does_not_split_its_rows():
    """A loop whose rows depend on the row before (softmax's maximum) keeps its columns in
    blocks: split among threads, its rows would race."""
    from fastgd.activation import formulas as af
    from fastgd.backends.numba_backend import splits_rows

    assert not splits_rows(af.row_max, 1, 0)
    assert not splits_rows(af.softmax_row, 2, 0)


def _row_function(body):
    """A row function of one array ``x`` and an output ``out`` from ``body``'s lines, in
    fastgd.activation.formulas' globals (F, W, lanes...), its source where the rewrite
    reads it (linecache)."""
    import linecache

    from fastgd.activation import formulas as af
    from fastgd.scalar import scalar

    source = "def row(x, out):\n" + "".join(f"    {line}\n" for line in body)
    name = f"<row function {len(linecache.cache)}>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    scope = dict(vars(af))
    exec(compile(source, name, "exec"), scope)
    return scalar(scope["row"])


@pytest.mark.parametrize("body", [
    ["p = W(1)", "for i in lanes(x.size):", "    p *= W(x[i])", "out[0] = p"],
    ["d = W(0)", "for i in lanes(x.size):", "    d -= W(x[i])", "out[0] = d"],
    ["s = W(0)", "for i in lanes(x.size):", "    s = s + W(x[i])", "out[0] = s"],
    ["for i in lanes(x.size):", "    out[0] += x[i]"],
])
def test_only_sums_and_rows_own_elements_split(body):
    """A product, a difference, a sum written out, or a store into one element by every
    row: each needs the row before, or races: their columns stay in blocks."""
    from fastgd.backends.numba_backend import splits_rows

    assert not splits_rows(_row_function(body), 2, 0)
    assert splits_rows(_row_function(["s = W(0)", "for i in lanes(x.size):",
                                      "    s += W(x[i])", "    out[i] = x[i]", "out[0] = s"]),
                       2, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
def test_batch_norm_options_match_torch(backend, affine, track):
    """affine=False (no gamma, beta) and track_running_stats=False (no running estimates:
    eval normalizes with the batch's statistics, and its backward is training's), forward,
    backward and buffers over two training steps and an eval step, as torch's."""
    rng = np.random.default_rng(4)
    bn = nn.BatchNorm1d(5, affine=affine, track_running_stats=track, backend=backend,
                        dtype=np.float64)
    tbn = torch.nn.BatchNorm1d(5, affine=affine, track_running_stats=track).double()
    assert sorted(bn.params) == (["beta", "gamma"] if affine else [])
    assert sorted(bn.state_dict()) == sorted(
        {"weight": "gamma", "bias": "beta"}.get(k, k) for k in tbn.state_dict())
    for train in (True, True, False):
        x = rng.standard_normal((8, 5)) * 2 + 1
        dy = rng.standard_normal((8, 5))
        tbn.train(train)
        xt = torch.tensor(x, requires_grad=True)
        want = tbn(xt)
        want.backward(torch.tensor(dy))
        np.testing.assert_allclose(bn.forward(x, train=train), want.detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(bn.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        if affine:
            np.testing.assert_allclose(bn.grads["gamma"], tbn.weight.grad.numpy(), rtol=1e-10)
            tbn.weight.grad = tbn.bias.grad = None
        if track:
            np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
            assert bn.num_batches_tracked == int(tbn.num_batches_tracked)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_of_everything_as_torch(backend):
    """p = 1 drops every element, x·0 as torch (NaN for ±inf and NaN), gradient 0."""
    x = np.array([[np.inf, 1.0, np.nan, -2.0]])
    drop = nn.Dropout(1.0, seed=3, backend=backend, dtype=np.float64)
    xt = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.dropout(xt, p=1.0, training=True)
    want.backward(torch.ones_like(want))
    np.testing.assert_array_equal(drop.forward(x, train=True), want.detach().numpy())
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), xt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_layer_predicts_a_copy_of_its_eval_output(backend):
    """predict is every layer's (it was MLP's only): the eval forward's values, in an array
    of its own that the next forward does not overwrite."""
    x = np.random.default_rng(2).standard_normal((5, 8))
    for model in (nn.Sequential([nn.Linear(8, 4, "tanh", name="fc", backend=backend,
                                           dtype=np.float64)]),
                  nn.BatchNorm1d(8, backend=backend, dtype=np.float64),
                  nn.MLP([8, 6, 3], backend=backend, dtype=np.float64)):
        got = model.predict(x)
        want = model.forward(x, train=False).copy()
        model.forward(x * 2, train=False)
        np.testing.assert_array_equal(got, want)


def test_dropout_backward_uses_the_forwards_mask_and_p_is_checked_when_set():
    """A p changed between forward and backward: the backward's mask is the forward's (as
    torch's saved mask); p is checked whenever it is set."""
    drop = nn.Dropout(1.0, seed=0, backend="numba", dtype=np.float64)
    drop.forward(np.ones((2, 4)), train=True)
    drop.p = 0.5
    np.testing.assert_array_equal(drop.backward(np.ones((2, 4))), 0.0)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dropout probability"):
            drop.p = bad
    assert drop.p == 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_predict_between_a_training_forward_and_its_backward_changes_nothing(backend):
    """predict runs on a view of the model (its parameters, workspaces of its own): between a
    training forward and its backward it leaves what the backward reads alone (it wrote its
    activations into the same buffers and its input over the saved one)."""
    rng = np.random.default_rng(5)
    x, x2 = rng.standard_normal((6, 8)), rng.standard_normal((9, 8))
    dy = rng.standard_normal((6, 3))
    plain = nn.MLP([8, 16, 16, 3], "gelu", batch_norm=True, dropout=0.25, residual=True,
                   backend=backend, dtype=np.float64, seed=3)
    interrupted = copy.deepcopy(plain)
    plain.forward(x, train=True)
    want_dx = plain.backward(dy)
    interrupted.forward(x, train=True)  # batch norm's running statistics move
    want_y2 = copy.deepcopy(interrupted).forward(x2, train=False).copy()
    np.testing.assert_array_equal(interrupted.predict(x2), want_y2)
    np.testing.assert_array_equal(interrupted.backward(dy), want_dx)
    for key, g in plain.grads.items():
        np.testing.assert_array_equal(interrupted.grads[key], g, err_msg=key)


def test_predict_from_two_threads_at_once_on_one_model():
    """The usual serving pattern: threads calling predict on one model each get their own
    input's output (102-163 of 300 calls a thread got a mix of the two, an audit)."""
    rng = np.random.default_rng(0)
    model = nn.MLP([64, 256, 256, 10], "gelu", backend="numba")
    xs = [rng.standard_normal((512, 64)).astype(np.float32) for _ in range(2)]
    want = [model.predict(x) for x in xs]
    wrong = [0, 0]

    def serve(k):
        for _ in range(100):
            wrong[k] += not np.array_equal(model.predict(xs[k]), want[k])

    run_threads(serve, [(0,), (1,)])
    assert wrong == [0, 0]
