"""Layers with explicit forward and backward (no autograd), on any backend.

Every layer holds its parameters in ``params`` and writes its gradients into ``grads``
(same keys, arrays allocated once and overwritten by each ``backward``), so an optimizer
built on ``model.params`` updates them in place from ``model.grads``.

* :class:`Linear` — ``y = act(x @ W + b)``: the product through the backend's BLAS
  (NumPy's or CuPy's ``@``), then bias add and activation in one fused kernel; the
  backward fuses the activation's gradient with the bias gradient (a column sum).
* :class:`BatchNorm1d` — train (batch statistics, running estimates) and eval, with the
  following activation fused in: one statistics kernel, one normalize kernel, one backward.
* :class:`Dropout` — a counter-based mask (a hash of seed, step and index): no mask is
  stored, and the same seed gives the same mask on every backend.
* :class:`Residual` — ``x + f(x)``; :class:`Sequential`; :class:`MLP` composes them.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from contextlib import contextmanager

import numpy as np

from fastgd import _arrays
from fastgd._checks import count, in_range, positive
from fastgd._optional import need
from fastgd.backends import auto_host, get_backend, to_device, to_host
from fastgd.nn import functional as F
from fastgd.nn._kernels import get_activation
from fastgd.nn._profile import PROFILE

#: Activations whose default initialization is He (Kaiming) normal; others get Xavier.
HE_INIT = {"relu", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "hardswish",
           "softplus"}
INITS = ("auto", "he", "xavier", "torch")


def backend_of(name):
    """The backend object for a layer: ``auto`` is numba when Numba works, else numpy."""
    return get_backend(auto_host() if name in (None, "auto") else name)


def array_module(be):
    """NumPy for the CPU backends, CuPy for ``cuda`` (its ``@`` is the matrix product)."""
    if be.name != "cuda":
        return np
    return need("cupy", "cuda", "layers on the cuda backend (the matrix product, cuBLAS)")


class Layer:
    """Base class: backend, dtype, parameters/gradients and a shape-keyed workspace."""

    act = None  # the fused activation (an ``Act``) of layers that have one

    def __init__(self, backend="auto", dtype=np.float32, name=""):
        self.be = backend_of(backend) if not hasattr(backend, "owns") else backend
        self.dtype = np.dtype(dtype)
        _arrays.check_float(dtype=np.empty(0, self.dtype))
        self.name = name
        self.params, self.grads = {}, {}
        self.preact = None
        self._out_shape = None  # the last forward's output shape: what backward takes
        self._work = {}

    def _array(self, host):
        """A parameter array on this layer's backend from host values."""
        host = np.ascontiguousarray(host, dtype=self.dtype)
        return to_device(host) if self.be.name == "cuda" else host

    def _zeros(self, shape):
        """A gradient array of zeros on this layer's backend: a step before the first
        backward changes nothing (torch skips parameters without a ``.grad``), where
        uninitialized memory had moved weights by 1e20 or made them NaN."""
        return self.be.full(math.prod(shape), self.dtype, 0.0).reshape(shape)

    def _ws(self, key, shape):
        """A reusable output buffer (same key and shape: the same array)."""
        buf = self._work.get((key, shape))
        if buf is None:
            buf = self._work[(key, shape)] = self.be.empty(shape, self.dtype)
        return buf

    def _check_array(self, a, what):
        """``a`` on this layer's device, in its dtype; returns its shape."""
        label = self.name or type(self).__name__
        if not _arrays.is_array(a):
            hint = "np.asarray" + (" and fastgd.to_device" if self.be.name == "cuda" else "")
            raise TypeError(f"{label} takes arrays, got {what} as {type(a).__name__} "
                            f"(use {hint})")
        if not self.be.owns(a):
            raise TypeError(f"{label} runs on the {self.be.name} backend but got {what} on "
                            f"another device; copy it with {self.be.transfer_hint}")
        if _arrays.dtype_of(a) != self.dtype:
            raise TypeError(f"{label} is {self.dtype} but {what} is {_arrays.dtype_of(a)}")
        return _arrays.shape_of(a)

    def check_input(self, x, features=None):
        """``x`` of shape ``(N, features)`` (any width when ``features`` is None)."""
        shape = self._check_array(x, "the input")
        if len(shape) != 2 or (features is not None and shape[1] != features):
            raise ValueError(f"{self.name or type(self).__name__} expects input of shape "
                             f"(N, {features or 'features'}), got {shape}")

    def check_grad(self, dy):
        """``dy`` of the shape, dtype and device of the last forward's output, checked
        before a kernel reads it (a kernel sized by ``dy`` would run past the forward's
        buffers)."""
        label = self.name or type(self).__name__
        if self._out_shape is None:
            raise RuntimeError(f"{label}.backward needs a forward first")
        shape = self._check_array(dy, "the gradient dy")
        if shape != self._out_shape:
            raise ValueError(f"{label}.backward: dy has shape {shape}, the forward's output "
                             f"{self._out_shape}")

    def forward(self, x, train=True):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def modules(self):
        """Every leaf layer, in order: this one (a container yields its layers')."""
        yield self

    def activation_layers(self):
        """The leaf layers that apply an activation (their ``preact`` is its input)."""
        return [m for m in self.modules()
                if getattr(m, "act", None) is not None and m.act.name != "identity"]

    def linear_layers(self):
        return [m for m in self.modules() if isinstance(m, Linear)]

    def predict(self, x):
        """The eval-mode output as a new array (a forward's is a buffer the next reuses),
        computed by an :meth:`eval_view`: calls from several threads at once, or beside a
        training thread, share no buffers (they overwrote each other's activations)."""
        return self.eval_view().forward(x, train=False)

    def eval_view(self):
        """This layer for one eval forward: the same parameters and buffers (shared, not
        copied), with workspaces and a last forward of its own."""
        view = object.__new__(type(self))
        view.__dict__.update(self._state_without_forward())
        return view

    def __call__(self, x, train=None):
        """``forward(x, train)``, the mode named on every call: these layers keep no
        ``.train()``/``.eval()`` state as torch's modules do, and a default either way
        would be wrong half the time (an eval default had trained without batch
        statistics or dropout, in silence)."""
        if train is None:
            raise TypeError(f"{self.name or type(self).__name__}(x) needs train=True (a "
                            f"training forward, which backward follows) or train=False "
                            f"(eval; predict(x) returns a copy)")
        return self.forward(x, train)

    # -- copies ----------------------------------------------------------------------------
    #: what a forward of this class leaves for its backward besides ``preact``: not copied or
    #: pickled (a copy needs a forward of its own before a backward)
    _FORWARD_STATE = ()

    def _state_without_forward(self) -> dict:
        """This layer's attributes less its workspaces and what its last forward left."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._FORWARD_STATE}
        state.update(_work={}, preact=None, _out_shape=None)
        return state

    def __getstate__(self):
        """``copy.deepcopy(model)`` (a best model kept aside) and ``pickle`` (a model sent to
        another process): the backend by name, without workspaces or the last forward."""
        return {**self._state_without_forward(), "be": self.be.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.be = get_backend(state["be"])

    # -- state ---------------------------------------------------------------------------
    def buffers(self) -> dict:
        """What a forward keeps besides the parameters (batch norm's running statistics,
        dropout's step): saved and loaded with them."""
        return {}

    def _state(self, prefix=""):
        """``(name, layer, key)`` of every parameter, then every buffer."""
        for key in self.params:
            yield prefix + key, self, key
        for key in self.buffers():
            yield prefix + key, self, key

    def state_dict(self) -> dict:
        """Parameters and buffers as host NumPy copies, named as ``params`` are
        (``fc1.weight``, ``bn1.running_mean``, ``drop1.step``): ready for
        ``np.savez(f, **model.state_dict())``; :meth:`load_state_dict` restores them."""
        return {name: np.array(to_host(_value(layer, key)), copy=True)
                for name, layer, key in self._state()}

    def load_state_dict(self, d) -> None:
        """Restore a :meth:`state_dict` (or the ``np.load`` of its ``np.savez``) in place, so
        an optimizer built on ``params`` goes on with them. Everything is checked before
        anything is written."""
        d = dict(d)
        items = list(self._state())
        names = {name for name, _, _ in items}
        for name in d:
            if name not in names:
                raise ValueError(f"state_dict has {name!r}, which this model does not")
        values = {}  # read once: device values too (CuPy refuses np.asarray)
        for name, layer, key in items:
            if name not in d:
                raise ValueError(f"state_dict has no {name!r}")
            new = values[name] = to_host(d[name])
            now = _value(layer, key)
            if isinstance(now, int):
                if new.shape != () or new.dtype.kind not in "iu" or int(new) < 0:
                    raise ValueError(f"state_dict {name!r} must be an int >= 0, got "
                                     f"{new!r}")
            elif new.shape != _arrays.shape_of(now) or new.dtype != _arrays.dtype_of(now):
                shape = _arrays.shape_of(now)
                transposed = new.shape != shape and new.shape == shape[::-1]
                hint = (" (Linear weights are (in, out): torch's (out, in) need .T)"
                        if isinstance(layer, Linear) and key == "weight" and transposed
                        else "")
                raise ValueError(f"state_dict {name!r} is {new.dtype}{list(new.shape)}, "
                                 f"expected {_arrays.dtype_of(now)}{list(shape)}{hint}")
        for name, layer, key in items:
            now = _value(layer, key)
            if isinstance(now, int):
                setattr(layer, key, int(values[name]))
            else:
                layer.be.copy_into(layer.be.flat_view(now), values[name])


def init_weight(rng, fan_in, fan_out, init, activation):
    """Host weights ``(fan_in, fan_out)``: He or Xavier normal, torch's uniform, or a
    normal of the given standard deviation when ``init`` is a number."""
    if _arrays.is_number(init):
        if not (init >= 0 and np.isfinite(init)):
            raise ValueError(f"init as a standard deviation must be finite and >= 0, got {init}")
        return rng.standard_normal((fan_in, fan_out)) * float(init)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS} or a std (float)")
    if init == "auto":
        init = "he" if activation in HE_INIT else "xavier"
    if init == "he":
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    if init == "xavier":
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / (fan_in + fan_out))
    bound = 1 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, (fan_in, fan_out))


