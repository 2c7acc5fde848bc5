"""Textbook float64 update rules (REFERENCE-MATH.md), the oracle of the optimizer tests.

Written straight from the formulas, independently of ``fastgd.optim.rules`` (the kernels)
and ``fastgd.optim.reference`` (the NumPy backend). Also: the option combinations every
backend is tested with, and the gradient sequences.
"""

from __future__ import annotations

import math

import numpy as np

# (optimizer, options): every rule and option combination the trajectory tests run.
CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, max_grad_norm=1.0)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True, clip_value=0.5)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, alpha=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), max_grad_norm=2.0)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True, eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.1, clip_value=0.7, max_grad_norm=3.0)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.01,
                   maximize=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True,
                   betas=(0.9, 0.9))),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1, maximize=True, betas=(0.8, 0.95))),
    ("Lion", dict(lr=1e-3)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1, betas=(0.95, 0.98))),
    ("Lion", dict(lr=1e-3, maximize=True, max_grad_norm=1.0)),
]

SHAPES = {"w": (6, 5), "b": (7,)}


def make_problem(steps=100, dtype=np.float64, seed=0, shapes=SHAPES):
    """Initial params and a gradient sequence: random, with a scale that changes over time
    (so AMSGrad's max and Adamax's infinity norm matter), and some exact zeros."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = []
    for t in range(steps):
        scale = 1.0 if t < steps // 2 else 0.2
        step = {k: (rng.standard_normal(s) * scale).astype(dtype) for k, s in shapes.items()}
        step["w"].flat[::7] = 0.0
        grads.append(step)
    return params, grads


def _init(name, shape, h):
    z = lambda: np.zeros(shape)
    if name == "SGD":
        return {"momentum_buffer": z()} if h.get("momentum", 0) else {}
    if name == "Adagrad":
        return {"sum": np.full(shape, h.get("initial_accumulator_value", 0.0))}
    if name == "RMSprop":
        s = {"square_avg": z()}
        if h.get("centered"):
            s["grad_avg"] = z()
        if h.get("momentum", 0):
            s["momentum_buffer"] = z()
        return s
    if name in ("Adam", "AdamW"):
        s = {"exp_avg": z(), "exp_avg_sq": z()}
        if h.get("amsgrad"):
            s["max_exp_avg_sq"] = z()
        return s
    if name in ("NAdam", "RAdam"):
        return {"exp_avg": z(), "exp_avg_sq": z()}
    if name == "Adamax":
        return {"exp_avg": z(), "exp_inf": z()}
    return {"exp_avg": z()}  # Lion


def _update(name, p, g, s, t, lr, h, glob):
    """One textbook update of one tensor (p and the state arrays ``s`` in place)."""
    wd = h.get("weight_decay", 0.01 if name == "AdamW" else 0.0)
    default_betas = (0.9, 0.99) if name == "Lion" else (0.9, 0.999)
    b1, b2 = h.get("betas", default_betas)
    if name == "SGD":
        mu, damp = h.get("momentum", 0.0), h.get("dampening", 0.0)
        g = g + wd * p
        if mu:
            buf = s["momentum_buffer"]
            buf[...] = g if t == 1 else mu * buf + (1 - damp) * g
            g = g + mu * buf if h.get("nesterov") else buf
        p -= lr * g
    elif name == "Adagrad":
        eps = h.get("eps", 1e-10)
        clr = lr / (1 + (t - 1) * h.get("lr_decay", 0.0))
        g = g + wd * p
        s["sum"] += g * g
        p -= clr * g / (np.sqrt(s["sum"]) + eps)
    elif name == "RMSprop":
        a, eps, mu = h.get("alpha", 0.99), h.get("eps", 1e-8), h.get("momentum", 0.0)
        g = g + wd * p
        s["square_avg"][...] = a * s["square_avg"] + (1 - a) * g * g
        if h.get("centered"):
            s["grad_avg"][...] = a * s["grad_avg"] + (1 - a) * g
            avg = np.sqrt(s["square_avg"] - s["grad_avg"] ** 2) + eps
        else:
            avg = np.sqrt(s["square_avg"]) + eps
        if mu:
            s["momentum_buffer"][...] = mu * s["momentum_buffer"] + g / avg
            p -= lr * s["momentum_buffer"]
        else:
            p -= lr * g / avg
    elif name in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax"):
        eps = h.get("eps", 1e-8)
        decoupled = name == "AdamW" or h.get("decoupled_weight_decay", False)
        if decoupled:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
        m = s["exp_avg"]
        m[...] = b1 * m + (1 - b1) * g
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        if name == "Adamax":
            s["exp_inf"][...] = np.maximum(b2 * s["exp_inf"], np.abs(g) + eps)
            p -= lr / bc1 * m / s["exp_inf"]
            return
        v = s["exp_avg_sq"]
        v[...] = b2 * v + (1 - b2) * g * g
        if name in ("Adam", "AdamW"):
            vhat = v
            if h.get("amsgrad"):
                s["max_exp_avg_sq"][...] = np.maximum(s["max_exp_avg_sq"], v)
                vhat = s["max_exp_avg_sq"]
            p -= lr / bc1 * m / (np.sqrt(vhat) / math.sqrt(bc2) + eps)
        elif name == "NAdam":
            psi = h.get("momentum_decay", 4e-3)
            mu_t = b1 * (1 - 0.5 * 0.96 ** (t * psi))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
            prod = glob["mu_product"] * mu_t  # the same for every tensor of this step
            denom = np.sqrt(v / bc2) + eps
            p -= lr * (1 - mu_t) / (1 - prod) * g / denom
            p -= lr * mu_next / (1 - prod * mu_next) * m / denom
        else:  # RAdam
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * b2**t / bc2
            if rho_t > 5:
                r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                              / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                p -= lr * m / bc1 * r * math.sqrt(bc2) / (np.sqrt(v) + eps)
            else:
                p -= lr * m / bc1
    elif name == "Lion":
        p *= 1 - lr * wd
        p -= lr * np.sign(b1 * s["exp_avg"] + (1 - b1) * g)
        s["exp_avg"][...] = b2 * s["exp_avg"] + (1 - b2) * g
    else:
        raise ValueError(name)


def textbook(name, options, params, grad_seq):
    """Run ``name`` with ``options`` over the gradient sequence in float64; return the final
    params and state (dicts of arrays)."""
    h = dict(options)
    lr_opt = h.pop("lr")
    max_norm, clip_value = h.pop("max_grad_norm", None), h.pop("clip_value", None)
    maximize = h.pop("maximize", False)
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    state = {k: _init(name, v.shape, h) for k, v in p.items()}
    glob = {"mu_product": 1.0}
    for t, grads in enumerate(grad_seq, 1):
        lr = lr_opt(t - 1) if callable(lr_opt) else lr_opt
        g = {k: np.array(v, np.float64) for k, v in grads.items()}
        if clip_value is not None:
            g = {k: np.clip(v, -clip_value, clip_value) for k, v in g.items()}
        if max_norm is not None:
            total = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
            coef = min(max_norm / (total + 1e-6), 1.0)
            g = {k: v * coef for k, v in g.items()}
        if maximize:
            g = {k: -v for k, v in g.items()}
        for k in p:
            _update(name, p[k], g[k], state[k], t, lr, h, glob)
        if name == "NAdam":
            psi = h.get("momentum_decay", 4e-3)
            b1 = h.get("betas", (0.9, 0.999))[0]
            glob["mu_product"] *= b1 * (1 - 0.5 * 0.96 ** (t * psi))
    return p, state


def config_id(config):
    name, options = config
    return name + "-" + "-".join(f"{k}={v}" for k, v in options.items() if k != "lr")
