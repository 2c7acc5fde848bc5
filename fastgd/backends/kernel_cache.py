"""On-disk cache of the Numba CPU kernels, so a new process does not compile them again.

A generated kernel is plain source text (``codegen``) whose globals (the op's scalar math,
the bound math functions) are composed at run time, so Numba's own ``cache=True`` cannot see
what it depends on: it keys its cache on the kernel's file and bytecode, which are the same
for every op of one shape. Here each kernel gets its own source file, named by a hash of
everything its machine code depends on -- the kernel text, the scalar functions it calls
(followed through their globals, as ``scalar.specialize`` does), the compute type, the loop,
the fast-math flags and the source of the whole ``fastgd`` package -- and Numba caches it
beside that file. Any change to fastgd's code gives new names: a stale kernel cannot load.

``FASTGD_CACHE_DIR`` sets the folder (default ``$XDG_CACHE_HOME/fastgd`` or
``~/.cache/fastgd``), which holds a folder of kernels per version of fastgd's source (other
versions' are removed after 30 days unused); ``FASTGD_KERNEL_CACHE=0`` turns the cache off.
Where the folder cannot be written, kernels are compiled as if the cache were off; a cache
file that cannot be read is compiled anew (:func:`guarded_cache`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import threading
import time
import types
from pathlib import Path

import numpy as np

import fastgd
from fastgd.config import env_flag


def enabled() -> bool:
    return env_flag("FASTGD_KERNEL_CACHE")


def root() -> Path:
    """The kernels of every version of fastgd, a folder each (:func:`folder`)."""
    base = os.environ.get("FASTGD_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "fastgd")
    return _absolute(base) / "kernels"


@functools.cache
def _absolute(path: str) -> Path:
    """``path`` made absolute once, against the working folder of its first use, so that a
    relative ``FASTGD_CACHE_DIR`` names the same folder after an ``os.chdir``."""
    return Path(path).absolute()


def folder() -> Path:
    """This fastgd's kernels: one folder per version of fastgd's source (every key holds
    :func:`package_digest`), so the kernels of other versions go as a whole (:func:`prune`)."""
    return root() / package_digest()[:16]


#: Other versions' kernel folders unused for this many days are removed.
KEEP_DAYS = 30


@functools.cache
def prune() -> None:
    """Once a process that caches a kernel: mark this version's folder as in use and remove
    the folders of other fastgd versions unused for :data:`KEEP_DAYS` days. Every upgrade
    or edit of fastgd starts a new folder that the old kernels are never loaded from (one day
    of development left 241 MB)."""
    here = folder()
    with contextlib.suppress(OSError):
        os.utime(here)
    cutoff = time.time() - KEEP_DAYS * 86400
    try:
        entries = list(root().iterdir())
    except OSError:
        return
    for other in entries:
        with contextlib.suppress(OSError):
            if other.name == "__pycache__":  # the layout before a folder per version,
                shutil.rmtree(other, ignore_errors=True)  # which nothing loads any more
            elif re.fullmatch(r"k_[0-9a-f]+\.py", other.name):
                other.unlink()
            elif (other != here and re.fullmatch(r"[0-9a-f]{16}", other.name)
                  and other.stat().st_mtime < cutoff):
                shutil.rmtree(other, ignore_errors=True)


@functools.cache
def package_digest() -> str:
    """A hash of every ``.py`` file of the installed fastgd package (read once)."""
    h = hashlib.sha256()
    base = Path(fastgd.__file__).parent
    for path in sorted(base.rglob("*.py")):
        h.update(str(path.relative_to(base)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


#: Packages whose functions a fingerprint names without reading their code (their version
#: is in Numba's own cache key, or they are Numba itself).
LIBRARIES = frozenset({"numba", "numpy", "llvmlite", "math", "cmath", "builtins"})


def fingerprint(fn, _seen=None) -> str:
    """``fn``'s module, name and code, and what it reads that its code does not hold: the
    globals its code (nested functions included) names, the attributes it takes of modules
    that are not libraries, its defaults and its closure's cells; functions among them
    (fastgd's or a user's) by their own fingerprint, recursively. What tells two kernels
    of one shape apart."""
    fn = getattr(fn, "py_func", fn)  # a Numba dispatcher: its Python function
    seen = set() if _seen is None else _seen
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:
        return _describe(fn, seen)
    parts = [f"{fn.__module__}.{fn.__qualname__}@{_code_digest(code)}"]  # exec'd code too
    glb = getattr(fn, "__globals__", {})
    names = _names(code)
    for name in names:
        if name in glb:
            value = glb[name]
            parts.append(f"{name}={_describe(value, seen)}")
            if isinstance(value, types.ModuleType) and not _library(value.__name__):
                parts += [f"{name}.{a}={_describe(getattr(value, a), seen)}"
                          for a in names if hasattr(value, a)]
    parts += [f"default={_describe(v, seen)}" for v in fn.__defaults__ or ()]
    parts += [f"{k}={_describe(v, seen)}" for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    for cell in fn.__closure__ or ():
        try:
            parts.append(f"cell={_describe(cell.cell_contents, seen)}")
        except ValueError:  # an empty cell
            parts.append("cell=")
    return ";".join(parts)


def _library(module: str | None) -> bool:
    return (module or "").split(".")[0] in LIBRARIES


def _names(code) -> list[str]:
    """The global and attribute names of a code object and of those nested in it."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += [n for n in _names(const) if n not in names]
    return names


