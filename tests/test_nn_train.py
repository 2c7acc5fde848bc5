"""fastgd.nn.train, data sets and the checks made before training starts."""

import sys
import threading

import numpy as np
import pytest

import fastgd
from fastgd import nn


@pytest.fixture(scope="module")
def digits():
    return nn.datasets.digits()


def test_digits_mlp_reaches_95_percent_on_numba(digits):
    model = nn.MLP([64, 128, 128, 10], activation="gelu", batch_norm=True, dropout=0.1,
                   backend="numba", seed=0)
    opt = fastgd.Adam(model.params, lr=1e-3)
    hist = nn.train(model, digits, loss="cross_entropy", optimizer=opt,
                    mode="minibatch", batch_size=64, epochs=20, seed=0, progress=False)
    assert hist.test_accuracy[-1] >= 0.95, hist
    assert hist.loss[-1] < hist.loss[0]
    assert len(hist.time) == 20 and all(t > 0 for t in hist.time)
    assert set(hist.grad_norms[-1]) == set(model.params)
    assert hist.lr[-1] == pytest.approx(1e-3)


def _small(digits, n=300):
    return (digits.x_train[:n].astype(np.float64), digits.y_train[:n],
            digits.x_test[:100].astype(np.float64), digits.y_test[:100])


def test_numba_and_numpy_give_the_same_history(digits):
    hists = []
    for backend in ("numba", "numpy"):
        model = nn.MLP([64, 32, 32, 10], activation="gelu", batch_norm=True, dropout=0.2,
                       residual=True, backend=backend, dtype=np.float64, seed=4)
        hists.append(nn.train(model, _small(digits), optimizer=fastgd.Adam(model.params, lr=3e-3),
                              batch_size=50, epochs=3, seed=1, progress=False,
                              label_smoothing=0.1))
    a, b = hists
    for key in ("loss", "test_loss", "test_accuracy", "train_accuracy", "step_loss"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-9, err_msg=key)
    for ga, gb in zip(a.grad_norms, b.grad_norms):
        np.testing.assert_allclose(list(ga.values()), list(gb.values()), rtol=1e-8)


@pytest.mark.parametrize("mode,steps", [("batch", 1), ("sgd", 40), ("minibatch", 4)])
def test_modes_and_dead_relu(mode, steps):
    data = nn.datasets.two_moons(n=54, seed=1, dtype=np.float64)
    model = nn.MLP([2, 16, 2], activation="relu", backend="numba", dtype=np.float64)
    hist = nn.train(model, data, optimizer=fastgd.Adam(model.params, lr=1e-2), mode=mode,
                    batch_size=12, epochs=2, progress=False)
    assert hist.steps == 2 * steps
    assert len(hist.step_loss) == 2 * steps
    assert 0.0 <= hist.dead_relu[-1] <= 1.0
    # a unit whose weights and bias are very negative never fires: it is dead
    model.params["fc1.weight"][:, :4] = 0.0
    model.params["fc1.bias"][:4] = -5.0
    model.forward(data.x_train, train=False)
    assert nn.dead_fraction(model) >= 4 / 16


