"""Small data sets for examples, tests and studies; all seeded, none downloaded.

* :func:`digits` — scikit-learn's bundled 8×8 handwritten digits (1797 samples, 64
  features scaled to [0, 1], 10 classes), shipped inside scikit-learn: no download. Needs
  the ``examples`` extra: ``pip install 'fastgd[examples]'``.
* :func:`xor`, :func:`two_moons`, :func:`spirals` — generated 2-D classification sets.

Each returns a :class:`Dataset` with a train/test split (``test_size``, ``seed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastgd._checks import in_range
from fastgd._optional import need
from fastgd.backends import to_device


@dataclass
class Dataset:
    """Features ``x_*`` (float, ``(N, features)``) and integer labels ``y_*`` (``(N,)``)."""

    name: str
    x_train: object
    y_train: object
    x_test: object
    y_test: object
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self):
        return (f"Dataset({self.name!r}: {len(self.y_train)} train, {len(self.y_test)} test, "
                f"{self.n_features} features, {self.n_classes} classes)")

    def astype(self, dtype) -> Dataset:
        """The same data with features of ``dtype``."""
        return Dataset(self.name, self.x_train.astype(dtype), self.y_train,
                       self.x_test.astype(dtype), self.y_test, self.n_classes)

    def to_device(self) -> Dataset:
        """A copy on the GPU (for models on the cuda backend)."""
        return Dataset(self.name, *(to_device(a) for a in
                                    (self.x_train, self.y_train, self.x_test, self.y_test)),
                       self.n_classes)


def train_test_split(x, y, test_size=0.25, seed=0):
    """``(x_train, x_test, y_train, y_test)``: a seeded random split with ⌈test_size·N⌉ of
    the N samples in the test part (as scikit-learn), at least one in each part. Class
    labels (``y`` 1-D: integers, bools, strings, or floats that are all whole numbers, as
    0./1. targets; not objects of mixed types, which do not sort) are stratified: each class
    gets its share of the test part, the parts left over by rounding going to the classes
    with the largest remainders. Other targets (regression values, probability rows) are
    split by a plain permutation."""
    test_size = in_range("test_size", test_size, 0, 1, lo_open=True, hi_open=True)
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    n_test = math.ceil(test_size * n)
    if n_test >= n:
        raise ValueError(f"test_size={test_size} of {n} sample(s) leaves none for training")
    rng = np.random.default_rng(seed)
    if y.ndim == 1 and (y.dtype.kind in "biuUS" or (
            y.dtype.kind == "f" and np.array_equal(y, np.round(y))) or (
            y.dtype.kind == "O" and all(isinstance(v, str) for v in y))):
        _, label, counts = np.unique(y, return_inverse=True, return_counts=True)
        share = counts * (n_test / n)
        per_class = np.floor(share).astype(np.int64)
        left = n_test - int(per_class.sum())
        # largest remainder first, ties in a seeded random order
        order = np.lexsort((rng.random(len(counts)), per_class - share))
        per_class[order[:left]] += 1
        test = np.concatenate([rng.permutation(np.flatnonzero(label == c))[:k]
                               for c, k in enumerate(per_class)])
    else:
        test = rng.permutation(n)[:n_test]
    is_test = np.zeros(n, bool)
    is_test[test] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(np.flatnonzero(is_test))
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


def _make(name, x, y, n_classes, test_size, seed, dtype):
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size, seed)
    return Dataset(name, np.ascontiguousarray(x_tr, dtype), y_tr.astype(np.int64),
                   np.ascontiguousarray(x_te, dtype), y_te.astype(np.int64), n_classes)


def digits(test_size=0.25, seed=0, dtype=np.float32) -> Dataset:
    """scikit-learn's 8×8 digits, pixels scaled to [0, 1]."""
    load_digits = need("sklearn.datasets", "examples", "the digits data set").load_digits
    data = load_digits()
    return _make("digits", data.data / 16.0, data.target, 10, test_size, seed, dtype)


def xor(n=512, noise=0.1, seed=0, test_size=0.25, dtype=np.float32) -> Dataset:
    """Points around the four corners of [-1, 1]²; the label is the XOR of the signs."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, size=(n, 2))
    x = (2.0 * corners - 1) + noise * rng.standard_normal((n, 2))
    return _make("xor", x, corners[:, 0] ^ corners[:, 1], 2, test_size, seed, dtype)


def two_moons(n=512, noise=0.1, seed=0, test_size=0.25, dtype=np.float32) -> Dataset:
    """Two interleaving half circles (as scikit-learn's ``make_moons``)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t_out, t_in = np.linspace(0, np.pi, n - half), np.linspace(0, np.pi, half)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1)
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n - half, int), np.ones(half, int)])
    return _make("two_moons", x, y, 2, test_size, seed, dtype)


def spirals(n=600, classes=3, noise=0.2, seed=0, test_size=0.25, dtype=np.float32) -> Dataset:
    """``classes`` interleaved spiral arms (the CS231n toy problem), ``n`` points in all
    (the first ``n % classes`` arms one more)."""
    if classes < 2:
        raise ValueError(f"spirals needs at least 2 classes, got {classes}")
    if n < classes:
        raise ValueError(f"spirals needs n >= classes (a point per arm), got n={n}, "
                         f"classes={classes}")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        per = n // classes + (c < n % classes)
        r = np.linspace(0.0, 1.0, per)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, per) + noise * rng.standard_normal(per)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(per, c))
    return _make("spirals", np.concatenate(xs), np.concatenate(ys), classes, test_size, seed,
                 dtype)
