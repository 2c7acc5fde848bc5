"""Execution backends and how one is chosen.

Order of choice: an explicit ``backend=`` argument, then ``with use_backend(name)``, then
the ``FASTGD_BACKEND`` environment variable (read once, when fastgd is imported, as Numba
reads its ``NUMBA_*`` variables: ``os.environ.get`` of an unset variable costs a microsecond,
a fifth of a small activation call), then ``"auto"``: ``cuda`` for device arrays
(anything with ``__cuda_array_interface__``), ``numba`` for NumPy arrays (falling back to
``numpy`` when Numba is missing). Arrays on the wrong device raise instead of being copied.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from fastgd._arrays import is_device_array
from fastgd.backends import (
    cpu_target,  # noqa: F401  (before Numba's first compile)
    cuda_backend,
)
from fastgd.backends.cuda_backend import CudaBackend, to_host
from fastgd.backends.numba_backend import NumbaBackend
from fastgd.backends.numpy_backend import NumpyBackend

__all__ = ["backends", "get_backend", "use_backend", "resolve", "to_device", "to_host"]

_REGISTRY = {b.name: b for b in (NumpyBackend(), NumbaBackend(), CudaBackend())}
_ACTIVE: ContextVar[str | None] = ContextVar("fastgd_backend", default=None)
_STATUS: dict[str, str] = {}
_READY: dict = {}  # name -> backend, once get_backend has accepted it (a status never changes)
_ENV_BACKEND = os.environ.get("FASTGD_BACKEND", "").strip().lower() or None


class BackendUnavailable(RuntimeError):
    """The named backend exists but cannot run on this machine."""


def _status(name: str) -> str:
    if name not in _STATUS:
        _STATUS[name] = _REGISTRY[name].status()
    return _STATUS[name]


def backends() -> dict[str, str]:
    """Every backend with ``'ok (...)'`` or ``'unavailable: <why>'`` for this machine."""
    _STATUS.pop("numba", None)  # its thread count can change (numba.set_num_threads)
    return {name: _status(name) for name in _REGISTRY}


def _check_name(name: str) -> None:
    if name != "auto" and name not in _REGISTRY:
        listed = ", ".join(f"{n} ({s})" for n, s in backends().items())
        raise ValueError(f"unknown backend {name!r}; backends: auto, {listed}")


def get_backend(name: str):
    """The backend object called ``name``; ``ValueError`` if unknown, ``BackendUnavailable``
    (a ``RuntimeError``) with the reason if it cannot run here."""
    _check_name(name)
    if name == "auto":
        raise ValueError("'auto' is chosen per call from the arrays; name a backend")
    status = _status(name)
    if not status.startswith("ok"):
        available = [n for n in _REGISTRY if _status(n).startswith("ok")]
        raise BackendUnavailable(f"backend {name!r} is {status}; available: {available}")
    return _REGISTRY[name]


@contextmanager
def use_backend(name: str):
    """Run the block with ``name`` as the default backend (per thread and async task: a
    ``ContextVar``). As with ``decimal.localcontext``, a block around a ``yield`` in a
    generator leaks its backend to the generator's caller while the generator is paused.
    An unknown name raises ``ValueError`` and an unavailable backend ``BackendUnavailable``
    here, at the ``with``, not at the block's first call."""
    if name != "auto":
        _ready(name)  # the name checked (ValueError), then the backend (BackendUnavailable)
    token = _ACTIVE.set(name)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _asked(backend: str | None) -> str:
    """The backend name a call asks for, by the order of choice above ("auto" included)."""
    if backend is not None:  # "" or 0 named nothing: refused by name (_ready), not auto
        return backend
    return _ACTIVE.get() or _ENV_BACKEND or "auto"


def resolve(backend: str | None, *arrays):
    """The backend for one call on ``arrays``; ``TypeError`` if they live on another device."""
    name = _asked(backend)
    if name == "auto":
        for a in arrays:
            if type(a) is not np.ndarray:
                name = "cuda" if any(map(is_device_array, arrays)) else auto_host()
                break
        else:  # plain NumPy arrays, the common case: the host backend, nothing to check
            return _ready(auto_host())
    try:
        chosen = _ready(name)
    except (ValueError, BackendUnavailable) as e:
        if name == _ENV_BACKEND and backend is None and not _ACTIVE.get():
            raise type(e)(f"FASTGD_BACKEND={name!r} (from the environment): {e}") from None
        raise
    for a in arrays:
        if not chosen.owns(a):
            if name == "cuda":
                raise TypeError("the cuda backend needs device arrays; copy host arrays with "
                                "fastgd.to_device(a)")
            raise TypeError(f"the {name} backend needs host (NumPy) arrays; copy device "
                            "arrays with fastgd.to_host(a)")
    return chosen


def host_fast_path(backend: str | None):
    """The Numba backend where a call on plain NumPy arrays given ``backend`` runs on it
    and it has been accepted before, else None: what ``resolve`` would pick, without its
    checks (the caller has checked that its arrays are NumPy arrays)."""
    name = _asked(backend)
    if name == "auto":
        name = auto_host()
    return _READY.get(name) if name == "numba" else None


def to_device(a):
    """Copy a host array to the GPU: a CuPy array if CuPy is installed, else a Numba one;
    device arrays pass through. ``BackendUnavailable`` with the reason where the cuda backend
    cannot run (no GPU, no driver, no numba-cuda)."""
    _ready("cuda")
    return cuda_backend.to_device(a)


@functools.cache
def auto_host() -> str:
    """What auto picks for host arrays: Numba's CPU kernels where Numba can run."""
    return "numba" if _status("numba").startswith("ok") else "numpy"


def _ready(name):
    """The backend ``name``, looked up once by :func:`get_backend` (which raises if it is
    unknown or unavailable) and kept in ``_READY``."""
    chosen = _READY.get(name)
    if chosen is None:
        _READY[name] = chosen = get_backend(name)
    return chosen
