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

from fastgd.nn import datasets, functional
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
