"""Losses, layers and a small trainer on fastgd's kernels, with data sets and studies.

>>> import fastgd
>>> from fastgd import nn
>>> model = nn.MLP([64, 128, 128, 10], activation="gelu", batch_norm=True, dropout=0.1)
>>> opt = fastgd.Adam(model.params, lr=1e-3)                      # doctest: +SKIP
>>> hist = nn.train(model, nn.datasets.digits(), loss="cross_entropy", optimizer=opt,
...                 mode="minibatch", batch_size=64, epochs=20)   # doctest: +SKIP

Layers have explicit ``forward``/``backward``; matrix products go through the backend's
BLAS (NumPy or CuPy ``@``) and everything elementwise around them (bias, activation,
batch norm, dropout, residual add, losses) runs as fused kernels generated from
``fastgd.nn.formulas``. Studies: ``python -m fastgd.nn.studies NAME`` (or ``fastgd study``).
"""

import os

# Numba's OpenMP workers spin after each parallel kernel (libgomp: 300,000 spins), and
# OpenBLAS's threads spin after each product: interleaved, as in training, the two pools
# take cores from each other. Not spinning at all (OMP_WAIT_POLICY=passive) is worse: every
# parallel kernel then wakes sleeping workers, ~80 us, more than a small step's kernels
# take. 20,000 spins keep the workers awake between the kernels of one step and let them
# sleep during a long product (2-core VM, tools/profile_mlp.py: a digits MLP epoch 19.4 ms
# passive, 4.2-4.5 ms with this, 6.5 ms with 3,000 spins; 8 steps of the wide MLP: products
# as fast as passive, fused kernels 0.20 s against 0.46 with 300,000 spins). It must be set
# before the first parallel kernel starts the pool. A user's GOMP_SPINCOUNT or
# OMP_WAIT_POLICY wins: libgomp lets a set GOMP_SPINCOUNT override the policy's spin count,
# so neither is touched when either is set.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "20000"

from fastgd.nn import datasets, functional  # noqa: E402
from fastgd.nn._kernels import ACTIVATION_NAMES, get_activation
from fastgd.nn.layers import (
    MLP,
    BatchNorm1d,
    Dropout,
    Layer,
    Linear,
    Residual,
    Sequential,
)
from fastgd.nn.losses import (
    LOSSES,
    Loss,
    binary_cross_entropy,
    binary_cross_entropy_backward,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward,
    cross_entropy,
    cross_entropy_backward,
    get_loss,
    mse,
    mse_backward,
    nll_loss,
    nll_loss_backward,
)
from fastgd.nn.trainer import History, dead_fraction, evaluate, grad_norms, train

__all__ = [
    "ACTIVATION_NAMES", "LOSSES", "MLP", "BatchNorm1d", "Dropout", "History", "Layer",
    "Linear", "Loss", "Residual", "Sequential", "binary_cross_entropy",
    "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward", "cross_entropy", "cross_entropy_backward",
    "datasets", "dead_fraction", "evaluate", "functional", "get_activation", "get_loss",
    "grad_norms", "mse", "mse_backward", "nll_loss", "nll_loss_backward", "train",
]