def test_history_holds_the_mean_gradient_norms_and_the_dead_units():
    """Each epoch's grad_norms is the mean over its steps of every gradient's L2 norm, as an
    optimizer sees them; dead_relu is the fraction of hidden units whose eval-mode input is
    <= 0 for every training sample evaluated, computed here from the weights."""
    data = nn.datasets.two_moons(n=60, seed=1, dtype=np.float64)
    model = nn.MLP([2, 16, 2], activation="relu", backend="numba", dtype=np.float64, seed=3)
    model.params["fc1.weight"][:, :5] = 0.0
    model.params["fc1.bias"][:5] = -1.0  # five units that never fire

    class Recorder:  # lr 0: the parameters stay put, each batch gives other gradients
        lr = 0.0
        seen = []

        def step(self, grads):
            self.seen.append({k: np.linalg.norm(g) for k, g in grads.items()})

    hist = nn.train(model, data, optimizer=Recorder(), mode="minibatch", batch_size=16,
                    epochs=1, eval_samples=50, progress=False)
    assert len(Recorder.seen) == -(-len(data.x_train) // 16) >= 3
    for key in model.params:
        want = np.mean([s[key] for s in Recorder.seen])
        np.testing.assert_allclose(hist.grad_norms[0][key], want, rtol=1e-12, err_msg=key)
    assert len({s["fc1.weight"] for s in Recorder.seen}) == len(Recorder.seen)  # all differ
    z = data.x_train[:50] @ model.params["fc1.weight"] + model.params["fc1.bias"]
    dead = np.mean(z.max(axis=0) <= 0)
    assert 5 / 16 <= dead < 1
    assert hist.dead_relu[0] == dead


def test_divergence_stops_training():
    data = nn.datasets.xor(n=64, dtype=np.float64)
    model = nn.MLP([2, 8, 2], activation="relu", backend="numba", dtype=np.float64)

    class Exploding:
        lr = 1.0

        def step(self, grads):
            for p in model.params.values():
                p *= 1e200

    with np.errstate(all="ignore"):
        hist = nn.train(model, data, optimizer=Exploding(), batch_size=8, epochs=5,
                        progress=False)
    assert hist.diverged and len(hist.epoch) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_divergence_stops_before_the_step_of_the_non_finite_loss(dtype):
    """A learning rate far too large: the loss overflows, and training stops with the last
    finite parameters, not after applying that batch's step (which made them inf/NaN)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 2)).astype(dtype), rng.standard_normal((64, 1)).astype(dtype)
    model = nn.MLP([2, 8, 1], activation="tanh", backend="numba", dtype=dtype, seed=0)
    with np.errstate(all="ignore"):
        hist = nn.train(model, (x, y), loss="mse", optimizer=fastgd.SGD(model.params, lr=1e3),
                        batch_size=8, epochs=20, progress=False)
    assert hist.diverged and not np.isfinite(hist.step_loss[-1])
    assert all(np.isfinite(p).all() for p in model.params.values())
    assert np.isfinite(model.forward(x)).all()
    assert hist.steps == len(hist.step_loss) - 1  # the last loss's step was not taken


def test_profile_and_progress(capsys):
    data = nn.datasets.spirals(n=90, dtype=np.float64)
    model = nn.MLP([2, 8, 3], backend="numba", dtype=np.float64)
    hist = nn.train(model, data, optimizer=fastgd.Adam(model.params), epochs=2, batch_size=16,
                    profile=True, progress=True)
    out = capsys.readouterr()
    assert "matmul" in out.out and "fused kernels" in out.out and "optimizer step" in out.out
    assert hist.profile["matmul"] > 0 and hist.profile["total"] > 0
    assert "epoch" in out.err or "loss" in out.err  # the progress bar (tqdm or lines)


# -- data sets ------------------------------------------------------------------------------


def test_datasets_are_seeded_and_split(digits):
    assert digits.x_train.shape == (1347, 64) and digits.x_test.shape == (450, 64)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    for make in (nn.datasets.xor, nn.datasets.two_moons, nn.datasets.spirals):
        a, b, c = make(seed=3), make(seed=3), make(seed=4)
        np.testing.assert_array_equal(a.x_train, b.x_train)
        assert not np.array_equal(a.x_train, c.x_train)
        assert a.n_features == 2 and len(np.unique(a.y_train)) == a.n_classes
        sized = make(n=101, seed=3)  # n points, whatever the classes (spirals gave 99)
        assert len(sized.y_train) + len(sized.y_test) == 101
    x_tr, x_te, y_tr, y_te = nn.datasets.train_test_split(np.arange(40)[:, None],
                                                          np.arange(40) % 2, 0.25)
    assert len(x_te) == 10 and sorted(np.r_[x_tr[:, 0], x_te[:, 0]]) == list(range(40))
    assert y_te.sum() == 5  # stratified


@pytest.mark.parametrize("test_size", [0.1, 0.25, 0.6])
def test_train_test_split_sizes_as_scikit_learn(test_size):
    """ceil(test_size * N) test samples, however many classes: 20 classes of 4 rounded each
    class on its own (0.4 of a sample: none at 0.1, 2 each at 0.6: 40 instead of 48)."""
    split = nn.datasets.train_test_split
    x, y = np.arange(80.0)[:, None], np.repeat(np.arange(20), 4)
    x_tr, x_te, y_tr, y_te = split(x, y, test_size, seed=1)
    n_test = int(np.ceil(test_size * 80))
    assert len(x_te) == len(y_te) == n_test and len(x_tr) == 80 - n_test
    assert sorted(np.r_[x_tr[:, 0], x_te[:, 0]]) == list(range(80))
    assert np.array_equal(y[x_te[:, 0].astype(int)], y_te)
    per_class = np.bincount(y_te, minlength=20)  # each class its share, give or take one
    assert per_class.min() >= np.floor(test_size * 4) and per_class.max() <= np.ceil(
        test_size * 4)


def test_train_test_split_of_other_targets_and_small_sets():
    split = nn.datasets.train_test_split
    x = np.arange(40.0)[:, None]
    for y in (np.linspace(0, 1, 40)[:, None], np.eye(4)[np.arange(40) % 4],
              np.linspace(0, 1, 40)):  # regression values, probability rows
        x_tr, x_te, y_tr, y_te = split(x, y, 0.25)
        assert len(x_te) == len(y_te) == 10 and len(x_tr) == len(y_tr) == 30
        np.testing.assert_array_equal(y[x_te[:, 0].astype(int)], y_te)
    assert nn.datasets.spirals(n=6, classes=3).y_test.size == 2  # had none
    mixed = np.array(["a", None, "b", "a"] * 10, dtype=object)  # unsortable: not stratified
    assert [len(part) for part in split(x, mixed, 0.25)] == [30, 10, 30, 10]
    for labels in (np.array(["cat"] * 36 + ["dog"] * 4), np.r_[np.zeros(36), np.ones(4)]):
        for seed in range(6):  # class labels of any dtype: the minority class in each part
            y_te = split(x, labels, 0.25, seed=seed)[3]
            assert list(y_te).count(labels[-1]) == 1
    with pytest.raises(ValueError, match="leaves none for training"):
        split(np.zeros((1, 1)), np.zeros(1, int), 0.5)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[examples\]'"):
        nn.datasets.digits()


# -- bad input: each raises before training starts ----------------------------------------


@pytest.fixture
def setup():
    data = nn.datasets.xor(n=40, dtype=np.float64)
    model = nn.MLP([2, 4, 2], backend="numba", dtype=np.float64)
    opt = fastgd.Adam(model.params)
    before = {k: v.copy() for k, v in model.params.items()}
    yield model, data, opt
    for k, v in model.params.items():  # nothing was trained
        np.testing.assert_array_equal(v, before[k])


def _train(setup, **kw):
    model, data, opt = setup
    args = dict(optimizer=opt, progress=False, epochs=1)
    args.update(kw)
    data = args.pop("data", data)
    return nn.train(model, data, **args)


def test_bad_labels_out_of_range(setup):
    d = setup[1]
    with pytest.raises(ValueError, match=r"labels in y_train must be in \[0, 2\)"):
        _train(setup, data=(d.x_train, d.y_train + 1))


def test_bad_labels_shape(setup):
    d = setup[1]
    with pytest.raises(ValueError, match=r"y_train must have shape \(30,\)"):
        _train(setup, data=(d.x_train, d.y_train[:, None]))
    with pytest.raises(TypeError, match="cross_entropy needs integer labels"):
        _train(setup, data=(d.x_train, d.y_train.astype(np.float64)))


def test_bad_features_and_targets_shape(setup):
    d = setup[1]
    with pytest.raises(ValueError, match=r"x_train must have shape \(N, 2\)"):
        _train(setup, data=(d.x_train[:, :1], d.y_train))
    with pytest.raises(ValueError, match=r"y_train must have shape \(30, 2\)"):
        _train(setup, data=(d.x_train, np.ones((30, 3))), loss="mse")
    with pytest.raises(ValueError, match=r"x_test must have shape \(N, 2\)"):
        _train(setup, data=(d.x_train, d.y_train, d.x_test[:, :1], d.y_test))


@pytest.mark.parametrize("bs", [0, 31, -1])
def test_bad_batch_size(setup, bs):
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 30\]"):
        _train(setup, batch_size=bs)


def test_bad_batch_size_type(setup):
    with pytest.raises(TypeError, match="batch_size must be an int"):
        _train(setup, batch_size=2.5)


def test_unknown_mode_loss_and_missing_optimizer(setup):
    with pytest.raises(ValueError, match="unknown mode 'online'"):
        _train(setup, mode="online")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        _train(setup, loss="hinge")
    with pytest.raises(TypeError, match=r"train needs an optimizer with a step\(grads\)"):
        _train(setup, optimizer=None)
    with pytest.raises(TypeError, match="data must be a fastgd.nn.datasets.Dataset"):
        _train(setup, data=[1, 2, 3])


def test_losses_that_do_not_average(setup):
    """'none' gives no number to step on and 'sum' a step that grows with the batch: both
    refused before the first step (a 'none' loss failed after the optimizer had stepped)."""
    for reduction in ("none", "sum"):
        with pytest.raises(ValueError, match="need reduction='mean'"):
            _train(setup, loss=nn.Loss("cross_entropy", reduction))
    with pytest.raises(ValueError, match="go with a loss name"):
        _train(setup, loss=nn.Loss("cross_entropy"), label_smoothing=0.1)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_evaluate_checks_labels_and_averages(backend):
    """evaluate is public: its labels are checked as train's are (on numba an out-of-range
    label was read past the logits), and no samples give NaN, not 0."""
    model = nn.MLP([5, 8, 3], backend=backend, dtype=np.float64)
    x = np.random.default_rng(1).random((37, 5))
    with pytest.raises(ValueError, match=r"labels in y must be in \[0, 3\)"):
        nn.evaluate(model, x, np.full(37, 7), chunk=16)
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):  # was read in chunks
        nn.evaluate(model, x[:8], np.arange(9) % 3, chunk=4)  # and the extra label ignored
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        nn.evaluate(model, x, y := np.arange(37) % 3, chunk=0)
    loss, acc = nn.evaluate(model, x, y, chunk=16)
    want = nn.cross_entropy(model.forward(x, train=False), y)
    assert loss == pytest.approx(want, rel=1e-12) and 0 <= acc <= 1
    assert all(np.isnan(nn.evaluate(model, x[:0], y[:0])))
    with pytest.raises(ValueError, match="need reduction='mean'"):
        nn.evaluate(model, x, y, loss=nn.Loss("cross_entropy", "sum"))


class _FakeDeviceArray:
    """Looks like a GPU array (has __cuda_array_interface__)."""

    def __init__(self, a):
        self.shape, self.dtype = a.shape, a.dtype
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str,
                                         "data": (0, False), "version": 3}


def test_model_and_data_on_different_backends(setup):
    d = setup[1]
    with pytest.raises(TypeError, match="lives on another device; move the data with "
                                        "fastgd.to_host"):
        _train(setup, data=(_FakeDeviceArray(d.x_train), d.y_train))
    with pytest.raises(TypeError, match="x_train is float32 but the model is float64"):
        _train(setup, data=(d.x_train.astype(np.float32), d.y_train))


def test_batch_norm_with_single_sample_batches(setup):
    model = nn.MLP([2, 4, 2], batch_norm=True, backend="numba", dtype=np.float64)
    with pytest.raises(ValueError, match="batch norm needs batches of at least 2 samples"):
        nn.train(model, setup[1], optimizer=fastgd.SGD(model.params), mode="sgd",
                 progress=False)


def test_batch_statistics_in_eval_are_checked_before_training_and_read_whole():
    """An audit: a batch norm without running statistics normalizes eval data by their own
    statistics. evaluate read them in chunks (the result depended on the chunk size) and a
    test set of one row failed after the first epoch had trained."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((65, 2))
    y = (x[:, 0] > 0).astype(np.int64)

    def model():
        return nn.Sequential([nn.Linear(2, 4, backend="numpy", dtype=np.float64),
                              nn.BatchNorm1d(4, "relu", track_running_stats=False,
                                             backend="numpy", dtype=np.float64),
                              nn.Linear(4, 2, backend="numpy", dtype=np.float64)])

    m = model()
    w0 = m.params["linear1.weight"].copy()
    for data, options in (((x[:64], y[:64], x[64:], y[64:]), {}),
                          ((x, y), {"eval_samples": 1})):
        with pytest.raises(ValueError, match="needs 2 samples or more"):
            nn.train(m, data, optimizer=fastgd.SGD(m.params, lr=0.1), epochs=2,
                     progress=False, **options)
        np.testing.assert_array_equal(m.params["linear1.weight"], w0)
    whole = nn.evaluate(m, x[:64], y[:64], chunk=64)
    assert nn.evaluate(m, x[:64], y[:64], chunk=8) == whole
    want = nn.cross_entropy(m.forward(x[:64], train=False), y[:64])
    assert whole[0] == pytest.approx(want, rel=1e-12)
    hist = nn.train(m, (x[:60], y[:60], x[60:], y[60:]), optimizer=fastgd.SGD(m.params),
                    epochs=1, progress=False)
    assert np.isfinite(hist.test_loss[-1])
    from fastgd.nn.layers import every_layer

    before = [set(layer._work) for layer in every_layer(m)]
    nn.evaluate(m, np.tile(x, (40, 1)), np.tile(y, 40))  # buffers of 2,600 rows: dropped
    assert [set(layer._work) for layer in every_layer(m)] == before