class Linear(Layer):
    """``y = act(x @ weight + bias)`` with ``weight`` of shape ``(in, out)``."""

    _FORWARD_STATE = ("_x",)

    def __init__(self, in_features, out_features, activation="identity", bias=True, *,
                 activation_params=None, backend="auto", dtype=np.float32, init="auto",
                 seed=0, rng=None, input_grad=True, name="linear"):
        super().__init__(backend, dtype, name)
        array_module(self.be)  # CuPy's absence named now, not at the first forward
        self.in_features = count("Linear in_features", in_features)  # 2.5 became 2
        self.out_features = count("Linear out_features", out_features)
        self.act = get_activation(activation, **(activation_params or {}))
        self.input_grad = input_grad
        rng = rng if rng is not None else np.random.default_rng(seed)
        w = init_weight(rng, self.in_features, self.out_features, init, self.act.name)
        self.params["weight"] = self._array(w)
        self.grads["weight"] = self._zeros(w.shape)
        if bias:
            b = (rng.uniform(-1, 1, self.out_features) / np.sqrt(self.in_features)
                 if init == "torch" else np.zeros(self.out_features))
            self.params["bias"] = self._array(b)
            self.grads["bias"] = self._zeros(b.shape)

    @property
    def xp(self):
        return array_module(self.be)

    def forward(self, x, train=True):
        self.check_input(x, self.in_features)
        x = self.be.contiguous(x)
        n = _arrays.shape_of(x)[0]
        shape = (n, self.out_features)
        h = self._ws("h", shape)
        t0 = PROFILE.mark()
        self.xp.matmul(x, self.params["weight"], out=h)
        PROFILE.done("matmul", t0)
        z, y = F.bias_act(self.be, h, self.params.get("bias"), self.act,
                          self._ws("z", shape), self._ws("y", shape))
        self._x, self.preact, self._out_shape = x, z, shape
        return y

    def backward(self, dy):
        self.check_grad(dy)
        n = _arrays.shape_of(dy)[0]
        dz = F.act_backward(self.be, dy, self.preact, self.act,
                            self._ws("dz", (n, self.out_features)), self.grads.get("bias"))
        t0 = PROFILE.mark()
        self.xp.matmul(self._x.T, dz, out=self.grads["weight"])
        dx = None
        if self.input_grad:
            dx = self._ws("dx", (n, self.in_features))
            self.xp.matmul(dz, self.params["weight"].T, out=dx)
        PROFILE.done("matmul", t0)
        return dx