def _describe(value, seen) -> str:
    """A stable text for a value a kernel may read: numbers and arrays by their bits,
    functions by their fingerprint (or, once seen, their name), libraries' functions,
    ufuncs and classes by name, other objects by type."""
    target = getattr(value, "py_func", value)
    if isinstance(target, types.FunctionType):
        label = f"{target.__module__}.{target.__qualname__}"
        if _library(target.__module__) or id(target) in seen:
            return label
        return f"({fingerprint(target, seen)})"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
        return f"{a.dtype.str}{a.shape}:{digest}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_describe(v, seen) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_describe(v, seen)}" for k, v in value.items()) + "}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if name is not None:  # builtins, ufuncs, classes
        return f"{type(value).__name__} {getattr(value, '__module__', '')}.{name}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _code_digest(code) -> str:
    """A hash of a code object's bytecode and constants, nested code objects included (whose
    repr would hold a memory address)."""
    h = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        h.update((_code_digest(const) if isinstance(const, types.CodeType)
                  else repr(const)).encode())
    return h.hexdigest()[:16]


def _numba_settings() -> str:
    """Numba's settings that change the machine code but not its own cache key."""
    from numba.core import config as numba_config

    return ",".join(f"{k}={getattr(numba_config, k, None)}"
                    for k in ("OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "BOUNDSCHECK"))


def kernel_key(source: str, fn, compute, loop: str, flags) -> str:
    """What a kernel's machine code depends on, hashed: its text, the op math it calls, the
    compute type, the loop, the flags and fastgd's source. (No kernel calls another by name:
    a parallel loop calls its serial kernel by address, ``cpu_span``.)"""
    key = "\n".join([source, fingerprint(fn), str(compute), loop, ",".join(sorted(flags)),
                     _numba_settings(), package_digest()])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def writable() -> bool:
    """Whether the kernel folder exists and this process may write in it."""
    return os.access(folder(), os.W_OK | os.X_OK)


def source_file(source: str, key: str) -> str | None:
    """The path of a file holding ``source`` under the name ``key`` (:func:`kernel_key`;
    written once), or None where the cache is off or the folder is not writable."""
    if not enabled():
        return None
    path = folder() / f"k_{key}.py"
    if path.exists():
        # Numba keeps its machine code beside the file only where it can write; elsewhere it
        # would write it under ~/.cache/numba instead, outside FASTGD_CACHE_DIR
        if not writable():
            return None
        prune()  # this version's folder is in use: its mtime says so
        return str(path)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # a thread's own
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: a process racing us writes the same text
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk left it empty
        return None
    prune()
    return str(path)


def guard(kernel):
    """``kernel`` (a Numba dispatcher of a :func:`source_file`) with a cache that no cache
    file can break a call through (:func:`guarded_cache`)."""
    kernel._cache = guarded_cache()(kernel.py_func)
    return kernel


@functools.cache
def guarded_cache():
    """Numba's ``FunctionCache``, made safe for fastgd's kernel files (Numba imported late).

    Numba's loader raised on a truncated or corrupt index or data file (a power loss, a full
    disk) in every later process, and its save on a full disk; here those load nothing (the
    index is removed, so the next save starts it anew) and save nothing. And one file serves
    every signature of its kernel (float32 or float64 input to float64 math, read-only or
    not) through one index that Numba updates without a lock: processes compiling two
    signatures at once could both take one data file, leaving the index pointing one
    signature at the other's machine code for good ("can't unbox array" in every later
    process). A loaded result of another signature is dropped the same way."""
    from numba.core.caching import FunctionCache

    class GuardedCache(FunctionCache):
        def load_overload(self, sig, target_context):
            try:
                cres = super().load_overload(sig, target_context)
            except Exception:  # noqa: BLE001 (whatever a broken file raises: compile anew)
                self._forget()
                return None
            if cres is not None and tuple(cres.signature.args) != _args(sig):
                self._forget()
                return None
            return cres

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception:  # noqa: BLE001 (a full disk, a broken index: run uncached)
                pass

        def _forget(self):
            with contextlib.suppress(OSError):
                os.unlink(self._cache_file._index_path)

    return GuardedCache


def _args(sig) -> tuple:
    from numba.core import sigutils

    return tuple(sigutils.normalize_signature(sig)[0])