def test_train_takes_a_single_layer():
    """A bare Linear (logistic regression) failed with an AttributeError after the checks."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = (x @ [1.0, -2.0, 0.5] > 0).astype(np.int64)
    layer = nn.Linear(3, 2, backend="numpy", dtype=np.float64)
    hist = nn.train(layer, (x, y), optimizer=fastgd.SGD(layer.params, lr=0.5), epochs=30,
                    batch_size=8, progress=False)
    assert hist.loss[-1] < hist.loss[0] and hist.train_accuracy[-1] >= 0.9


def test_an_optimizer_of_another_model_is_refused_before_anything_changes(setup):
    """An optimizer built on another model's params (a notebook cell rerun for the model but
    not for the optimizer) updated that model with this one's gradients: nothing trained, no
    error. On a subset, a list or another dtype it failed after batch norm and dropout had
    advanced."""
    model, data, _ = setup
    twin = nn.MLP([2, 4, 2], backend="numba", dtype=np.float64, seed=1)
    other = {k: v.copy() for k, v in twin.params.items()}
    for opt, match in ((fastgd.Adam(twin.params), "another array than the model's"),
                       (fastgd.Adam({k: model.params[k] for k in ["fc1.weight"]}),
                        "has no param 'fc1.bias'"),
                       (fastgd.Adam(list(model.params.values())), "holds a list of params")):
        with pytest.raises(ValueError, match=match):
            _train(setup, optimizer=opt)
    for k, v in twin.params.items():
        np.testing.assert_array_equal(v, other[k])
    bn = nn.MLP([2, 4, 2], batch_norm=True, dropout=0.5, backend="numba")
    with pytest.raises(ValueError, match="another array"):
        nn.train(bn, data.astype(np.float32), optimizer=fastgd.Adam(
            nn.MLP([2, 4, 2], batch_norm=True, backend="numba").params), progress=False)
    for views in ({k: v[:1] if v.ndim == 1 else v for k, v in bn.params.items()},
                  {k: v.reshape(-1) for k, v in bn.params.items()}):  # the same memory
        with pytest.raises(ValueError, match="another array"):
            nn.train(bn, data.astype(np.float32), optimizer=fastgd.SGD(views), progress=False)
    bn_layer = next(m for m in bn.modules() if hasattr(m, "running_mean"))
    assert bn_layer.num_batches_tracked == 0 and not bn_layer.running_mean.any()


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_eval_samples_and_blas_threads_are_refused_first(setup, bad):
    with pytest.raises(ValueError, match="eval_samples must be an int >= 1"):
        _train(setup, eval_samples=bad)
    with pytest.raises(ValueError, match="blas_threads must be 'auto', None or an int >= 1"):
        _train(setup, blas_threads=bad if bad != 2.5 else "bogus")
    if bad != 0:  # seed 0 is a seed (NumPy's own errors named no argument)
        with pytest.raises(ValueError, match="seed must be None, an int >= 0"):
            _train(setup, seed=bad)


def test_data_that_is_not_an_array_is_named(setup):
    d = setup[1]
    with pytest.raises(TypeError, match=r"x_train must be an array \(np.asarray for the numba "
                                        r"backend\), got list"):
        _train(setup, data=(d.x_train.tolist(), d.y_train))


def test_a_sequential_model_trains():
    """train() read MLP's sizes and activation layers: a Sequential raised AttributeError."""
    data = nn.datasets.xor(n=64, dtype=np.float64)
    seq = nn.Sequential([nn.Linear(2, 16, "tanh", name="a", backend="numba", dtype=np.float64),
                         nn.Linear(16, 2, name="b", backend="numba", dtype=np.float64)])
    hist = nn.train(seq, data, optimizer=fastgd.Adam(seq.params, lr=0.05), epochs=40,
                    progress=False)
    assert hist.train_accuracy[-1] >= 0.9 and len(hist.loss) == 40
    assert np.isnan(hist.dead_relu[-1])  # no ReLU units


