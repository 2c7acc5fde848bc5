"""Test helpers for fastgd.nn: a stand-in Adam used only until fastgd.Adam exists
(the optimizers live on another branch), with the same API: ``Adam(params, lr)``,
``step(grads) -> info`` with ``lr``, ``grad_norm``, ``skipped``."""

from types import SimpleNamespace

import numpy as np

import fastgd


class _StandInAdam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        norm = 0.0
        for k, p in self.params.items():
            g = grads[k]
            norm += float(np.vdot(g, g))
            self.m[k] += (1 - b1) * (g - self.m[k])
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            denom = np.sqrt(self.v[k]) / np.sqrt(1 - b2**self.t) + self.eps
            p -= (self.lr / (1 - b1**self.t)) * self.m[k] / denom
        return SimpleNamespace(lr=self.lr, grad_norm=norm**0.5, skipped=False)


def adam(params, lr=1e-3):
    """fastgd.Adam when the optimizers are merged, else the stand-in."""
    cls = getattr(fastgd, "Adam", None) or _StandInAdam
    return cls(params, lr=lr)