def _value(layer, key):
    return layer.params[key] if key in layer.params else layer.buffers()[key]


class BatchNorm1d(Layer):
    """Batch normalization over the batch axis, followed by a fused activation.

    Training normalizes with the batch's mean and biased variance and updates
    ``running_mean``/``running_var`` (unbiased variance) with ``momentum``, as torch does
    (``momentum=None``: the cumulative average of every batch so far, torch's too); eval
    uses the running estimates. As torch's options: ``affine=False`` has no gamma and beta
    (1 and 0), ``track_running_stats=False`` no running estimates (eval normalizes with the
    batch's statistics too)."""

    _FORWARD_STATE = ("_x", "_mean", "_invstd", "_batch")

    def __init__(self, num_features, activation="identity", *, momentum=0.1, eps=1e-5,
                 affine=True, track_running_stats=True, activation_params=None,
                 backend="auto", dtype=np.float32, name="batchnorm"):
        super().__init__(backend, dtype, name)
        self.num_features = count("num_features", num_features)
        if momentum is not None and not (_arrays.is_number(momentum) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] or None (a cumulative average), "
                             f"got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.eps = positive("eps", eps)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.num_batches_tracked = 0
        self.act = get_activation(activation, **(activation_params or {}))
        c = self.num_features
        self._scale_shift = (self._array(np.ones(c)), self._array(np.zeros(c)))
        self._grad_block = self._zeros((2, c))  # one kernel writes both
        if self.affine:
            self.params["gamma"], self.params["beta"] = self._scale_shift
            self.grads["gamma"], self.grads["beta"] = self._grad_block[0], self._grad_block[1]
        self.running_mean = self._array(np.zeros(c)) if self.track_running_stats else None
        self.running_var = self._array(np.ones(c)) if self.track_running_stats else None

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.affine:  # views again
            self.grads = {"gamma": self._grad_block[0], "beta": self._grad_block[1]}

    def buffers(self):
        if not self.track_running_stats:
            return {}
        return {"running_mean": self.running_mean, "running_var": self.running_var,
                "num_batches_tracked": self.num_batches_tracked}

    def _gamma_beta(self):
        """The parameters (their arrays now: a load or a user may have put others in
        place), or without ``affine`` the constants 1 and 0."""
        return (self.params["gamma"], self.params["beta"]) if self.affine else self._scale_shift

    def forward(self, x, train=True):
        self.check_input(x, self.num_features)
        x = self.be.contiguous(x)
        n, c = _arrays.shape_of(x)
        batch = train or not self.track_running_stats  # normalized by the batch's statistics
        if batch:
            if n == 1 or (train and n < 2):  # one sample: each feature normalized to 0
                raise ValueError("BatchNorm1d needs more than 1 sample per batch where it "
                                 "normalizes by the batch's statistics (training, or eval "
                                 "with track_running_stats=False), as torch's")
            stats = self._ws("stats", (3, c))
            F.batch_norm_stats(self.be, x, self.eps, stats)
            mean, invstd = stats[0], stats[1]
            if train and self.track_running_stats:
                self.num_batches_tracked += 1
                momentum = (1.0 / self.num_batches_tracked if self.momentum is None
                            else self.momentum)
                F.ema_(self.be, self.running_mean, mean, momentum)
                F.ema_(self.be, self.running_var, stats[2], momentum)
        else:
            mean = self.running_mean
            invstd = F.inv_std(self.be, self.running_var, self.eps, self._ws("invstd", (c,)))
        gamma, beta = self._gamma_beta()
        z, y = F.batch_norm_act(self.be, x, mean, invstd, gamma, beta, self.act,
                                self._ws("z", (n, c)), self._ws("y", (n, c)))
        self._x, self._mean, self._invstd, self.preact = x, mean, invstd, z
        self._out_shape, self._batch = (n, c), batch
        return y

    def backward(self, dy):
        """The batch's statistics depend on every input (training, or any forward without
        running estimates); after an eval forward the running ones are constants, and
        ``dx = gamma·invstd·act'(z)·dy``."""
        self.check_grad(dy)
        dx = self._ws("dx", self._out_shape)
        F.batch_norm_backward(self.be, dy, self.preact, self._x, self._mean, self._invstd,
                              self._gamma_beta()[0], self.act, dx, self._grad_block,
                              self._batch)
        return dx