def test_skipped_steps_neither_count_nor_stop_training():
    """With skip_nonfinite a batch of NaN gradients leaves the model as it was: its loss
    and gradient norms are not the epoch's, and training goes on (it stopped as diverged)."""
    data = nn.datasets.xor(n=64, dtype=np.float64)
    x = data.x_train.copy()
    x[5] = np.nan  # one sample: its batch's gradients are NaN
    model = nn.MLP([2, 8, 2], backend="numba", dtype=np.float64)
    opt = fastgd.Adam(model.params, lr=0.05, skip_nonfinite=True)
    hist = nn.train(model, (x, data.y_train), optimizer=opt, batch_size=16, epochs=3,
                    progress=False)
    assert not hist.diverged and len(hist.loss) == 3
    batches = -(-x.shape[0] // 16)
    assert hist.skipped_steps == 3 and hist.steps == 3 * (batches - 1)
    assert all(np.isfinite(hist.loss)) and all(
        np.isfinite(v) for g in hist.grad_norms for v in g.values())
    assert all(np.isfinite(v).all() for v in model.params.values())
    assert len(hist.step_loss) == len(hist.step_grad_norm) == 3 * batches  # every step


def test_mlp_sizes_and_init_are_checked():
    with pytest.raises(ValueError, match="MLP sizes must be ints"):
        nn.MLP([64, 32.7, 10])
    with pytest.raises(ValueError, match="init as a standard deviation must be finite and >= 0"):
        nn.MLP([4, 2], init=-1.0)
    assert nn.MLP([np.int64(4), 2], init=0.5).sizes == [4, 2]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_model_state_dict_continues_training_bit_for_bit(backend, tmp_path):
    """Batch norm's running statistics and dropout's step are not params: restoring the
    params alone evaluated at 0.589 accuracy where the model had 0.909."""
    data = nn.datasets.digits()

    def build(seed):
        model = nn.MLP([64, 32, 10], batch_norm=True, dropout=0.2, backend=backend, seed=seed)
        return model, fastgd.Adam(model.params, lr=1e-2)

    def fit(model, opt, epochs, seed):
        nn.train(model, data, optimizer=opt, epochs=epochs, seed=seed, batch_size=64,
                 progress=False)

    whole, opt = build(0)
    fit(whole, opt, 2, 0)
    fit(whole, opt, 1, 1)
    first, opt1 = build(0)
    fit(first, opt1, 2, 0)
    np.savez(tmp_path / "ckpt.npz", **first.state_dict())
    np.savez(tmp_path / "opt.npz", **opt1.state_dict())
    resumed, opt2 = build(7)  # another initialization, overwritten by the load
    resumed.load_state_dict(np.load(tmp_path / "ckpt.npz"))
    opt2.load_state_dict(np.load(tmp_path / "opt.npz"))
    fit(resumed, opt2, 1, 1)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    np.testing.assert_array_equal(resumed.predict(data.x_test), whole.predict(data.x_test))


def test_model_load_state_dict_checks_everything_first():
    model = nn.MLP([4, 3, 2], batch_norm=True, dropout=0.1, backend="numba")
    good = model.state_dict()
    assert good["bn1.num_batches_tracked"] == 0 and good["drop1.step"] == 0
    for change, match in (({"fc1.weight": np.zeros((3, 4), np.float32)},
                           "float32\\[3, 4\\], expected float32\\[4, 3\\] \\(Linear weights "
                           "are \\(in, out\\): torch's \\(out, in\\) need .T\\)"),
                          ({"bn1.gamma": np.zeros((1, 3), np.float32)}, r"\[3\]$"),
                          ({"fc1.weight": np.zeros((4, 3))}, "float64"),
                          ({"bn1.num_batches_tracked": np.array(-1)}, "must be an int >= 0"),
                          ({"bn9.gamma": np.ones(3, np.float32)}, "which this model does not")):
        bad = {**good, **change, "fc2.bias": np.full(2, 5.0, np.float32)}
        with pytest.raises(ValueError, match=match):
            model.load_state_dict(bad)
        assert not (model.params["fc2.bias"] == 5.0).any()
    square = nn.Linear(4, 4, backend="numpy")
    for key in ("weight", "bias"):  # a dtype alone: no transposing hint
        bad = {**square.state_dict(), key: square.params[key].astype(np.float64)}
        with pytest.raises(ValueError, match=r"expected float32\[[\d, ]+\]$"):
            square.load_state_dict(bad)
    bad = dict(good)
    del bad["drop1.step"]
    with pytest.raises(ValueError, match="has no 'drop1.step'"):
        model.load_state_dict(bad)


def test_dropout_seed_is_an_int_that_round_trips():
    with pytest.raises(ValueError, match="dropout seed must be an int >= 0"):
        nn.Dropout(0.5, seed=-3)
    drop = nn.Dropout(0.5, seed=np.int64(3), backend="numba")
    drop.load_state_dict(drop.state_dict())
    assert drop.seed == 3


def _state(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_grad_norms_checks_labels_before_the_forward(backend):
    """The training-mode forward advances batch norm and dropout: bad labels used to be
    found by the loss after it."""
    model = nn.MLP([2, 4, 3], batch_norm=True, dropout=0.2, backend=backend)
    x = np.random.default_rng(0).random((5, 2)).astype(np.float32)
    before = _state(model)
    with pytest.raises(ValueError, match=r"labels in y must be in \[0, 3\)"):
        nn.grad_norms(model, x, np.array([0, 1, 2, 3, 0]))
    after = _state(model)
    assert all(np.array_equal(after[k], v) for k, v in before.items())
    norms = nn.grad_norms(model, x, np.array([0, 1, 2, 1, 0]))
    assert set(norms) == {"fc1", "fc2"} and all(v > 0 for v in norms.values())


@pytest.mark.parametrize("mode", ["batch", "sgd", "minibatch"])
def test_an_empty_training_set_is_refused(setup, mode):
    with pytest.raises(ValueError, match="the training set is empty"):
        _train(setup, data=(np.zeros((0, 2)), np.zeros(0, np.int64)), mode=mode)


def test_sequential_widths_are_checked_when_built():
    """A width mismatch used to surface in the forward, after batch norm and dropout had
    advanced (train's checks passed: they look at the first and last widths only)."""
    with pytest.raises(ValueError, match="layer c takes width 4, but b gives 3"):
        nn.Sequential([nn.Linear(2, 3, name="a"), nn.BatchNorm1d(3, name="b"),
                       nn.Dropout(0.5, name="d"), nn.Linear(4, 2, name="c")])
    with pytest.raises(ValueError, match="layer r takes width 5, but a gives 3"):
        nn.Sequential([nn.Linear(2, 3, name="a"),
                       nn.Residual([nn.Linear(5, 5, name="l")], name="r")])
    s = nn.Sequential([nn.Dropout(0.1, name="d"), nn.Linear(2, 3, name="a"),
                       nn.Residual([nn.Linear(3, 3, name="l")], name="r"),
                       nn.Linear(3, 1, name="c")])
    assert nn.layers.widths(s) == (2, 1)


def test_small_layer_settings_are_checked():
    with pytest.raises(ValueError, match="num_features must be an int >= 1"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\]"):
        nn.MLP([2, 3], dropout=1.5)  # no hidden layer, so no Dropout to check it
    with pytest.raises(ValueError, match="go with a loss name"):
        nn.get_loss(nn.Loss("mse"), reduction="sum")
    with pytest.raises(TypeError, match="takes arrays, got the input as list"):
        nn.Linear(2, 1, backend="numba").forward([[1.0, 2.0]])


def test_a_layer_of_the_users_own_may_change_the_width():
    """Sequential's width check took an unknown layer for one that keeps the width."""
    class Twice(nn.Layer):  # x -> [x, x]
        def __init__(self):
            super().__init__("numpy", np.float32, "twice")

        def forward(self, x, train=True):
            return np.concatenate([x, x], 1)

        def backward(self, dy):
            h = dy.shape[1] // 2
            return dy[:, :h] + dy[:, h:]

    s = nn.Sequential([nn.Linear(4, 8, backend="numpy", name="fc1"), Twice(),
                       nn.Linear(16, 2, backend="numpy", name="fc2")])
    assert s.forward(np.ones((3, 4), np.float32)).shape == (3, 2)
    # a residual block gives the width it takes, its layers' widths known or not (as widths)
    with pytest.raises(ValueError, match="fc2 takes width 16, but fc1 gives 8"):
        nn.Sequential([nn.Linear(4, 8, backend="numpy", name="fc1"),
                       nn.Residual([nn.Dropout(0.1, backend="numpy", dtype=np.float32)]),
                       nn.Linear(16, 2, backend="numpy", name="fc2")])


class _Project(nn.Layer):
    """x @ m: a layer of the user's that changes the width (fastgd cannot know to what)."""

    def __init__(self, a, b, name):
        super().__init__("numba", np.float32, name)
        self.m = np.random.default_rng(a * b).standard_normal((a, b)).astype(np.float32)

    def forward(self, x, train=True):
        return x @ self.m

    def backward(self, dy):
        return dy @ self.m.T


@pytest.mark.parametrize("layers, widths, classes", [
    (lambda: [nn.Linear(4, 5, backend="numba", name="fc"), _Project(5, 3, "p")], (4, None), 3),
    (lambda: [_Project(4, 6, "p"), nn.Dropout(0.1, backend="numba"),
              nn.Linear(6, 6, backend="numba", name="fc"), _Project(6, 2, "q")], (None, None), 2),
    (lambda: [nn.Linear(4, 3, backend="numba", name="fc"), _Project(3, 5, "p")], (4, None), 5),
    (lambda: [nn.Dropout(0.1, backend="numba"), _Project(4, 6, "p"),
              nn.Linear(6, 3, backend="numba", name="fc"),
              nn.Dropout(0.1, backend="numba", name="d2")], (None, 3), 3),
])
def test_train_checks_labels_against_the_width_a_users_layer_gives(layers, widths, classes):
    """Widths stop at a layer of the user's; the trainer then asks the model for its output
    width (an eval forward), where it took the last known width or the input's (found by an
    audit: labels past the outputs trained, read past each row; valid ones were refused)."""
    model = nn.Sequential(layers())
    assert nn.layers.widths(model) == widths
    x = np.random.default_rng(4).standard_normal((8, 4)).astype(np.float32)
    labels = np.arange(8) % classes
    opt = fastgd.SGD(model.params, lr=0.01)
    hist = nn.train(model, (x, labels), optimizer=opt, batch_size=4, epochs=1,
                    progress=False)
    assert np.isfinite(hist.loss[-1])
    with pytest.raises(ValueError, match=rf"must be in \[0, {classes}\) for a model with "
                                         rf"{classes} outputs"):
        nn.train(model, (x, labels + 1), optimizer=opt, batch_size=4, epochs=1,
                 progress=False)


@pytest.mark.parametrize("loss", [{"weight": np.ones(3)}, {"ignore_index": 0}])
def test_train_refuses_probability_targets_for_a_weighted_loss_before_the_first_step(loss):
    """weight and ignore_index take labels: refused before a training forward changed
    batch norm's statistics (weight), or with every row read as ignored label 0 and no
    step taken (ignore_index; found by an audit)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    p = rng.random((8, 3)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    model = nn.MLP([4, 5, 3], batch_norm=True, dropout=0.2, backend="numba", seed=0)
    before = model.state_dict()
    with pytest.raises(ValueError, match="take class labels, not the probability targets"):
        nn.train(model, (x, p), loss=nn.get_loss("cross_entropy", **loss),
                 optimizer=fastgd.SGD(model.params, lr=0.1), batch_size=4, epochs=1,
                 progress=False)
    after = model.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_probability_targets_for_cross_entropy(backend):
    """The loss takes probabilities (soft labels); grad_norms refused them after its labels
    were checked up front, and evaluate and train could not use them."""
    rng = np.random.default_rng(3)
    x = rng.random((40, 4)).astype(np.float32)
    labels = (x[:, 0] > 0.5).astype(np.int64)
    soft = np.full((40, 2), 0.05, np.float32)
    soft[np.arange(40), labels] = 0.95
    model = nn.MLP([4, 8, 2], backend=backend)
    assert set(nn.grad_norms(model, x, soft)) == {"fc1", "fc2"}
    loss, acc = nn.evaluate(model, x, soft)
    want = nn.cross_entropy(model.forward(x, train=False), soft)
    assert loss == pytest.approx(want, rel=1e-6)
    assert acc == nn.evaluate(model, x, labels)[1]  # the most likely class is the label
    hist = nn.train(model, (x, soft), optimizer=fastgd.SGD(model.params, lr=0.5),
                    mode="batch", epochs=3, progress=False)
    assert hist.loss[-1] < hist.loss[0]
    with pytest.raises(TypeError, match=r"integer labels or float32 probabilities \(40, 2\)"):
        nn.grad_norms(model, x, labels.astype(np.float32))


def test_grad_norms_leaves_the_models_buffers_as_they_were():
    """A probe of the gradient norms between epochs runs a training forward: batch norm's
    running statistics and the dropout layers' steps (their next masks) are put back."""
    data = nn.datasets.digits()
    model = nn.MLP([64, 16, 10], batch_norm=True, dropout=0.3, backend="numba")
    before = model.state_dict()
    norms = nn.grad_norms(model, data.x_train[:64], data.y_train[:64])
    assert set(norms) == {"fc1", "fc2"} and all(v > 0 for v in norms.values())
    after = model.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_minibatch_order_follows_the_seed():
    data = nn.datasets.xor(n=64, dtype=np.float64)
    losses = []
    for seed in (0, 1):
        model = nn.MLP([2, 8, 2], backend="numpy", dtype=np.float64, seed=0)
        losses.append(nn.train(model, data, optimizer=fastgd.SGD(model.params, lr=0.1),
                               mode="minibatch", batch_size=8, epochs=1, seed=seed,
                               progress=False).step_loss)
    assert losses[0] != losses[1]  # the same model, batches drawn in another order


def test_the_epochs_evaluation_runs_in_eval_mode():
    """It must leave batch norm's running statistics and the dropout masks' step alone, and
    measure the training accuracy as evaluate does (no dropout)."""
    data = nn.datasets.xor(n=64, dtype=np.float64)
    model = nn.MLP([2, 8, 2], batch_norm=True, dropout=0.5, backend="numpy",
                   dtype=np.float64, seed=0)
    hist = nn.train(model, (data.x_train, data.y_train),
                    optimizer=fastgd.SGD(model.params, lr=0.1), mode="minibatch",
                    batch_size=16, epochs=1, progress=False)
    steps = -(-len(data.x_train) // 16)
    state = model.state_dict()
    assert state["bn1.num_batches_tracked"] == state["drop1.step"] == steps
    assert hist.train_accuracy[-1] == pytest.approx(nn.evaluate(model, data.x_train,
                                                                data.y_train)[1])


def test_binary_accuracy_thresholds_the_logits_at_zero():
    from fastgd.nn.trainer import accuracy

    loss = nn.get_loss("binary_cross_entropy_with_logits")
    out, y = np.array([[0.3], [-0.3], [2.0]]), np.array([[1.0], [0.0], [1.0]])
    assert accuracy(loss, out, y) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_gives_the_rounding_leftovers_to_the_largest_remainders(seed):
    """Classes of 5, 3 and 2 samples, test_size 0.25: 3 test samples, shares 1.25, 0.75 and
    0.5; one each after flooring goes to class 0, the 2 left over to the largest remainders
    (classes 1 and 2): one test sample per class, whatever the seed."""
    from fastgd.nn.datasets import train_test_split

    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    x = np.arange(10.0).reshape(10, 1)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, seed=seed)
    assert np.bincount(y_te, minlength=3).tolist() == [1, 1, 1]
    assert np.bincount(y_tr, minlength=3).tolist() == [4, 2, 1]
    np.testing.assert_array_equal(y[x_te[:, 0].astype(int)], y_te)  # pairs kept


def test_a_sigmoid_output_with_binary_cross_entropy_trains_as_logits_with_the_fused_loss():
    """The lesson's two forms of a binary classifier: a sigmoid output layer trained on
    binary_cross_entropy, and logits on binary_cross_entropy_with_logits, step for step
    the same (float64), accuracy thresholded at 0.5 and at 0 respectively."""
    d = nn.datasets.two_moons()
    column = lambda a: a.astype(np.float64).reshape(-1, 1)  # noqa: E731
    data = nn.datasets.Dataset("moons", d.x_train.astype(np.float64), column(d.y_train),
                               d.x_test.astype(np.float64), column(d.y_test), 2)
    runs = []
    for loss, last in (("binary_cross_entropy", "sigmoid"),
                       ("binary_cross_entropy_with_logits", "identity")):
        model = nn.Sequential([
            nn.Linear(2, 16, "tanh", seed=1, name="fc1", dtype=np.float64),
            nn.Linear(16, 1, last, seed=2, name="fc2", dtype=np.float64)])
        opt = fastgd.Adam(model.params, lr=0.02)
        runs.append(nn.train(model, data, loss=loss, optimizer=opt, epochs=8, batch_size=32,
                             progress=False))
    np.testing.assert_allclose(runs[0].loss, runs[1].loss, rtol=1e-9)
    assert runs[0].test_accuracy == runs[1].test_accuracy and runs[0].test_accuracy[-1] > 0.8


def test_training_with_class_weights_and_ignored_labels():
    """A Loss with weight and ignore_index trains (labels of -100 pass the data check and
    count for nothing, in the loss as in the accuracy); the first step's gradient is the
    weighted mean's, as torch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    y[::5] = -100
    w = np.array([1.0, 2.5, 0.5])
    loss = nn.get_loss("cross_entropy", weight=w, ignore_index=-100)
    model = nn.MLP([6, 8, 3], backend="numba", dtype=np.float64, seed=4)
    out = model.forward(x, train=True)
    _, g = loss.value_and_grad(out, y)
    xt = torch.tensor(out, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, torch.tensor(y), weight=torch.tensor(w),
                                      ignore_index=-100).backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    h = nn.train(model, (x, y), loss=loss, optimizer=fastgd.SGD(model.params, lr=0.1),
                 mode="batch", epochs=3, progress=False)
    assert np.isfinite(h.loss).all() and h.loss[-1] < h.loss[0]
    kept = y != -100
    want = float(np.mean(model.predict(x)[kept].argmax(axis=1) == y[kept]))
    assert nn.evaluate(model, x, y, loss=loss)[1] == want


def test_weighted_evaluation_and_training_count_weights_not_rows():
    """evaluate over chunks gives one batch's weighted mean (a chunk all ignored adds
    nothing); a batch with every label ignored is skipped, not taken for divergence; a
    weight of another length than the model's outputs is refused before any step."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 5))
    y = rng.integers(0, 3, 40)
    y[:10] = -100
    y[25:33] = -100
    loss = nn.get_loss("cross_entropy", weight=np.array([1.0, 5.0, 0.2]), ignore_index=-100)
    model = nn.MLP([5, 6, 3], backend="numba", dtype=np.float64, seed=1)
    out = model.predict(x)
    kept = y != -100
    want = (loss.value(out, y), float(np.mean(out[kept].argmax(axis=1) == y[kept])))
    for chunk in (10, 7, 4096):
        np.testing.assert_allclose(nn.evaluate(model, x, y, loss=loss, chunk=chunk), want,
                                   rtol=1e-12)
    h = nn.train(model, (x, y), loss=loss, optimizer=fastgd.SGD(model.params, lr=0.05),
                 mode="sgd", epochs=1, progress=False)
    assert not h.diverged and h.steps == int(kept.sum())
    short = nn.get_loss("cross_entropy", weight=np.ones(2))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="the loss's weight has 2 classes, the model 3"):
        nn.train(model, (x, np.abs(y) % 3), loss=short, optimizer=fastgd.SGD(model.params),
                 epochs=1, progress=False)
    assert all(np.array_equal(v, before[k]) for k, v in model.params.items())


