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
``~/.cache/fastgd``); ``FASTGD_KERNEL_CACHE=0`` turns the cache off. Where the folder cannot
be written, kernels are compiled as if the cache were off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
from pathlib import Path

import fastgd


def enabled() -> bool:
    return os.environ.get("FASTGD_KERNEL_CACHE", "1") != "0"


def folder() -> Path:
    root = os.environ.get("FASTGD_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "fastgd")
    return Path(root) / "kernels"


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
    """``fn``'s module, name and code, and those of the functions it calls (fastgd's or a
    user's), recursively, with the plain constants it reads: what tells two kernels of one
    shape apart."""
    fn = getattr(fn, "py_func", fn)  # a Numba dispatcher: its Python function
    seen = set() if _seen is None else _seen
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    body = _code_digest(code) if code else ""
    parts = [f"{fn.__module__}.{fn.__qualname__}@{body}"]  # the code too: tests, exec'd code
    glb = getattr(fn, "__globals__", {})
    for name in code.co_names if code else ():
        value = glb.get(name)
        target = getattr(value, "py_func", value)
        if isinstance(target, types.FunctionType):
            if (target.__module__ or "").split(".")[0] in LIBRARIES:
                parts.append(f"{name}={target.__module__}.{target.__qualname__}")
            elif id(target) not in seen:
                parts.append(f"{name}=({fingerprint(target, seen)})")
        elif isinstance(value, (bool, int, float, str, tuple)):
            parts.append(f"{name}={value!r}")
    return ";".join(parts)


def _code_digest(code) -> str:
    """A hash of a code object's bytecode and constants, nested code objects included (whose
    repr would hold a memory address)."""
    h = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        h.update((_code_digest(const) if isinstance(const, types.CodeType)
                  else repr(const)).encode())
    return h.hexdigest()[:16]


def kernel_key(source: str, fn, compute, loop: str, flags, calls: str = "") -> str:
    """What a kernel's machine code depends on, hashed: its text, the op math it calls, the
    compute type, the loop, the flags, fastgd's source, and ``calls``: the key of the kernel
    it calls by name (a chunked loop's ``span``, whose text is not in its own: the serial
    kernels of ``out=x`` and ``out=dy`` differ, the chunked loops around them do not)."""
    key = "\n".join([source, fingerprint(fn), str(compute), loop, ",".join(sorted(flags)),
                     calls, package_digest()])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def source_file(source: str, key: str) -> str | None:
    """The path of a file holding ``source`` under the name ``key`` (:func:`kernel_key`;
    written once), or None where the cache is off or the folder is not writable."""
    if not enabled():
        return None
    path = folder() / f"k_{key}.py"
    if path.exists():
        return str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: a process racing us writes the same text
    except OSError:
        return None
    return str(path)