def dropout_probability(p) -> float:
    return in_range("dropout probability", p, 0, 1)  # 1: every element dropped, as torch


class Dropout(Layer):
    """Zero each element with probability ``p`` in training and scale the rest by
    1/(1 - p); identity in eval. The mask of call ``step`` is a hash of
    ``(seed, step, index)``, recomputed in the backward instead of stored. ``seed=None``
    draws one at random, so that two layers' masks are independent (with one seed they
    are the same mask); ``state_dict`` keeps it."""

    _FORWARD_STATE = ("_active", "_p_used")

    def __init__(self, p=0.5, *, seed=None, backend="auto", dtype=np.float32,
                 name="dropout"):
        super().__init__(backend, dtype, name)
        self.p = p
        if seed is None:
            seed = secrets.randbits(63)
        # the low 64 bits, all the mask uses: a larger int is no NumPy integer (state_dict)
        self.seed, self.step = count("dropout seed", seed, 0) % (1 << 64), 0
        self._active = False

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value):
        """Checked when set, also after construction (1.5 had dropped everything)."""
        self._p = dropout_probability(value)

    def buffers(self):
        return {"seed": self.seed, "step": self.step}  # what the next mask is drawn from

    def forward(self, x, train=True):
        self.check_input(x)
        self._out_shape = _arrays.shape_of(x)
        self._active = train and self.p > 0
        if not self._active:
            return x
        self.step += 1
        self._p_used = self.p  # the backward's mask is the forward's, whatever p is by then
        return F.dropout(self.be, self.be.contiguous(x), self.p, self.seed, self.step,
                         self._ws("y", self._out_shape))

    def backward(self, dy):
        self.check_grad(dy)
        if not self._active:
            return dy
        return F.dropout(self.be, self.be.contiguous(dy), self._p_used, self.seed, self.step,
                         self._ws("dx", self._out_shape))