def test_training_steps_a_plateau_scheduler_with_each_epochs_loss():
    """plateau= is stepped after each epoch with the test loss (the training loss without a
    test set): the learning rates the history records are the scheduler's."""
    data = nn.datasets.digits()
    model = nn.MLP([64, 16, 10], backend="numba", seed=3)
    opt = fastgd.SGD(model.params, lr=0.5)
    plateau = fastgd.schedules.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    seen = []
    step = plateau.step
    plateau.step = lambda metric: (seen.append(metric), step(metric))[1]
    h = nn.train(model, data, optimizer=opt, epochs=6, progress=False, plateau=plateau)
    assert seen == h.test_loss
    want, lr = [], 0.5
    best = np.inf
    for loss in h.test_loss[:-1]:  # patience 0: every epoch without a new best halves
        want.append(lr)
        lr = lr if loss < best * (1 - 1e-4) else lr * 0.5
        best = min(best, loss)
    assert h.lr[:len(want)] == want and min(h.lr) < 0.5
    with pytest.raises(ValueError, match="built on this optimizer"):
        nn.train(model, data, optimizer=fastgd.SGD(model.params, lr=0.1), epochs=1,
                 progress=False, plateau=plateau)


def test_the_profiler_is_each_threads_own():
    """A profiled training counts its own thread's work: another thread's evaluation
    switched the one profiler off and on under it (sections of 193,000 s, an audit)."""
    from fastgd.nn._profile import PROFILE

    PROFILE.start()
    try:
        seen = {}

        def other():
            seen["on"] = PROFILE.on
            PROFILE.start()
            PROFILE.done("loss", PROFILE.mark())
            PROFILE.on = False  # as an evaluation does

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen["on"] is False
        assert PROFILE.on and "loss" not in PROFILE.totals
    finally:
        PROFILE.stop()


def test_overlapping_trainings_put_the_blas_threads_back():
    """Each training limited BLAS (threadpoolctl, process-wide) and put back what it saw on
    entry: of two that overlapped, the second put back the first's limit of 1 for good."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastgd.nn import trainer

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    model = nn.MLP([4, 8, 2], backend="numba")
    before = blas_threads()
    first, second = (trainer._blas_limit(1, model, 32) for _ in range(2))
    first.__enter__()
    second.__enter__()
    assert set(blas_threads()) <= {1}
    first.__exit__(None, None, None)  # the first to start ends first
    assert set(blas_threads()) <= {1}  # the second still runs
    second.__exit__(None, None, None)
    assert blas_threads() == before
