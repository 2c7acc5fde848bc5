"""Parameter groups: several optimizers, each with hyperparameters of its own, as one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from fastgd._arrays import Footprint
from fastgd.optim.clip import global_norm
from fastgd.optim.optimizers import StepInfo, refuse_shared_memory


class Groups:
    """torch's parameter groups, each group an optimizer built on params of its own (e.g.
    AdamW with weight decay on the weights, another without on the biases and batch norm's
    parameters), stepped as one from one dict of gradients::

        decay = {k: v for k, v in model.params.items() if k.endswith("weight")}
        rest = {k: v for k, v in model.params.items() if k not in decay}
        opt = fastgd.Groups(fastgd.AdamW(decay, lr=1e-3, weight_decay=0.01),
                            fastgd.AdamW(rest, lr=1e-3, weight_decay=0.0))
        nn.train(model, data, optimizer=opt)

    ``params`` holds every group's; ``lr`` is the first group's (each group's own ``lr`` can
    be set); a step returns the first group's learning rate and step count and the norm of
    every group's gradients together. A step checks every group's gradients and settings
    before it updates any: one that a group refuses leaves every group as it was. A group's
    ``max_grad_norm`` clips by that norm of every group's gradients, as torch's
    ``clip_grad_norm_`` over all of a model's parameters does (with one ``max_grad_norm``
    in every group, each group's gradients are scaled by the same factor). With
    ``skip_nonfinite`` in any group, a gradient that is not finite in any group skips every
    group."""

    def __init__(self, *optimizers):
        if len(optimizers) == 1 and isinstance(optimizers[0], (list, tuple)):
            optimizers = tuple(optimizers[0])
        if not optimizers:
            raise ValueError("Groups needs one optimizer or more")
        union = {}
        for i, opt in enumerate(optimizers):
            params = getattr(opt, "params", None)
            if isinstance(opt, Groups):
                raise TypeError(f"group {i} is a Groups: list its optimizers instead")
            if not isinstance(params, Mapping) or not callable(getattr(opt, "step", None)):
                raise TypeError(f"group {i} is not an optimizer built on a dict of params or "
                                f"a ParamBuffer: {opt!r}")
            for name, p in params.items():
                if name in union:
                    raise ValueError(f"param {name!r} is in two groups")
                union[name] = p
        # one array stepped by two groups (torch refuses it too)
        refuse_shared_memory(list(union), list(union.values()),
                             "a parameter can be in one group only")
        self.optimizers = optimizers
        self.params = MappingProxyType(union)
        # what a step of any group writes: a gradient over another group's is read first too
        self._footprint = Footprint([a for o in optimizers for a in o._written()])

    def __repr__(self):
        return f"Groups({', '.join(map(repr, self.optimizers))})"

    @property
    def lr(self) -> float:
        """The first group's learning rate (set each group's on the group)."""
        return self.optimizers[0].lr

    @property
    def skip_nonfinite(self) -> bool:
        return any(getattr(o, "skip_nonfinite", False) for o in self.optimizers)

    @property
    def step_count(self) -> int:
        return self.optimizers[0].step_count

    def step(self, grads=None) -> StepInfo:
        """Step every group with its gradients from ``grads`` (a dict named as ``params``;
        None where every group is built on a ParamBuffer, which holds its own)."""
        if grads is None:  # each group's ParamBuffer holds its gradients
            unbuffered = [i for i, o in enumerate(self.optimizers)
                          if getattr(o, "_buffer", None) is None]
            if unbuffered:
                raise ValueError(f"step() without grads needs every group built on a "
                                 f"ParamBuffer; groups {unbuffered} are not")
            parts = [None] * len(self.optimizers)
        else:
            if not isinstance(grads, Mapping):
                raise TypeError(f"Groups.step takes a dict of gradients named as the params, "
                                f"got {type(grads).__name__}")
            missing = [k for k in self.params if k not in grads]
            extra = [k for k in grads if k not in self.params]
            if missing or extra:
                raise ValueError(f"grads must name every param of the groups: missing "
                                 f"{missing}, unknown {extra}")
            parts = [{k: grads[k] for k in o.params} for o in self.optimizers]
        # every group's checked before any ParamBuffer's is written
        checked = [o._check_grads(part) for o, part in zip(self.optimizers, parts)]
        flats = [o._take_grads(c, self._footprint) for o, c in zip(self.optimizers, checked)]
        norm = self._norm(flats)
        if self.skip_nonfinite and not math.isfinite(norm):
            return StepInfo(self.lr, norm, True, self.step_count)
        steps = [o._prepare(f, norm) for o, f in zip(self.optimizers, flats)]
        infos = [o._apply(s) for o, s in zip(self.optimizers, steps)]  # nothing can refuse
        return StepInfo(infos[0].lr, norm, False, infos[0].step)

    def _norm(self, flats) -> float | None:
        """The norm of every group's gradients (each after its ``clip_value``) where a
        group's ``max_grad_norm`` or ``skip_nonfinite`` needs it, else None: NaN or inf
        where one is not finite (with ``skip_nonfinite`` in any group strictly: an inf a
        clip_value would clamp too), finite where they are (float64 gradients of 1e200
        rescaled, as a single optimizer's)."""
        strict = self.skip_nonfinite
        if not strict and all(o.max_grad_norm is None for o in self.optimizers):
            return None
        norms = [global_norm(o.backend, f, o._clip, strict=strict)
                 for o, f in zip(self.optimizers, flats)]
        bad = [n for n in norms if not math.isfinite(n)]
        return bad[0] if bad else math.hypot(*norms)  # hypot: 1e200 squared overflows

    def state_dict(self) -> dict:
        """Every group's ``state_dict``, its keys under ``group<i>/``."""
        return {f"group{i}/{k}": v for i, o in enumerate(self.optimizers)
                for k, v in o.state_dict().items()}

    def load_state_dict(self, d) -> None:
        """Restore a :meth:`state_dict`: every group's, or none of them (a group that
        refuses its part puts the groups loaded before it back)."""
        parts = [{} for _ in self.optimizers]
        for key, value in dict(d).items():
            head, _, rest = key.partition("/")
            digits = head[5:]
            i = int(digits) if head.startswith("group") and digits.isdigit() else -1
            if not (0 <= i < len(parts) and rest and str(i) == digits):
                raise ValueError(f"state_dict key {key!r} is not 'group<i>/...' of one of "
                                 f"{len(parts)} groups")
            parts[i][rest] = value
        empty = [i for i, part in enumerate(parts) if not part]
        if empty:
            raise ValueError(f"state_dict has nothing for groups {empty}")
        before = [o.state_dict() for o in self.optimizers]
        done = []
        try:
            for opt, part in zip(self.optimizers, parts):
                opt.load_state_dict(part)
                done.append(opt)
        except Exception:
            for opt, state in zip(done, before):
                opt.load_state_dict(state)
            raise