def _numbered_names(layers) -> list:
    r"""The layers' names, those that several share numbered by their order among them (two
    unnamed ``Linear``\s: ``linear1``, ``linear2``; a number another layer's name holds is
    skipped), as torch numbers a Sequential's layers; the params are keyed by these names.
    The layers are not renamed here: a Sequential that fails to build leaves them as
    they were."""
    names = [layer.name for layer in layers]
    counts, taken, seen = Counter(names), set(names), Counter()
    for k, name in enumerate(names):
        if counts[name] > 1:
            while f"{name}{seen[name] + 1}" in taken:
                seen[name] += 1
            seen[name] += 1
            names[k] = f"{name}{seen[name]}"
            taken.add(names[k])
    return names


def every_layer(layer):
    """``layer`` and every layer inside it, containers (Sequential, Residual) included."""
    yield layer
    if isinstance(layer, Sequential):
        for inner in layer.layers:
            yield from every_layer(inner)


@contextmanager
def new_workspaces_dropped(model):
    """Forwards of ``model`` inside the block allocate their buffers as usual; those of shapes
    new to it are dropped at its end (an evaluation of a whole data set at once, whose
    buffers would otherwise stay as long as the model)."""
    layers = list(every_layer(model))
    kept = [set(layer._work) for layer in layers]
    try:
        yield
    finally:
        for layer, keys in zip(layers, kept):
            for key in set(layer._work) - keys:
                del layer._work[key]


class Sequential(Layer):
    """Layers applied in order; ``params``/``grads`` are theirs, keyed ``"NAME.param"``."""

    def __init__(self, layers, name="sequential"):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for k, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential's item {k} is not a layer: {layer!r}")
        tree = [inner for layer in layers for inner in every_layer(layer)]
        if len({id(layer) for layer in tree}) != len(tree):  # one weight under two names
            raise ValueError("a layer is in the Sequential twice (perhaps inside a block): "
                             "make a layer for each place")
        names = _numbered_names(layers)
        first = layers[0]
        super().__init__(first.be, first.dtype, name)
        for layer, name in zip(layers, names):
            if layer.be is not first.be or layer.dtype != first.dtype:
                raise ValueError(
                    f"layer {name} is {layer.be.name}/{layer.dtype}, the first is "
                    f"{first.be.name}/{first.dtype}: all layers need one backend and dtype"
                )
        width, source = None, None  # checked here, not in a forward that changed state
        for layer, name in zip(layers, names):
            w_in, w_out = widths(layer)
            if width is not None and w_in is not None and w_in != width:
                raise ValueError(f"layer {name} takes width {w_in}, but {source} gives "
                                 f"{width}")
            if w_out is not None:
                width, source = w_out, name
            elif not _keeps_width(layer):  # a layer of the user's: width unknown
                width = None
        for layer, name in zip(layers, names):
            layer.name = name
        self.layers = layers
        self._gather()

    def _gather(self):
        """``params``/``grads``: the layers' own arrays, under ``"NAME.param"`` (entries a
        subclass added of its own are kept)."""
        for layer in self.layers:
            for key, value in layer.params.items():
                self.params[f"{layer.name}.{key}"] = value
                self.grads[f"{layer.name}.{key}"] = layer.grads[key]

    def __setstate__(self, state):
        super().__setstate__(state)
        self._gather()  # the layers' arrays, not copies (batch norm's grads are views)

    def eval_view(self):
        view = super().eval_view()
        view.layers = [layer.eval_view() for layer in self.layers]
        return view

    def forward(self, x, train=True):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def _state(self, prefix=""):
        for layer in self.layers:
            yield from layer._state(f"{prefix}{layer.name}.")

    def modules(self):
        """Every leaf layer, in order (residual blocks unpacked)."""
        for layer in self.layers:
            yield from layer.modules()


def widths(layer):
    """``(input width, output width)`` of a layer; None for either that it does not fix.
    Dropout and residual blocks keep the width they are given; a layer of the user's may
    take and give any, so a Sequential's widths stop at one: its input width is the first
    layer's that fixes one with only Dropout before it, its output width the last such
    layer's with only width-keeping layers after it."""
    if isinstance(layer, Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, BatchNorm1d):
        return layer.num_features, layer.num_features
    if isinstance(layer, Sequential):
        return _line_widths(layer.layers)
    return None, None


def _line_widths(layers):
    """:func:`widths` of layers applied in order."""
    first, width, leading = None, None, True
    for m in layers:
        w_in, w_out = widths(m)
        keeps = _keeps_width(m)
        if leading and w_in is not None:
            first = w_in
        leading = leading and keeps and w_in is None
        width = w_out if w_out is not None else width if keeps else None
    return first, width


def _keeps_width(layer) -> bool:
    """Dropout and residual blocks (x + f(x)) give the width they take, whatever it is."""
    return isinstance(layer, (Dropout, Residual))


class Residual(Sequential):
    """``x + f(x)`` for the layers ``f``; the input and output widths must match."""

    def __init__(self, layers, name="residual"):
        layers = list(layers)
        w_in, w_out = _line_widths(layers)  # before Sequential names its layers
        if w_in is not None and w_out is not None and w_in != w_out:
            raise ValueError(f"residual block {name} maps width {w_in} to {w_out}; x + f(x) "
                             "needs them equal")
        super().__init__(layers, name)

    def forward(self, x, train=True):
        y = super().forward(x, train)
        if _arrays.shape_of(y) != _arrays.shape_of(x):
            raise ValueError(f"residual block maps {_arrays.shape_of(x)} to "
                             f"{_arrays.shape_of(y)}; the shapes must match")
        return F.add(self.be, x, y, self._ws("y", _arrays.shape_of(x)))

    def backward(self, dy):
        inner = super().backward(dy)
        return F.add(self.be, dy, inner, self._ws("dx", _arrays.shape_of(dy)))


class MLP(Sequential):
    """A multilayer perceptron: ``sizes = [in, hidden..., out]``.

    Each hidden block is ``Linear → activation`` (fused), or with ``batch_norm``
    ``Linear (no bias) → BatchNorm1d → activation`` (the activation fused into the batch
    norm kernels), then ``Dropout`` when ``dropout > 0``, wrapped in a :class:`Residual`
    when ``residual`` and the block keeps its width. The last layer is linear (logits).
    Parameters are named ``fc1.weight``, ``fc1.bias``, ``bn1.gamma``... ``backward``
    returns the gradient of the input only with ``input_grad=True`` (saliency, adversarial
    examples); without it, None, and a first Linear layer skips that product.

    >>> model = MLP([64, 128, 10], activation="gelu", backend="numpy")
    >>> list(model.params)
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """

    def __init__(self, sizes, activation="relu", *, batch_norm=False, dropout=0.0,
                 residual=False, activation_params=None, backend="auto", dtype=np.float32,
                 init="auto", seed=0, input_grad=False):
        sizes = list(sizes)
        if not all(_arrays.is_int(s) for s in sizes):
            raise ValueError(f"MLP sizes must be ints, got {sizes}")  # 32.7 became 32
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"MLP sizes must be at least [in, out], all >= 1, got {sizes}")
        be = backend_of(backend)
        act = get_activation(activation, **(activation_params or {}))
        dropout_probability(dropout)  # checked with or without hidden layers
        rng = np.random.default_rng(seed)
        common = dict(backend=be, dtype=dtype)
        blocks = []
        for k, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1]), start=1):
            if batch_norm:
                block = [Linear(a, b, bias=False, init=init, rng=rng, name=f"fc{k}", **common),
                         BatchNorm1d(b, act, name=f"bn{k}", **common)]
            else:
                block = [Linear(a, b, act, init=init, rng=rng, name=f"fc{k}", **common)]
            if dropout:
                drop_seed = None if seed is None else seed * 1000 + k  # None: at random
                block.append(Dropout(dropout, seed=drop_seed, name=f"drop{k}", **common))
            if residual and a == b:
                blocks.append(Residual(block, name=f"res{k}"))
            else:
                blocks.extend(block)
        k = len(sizes) - 1
        blocks.append(Linear(sizes[-2], sizes[-1], init=init, rng=rng, name=f"fc{k}", **common))
        self.input_grad = bool(input_grad)
        if isinstance(blocks[0], Linear):
            blocks[0].input_grad = self.input_grad  # the product skipped too
        super().__init__(blocks, name="mlp")
        self.sizes, self.activation = sizes, act

    def forward(self, x, train=True):
        self.check_input(x, self.sizes[0])
        return super().forward(x, train)

    def backward(self, dy):
        dx = super().backward(dy)
        return dx if self.input_grad else None  # (a residual first block computes it)


