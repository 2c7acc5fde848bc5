"""The on-disk kernel cache: a second process loads what the first compiled, kernels that
share a shape but not their math never share a file, and the cache can be turned off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from fastgd.activation import formulas as m
from fastgd.backends import codegen, kernel_cache
from fastgd.nn import _kernels
from tests.helpers import run_threads

RUN = """
import json, numpy as np, fastgd
x = np.linspace(-30, 30, 3001).astype(np.float32)
out = {"y": fastgd.gelu(x).tolist(), "dx": fastgd.silu_backward(np.ones_like(x), x).tolist()}
be = fastgd.get_backend("numba")
out["hits"] = sum(sum(k.stats.cache_hits.values()) for k in be._kernels.values())
print(json.dumps(out))
"""


def _run(cache_dir, **env):
    env = {**os.environ, "FASTGD_CACHE_DIR": str(cache_dir), **env}
    done = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_kernels_and_gets_the_same_values(tmp_path):
    first = _run(tmp_path)
    files = sorted(p.name for p in (tmp_path / "kernels").rglob("k_*.py"))
    assert first["hits"] == 0 and len(files) == 2
    second = _run(tmp_path)
    assert second["hits"] == 2
    assert second["y"] == first["y"] and second["dx"] == first["dx"]
    assert sorted(p.name for p in (tmp_path / "kernels").rglob("k_*.py")) == files


ALIASES = """
import json, sys, numpy as np, fastgd
rng = np.random.default_rng(0)
x, dy = (rng.normal(0, 3, 5000).astype(np.float32) for _ in range(2))  # chunked: > 4096
want = fastgd.sigmoid_backward(dy, x, backend="numpy")
ok = []
for into in sys.argv[1:]:
    d, xx = dy.copy(), x.copy()
    out = d if into == "dy" else xx
    fastgd.sigmoid_backward(d, xx, out=out)
    other = xx if into == "dy" else d
    ok.append(bool(np.allclose(out, want, rtol=1e-5) and
                   np.array_equal(other, x if into == "dy" else dy)))
print(json.dumps(ok))
"""


@pytest.mark.parametrize("prefetch", ["0", "1"])  # either chunked loop, whatever the CPU
def test_in_place_kernels_into_different_inputs_get_their_own_file(tmp_path, prefetch):
    """out=dy and out=x run chunked loops of one text around different serial kernels
    (span): keyed on the text alone they shared a file, and the second loaded the first's
    machine code and wrote dx into the caller's other array."""
    env = {**os.environ, "FASTGD_CACHE_DIR": str(tmp_path), "FASTGD_PREFETCH": prefetch}
    for order in (["dy", "x"], ["x", "dy"], ["x", "dy"]):  # the last from the disk cache
        done = subprocess.run([sys.executable, "-c", ALIASES, *order], env=env,
                              capture_output=True, text=True, check=True)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True], order


def test_the_cache_can_be_turned_off(tmp_path):
    out = _run(tmp_path, FASTGD_KERNEL_CACHE="0")
    assert out["hits"] == 0 and not (tmp_path / "kernels").exists()


def test_kernels_of_one_shape_get_their_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    source = codegen.map_source(1, 1, 0, "serial")

    def path(fn, compute="float32", loop="serial", flags=("nsz",)):
        key = kernel_cache.kernel_key(source, fn, compute, loop, flags)
        return kernel_cache.source_file(source, key)

    paths = {path(fn) for fn in (m.sigmoid, m.silu, m.relu)}
    paths |= {path(m.sigmoid, "float64"), path(m.sigmoid, loop="parallel"),
              path(m.sigmoid, flags=("nsz", "reassoc"))}
    assert len(paths) == 6 and all(open(p).read() == source for p in paths)
    # functions composed at run time (nn's activation wrappers) differ by what they call
    sig = _kernels.get_activation("sigmoid").f
    tanh = _kernels.get_activation("tanh").f
    assert sig.__qualname__ == tanh.__qualname__
    assert kernel_cache.fingerprint(sig) != kernel_cache.fingerprint(tanh)


def test_a_relative_cache_folder_stays_where_it_was_first_used(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTGD_CACHE_DIR", "rel-cache")
    first = kernel_cache.folder()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert kernel_cache.folder() == first and first.is_relative_to(tmp_path / "rel-cache")


def test_an_unwritable_folder_means_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(blocker))  # kernels/ cannot be made in a file
    assert kernel_cache.source_file("def kernel(): pass\n", "k") is None


def test_a_folder_that_cannot_be_written_is_not_used_even_with_kernels_in_it(tmp_path,
                                                                             monkeypatch):
    """Numba keeps machine code only beside a file it can write; for a read-only folder it
    wrote under ~/.cache/numba instead, outside FASTGD_CACHE_DIR."""
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    assert kernel_cache.source_file("def kernel(): pass\n", "k") is not None
    monkeypatch.setattr(kernel_cache.os, "access", lambda path, mode: False)  # as read-only
    assert kernel_cache.source_file("def kernel(): pass\n", "k") is None


def test_a_changed_helper_changes_the_fingerprint():
    """A user's function that calls a user's helper: editing the helper alone must not load
    the kernel compiled from the old one."""
    old, new = {}, {}
    exec("def h(x):\n    return x + 1\n\ndef f(x):\n    return h(x)\n", old)
    exec("def h(x):\n    return x + 2\n\ndef f(x):\n    return h(x)\n", new)
    assert kernel_cache.fingerprint(old["f"]) != kernel_cache.fingerprint(new["f"])
    assert kernel_cache.fingerprint(old["f"]) == kernel_cache.fingerprint(old["f"])


def _pair(template, a, b):
    """Two functions ``f`` exec'd from ``template`` with ``{v}`` set to ``a`` and ``b``."""
    out = []
    for v in (a, b):
        scope = {"np": __import__("numpy"), "math": __import__("math")}
        exec(template.format(v=v), scope)
        out.append(scope["f"])
    return out


def test_what_a_function_reads_besides_its_code_is_in_its_fingerprint():
    """A user's function passed to a backend's map: two that differ only in a closure cell,
    a default, a NumPy scalar or array global, a library function or class they call, a
    name used in nested code, or a module attribute got one key, and the second process
    loaded the first's machine code (found by a review helper)."""
    cases = [
        "def make(c):\n    def f(x):\n        return x * c\n    return f\nf = make({v})",
        "def f(x, k={v}):\n    return x * k",
        "K = np.float32({v})\ndef f(x):\n    return x * K",
        "T = np.array([{v}, 5.0])\ndef f(x):\n    return x * T[0]",
        "T = (np.arange(2000.0) * {v},)\ndef f(x):\n    return x * T[0][1000]",
        "OP = {v}\ndef f(x):\n    return OP(x)",
        "def H(y):\n    return y * {v}\ndef f(x):\n    def inner(y):\n        return H(y)\n"
        "    return inner(x)",
    ]
    values = [(2.0, 3.0)] * 5 + [("math.sin", "math.cos"), (2.0, 3.0)]
    for template, (a, b) in zip(cases, values, strict=True):
        fa, fb = _pair(template, a, b)
        assert kernel_cache.fingerprint(fa) != kernel_cache.fingerprint(fb), template
        again = _pair(template, a, a)
        assert kernel_cache.fingerprint(again[0]) == kernel_cache.fingerprint(again[1])
    # a class called for a conversion
    fa, fb = _pair("T = {v}\ndef f(x):\n    return T(x)", "np.float32", "np.float64")
    assert kernel_cache.fingerprint(fa) != kernel_cache.fingerprint(fb)
    # a function met twice is named the second time, not left out: A_ + B_ with B_ = A_
    # or another function
    p, q = _pair("def g(x):\n    return x + {v}\nf = g", 1.0, 2.0)
    sums = []
    for b in (p, q):
        scope = {"A_": p, "B_": b}
        exec("def f(x):\n    return A_(x) + B_(x)", scope)
        sums.append(scope["f"])
    assert kernel_cache.fingerprint(sums[0]) != kernel_cache.fingerprint(sums[1])


def test_numba_settings_that_change_the_code_are_in_the_key(monkeypatch):
    from numba.core import config as numba_config

    source = codegen.map_source(1, 1, 0, "serial")
    before = kernel_cache.kernel_key(source, m.relu, "float32", "serial", ())
    monkeypatch.setattr(numba_config, "OPT", 0)
    assert kernel_cache.kernel_key(source, m.relu, "float32", "serial", ()) != before


def _cache_files(tmp_path, pattern):
    return sorted((tmp_path / "kernels").rglob(f"__pycache__/{pattern}"))


def test_corrupt_cache_files_are_compiled_anew_and_then_cached_again(tmp_path):
    """A truncated index or a data file of garbage (a power loss, a full disk) made every
    later call raise EOFError / UnpicklingError, in every process."""
    first = _run(tmp_path)
    for corrupt, pattern in (((lambda f: f.write_bytes(b"")), "*.nbi"),
                             ((lambda f: f.write_bytes(os.urandom(100))), "*.nbc")):
        for f in _cache_files(tmp_path, pattern):
            corrupt(f)
        again = _run(tmp_path)
        assert again["y"] == first["y"] and again["dx"] == first["dx"]
        assert _run(tmp_path)["hits"] == 2  # the files written anew load


SIGNATURES = """
import json, sys, numpy as np, fastgd
x = np.linspace(-3, 3, 1000)
if sys.argv[1] == "float32":
    x = x.astype(np.float32)
x.flags.writeable = False  # one kernel file, two signatures: float32 and float64 input
print(json.dumps(fastgd.softplus_backward(np.ones_like(x), x, beta=0.3).tolist()))
"""


def test_a_signature_loading_another_signatures_code_compiles_anew(tmp_path):
    """Processes compiling two signatures of one kernel file at once could both take one data
    file (Numba's index has no lock): the index then sent one signature to the other's
    machine code, and every later process failed ("can't unbox array"). Simulated by
    swapping the two data files."""
    env = {**os.environ, "FASTGD_CACHE_DIR": str(tmp_path)}

    def run(dtype):
        done = subprocess.run([sys.executable, "-c", SIGNATURES, dtype], env=env,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    want = {d: run(d) for d in ("float32", "float64")}
    data = _cache_files(tmp_path, "*.nbc")
    assert len(data) == 2  # both signatures in one kernel's index
    a, b = (f.read_bytes() for f in data)
    data[0].write_bytes(b)
    data[1].write_bytes(a)
    for dtype in ("float32", "float64", "float32"):
        assert run(dtype) == want[dtype]


def test_yes_no_variables_take_words_and_refuse_other_values(tmp_path, monkeypatch):
    from fastgd.config import env_flag

    for value, want in (("0", False), ("false", False), ("Off", False), ("no", False),
                        ("1", True), ("TRUE", True), ("on", True), ("", True)):
        monkeypatch.setenv("FASTGD_KERNEL_CACHE", value)
        assert env_flag("FASTGD_KERNEL_CACHE") is want and kernel_cache.enabled() is want
    monkeypatch.setenv("FASTGD_KERNEL_CACHE", "nope")
    with pytest.raises(ValueError, match="FASTGD_KERNEL_CACHE='nope': write 1 or 0"):
        kernel_cache.enabled()
    out = _run(tmp_path, FASTGD_KERNEL_CACHE="false")  # was taken as on
    assert out["hits"] == 0 and not (tmp_path / "kernels").exists()


def test_other_versions_unused_for_a_month_are_removed(tmp_path, monkeypatch):
    """Every upgrade or edit of fastgd starts a new folder of kernels (the key holds the
    package's digest), and nothing loads the old ones again: they piled up (241 MB after a
    day of development)."""
    import time

    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    kernel_cache.prune.cache_clear()
    root = tmp_path / "kernels"
    old, recent, other = root / ("a" * 16), root / ("b" * 16), root / "keep-me"
    for d in (old, recent, other):
        (d / "__pycache__").mkdir(parents=True)
        (d / "k_1.py").write_text("")
    (root / "__pycache__").mkdir()  # the flat layout before a folder per version
    (root / "k_0a1b.py").write_text("")
    month = time.time() - (kernel_cache.KEEP_DAYS + 1) * 86400
    os.utime(old, (month, month))
    os.utime(other, (month, month))
    path = kernel_cache.source_file("def kernel(): pass\n", "k")
    assert path is not None and os.path.dirname(path) == str(kernel_cache.folder())
    assert not old.exists() and recent.exists() and other.exists()
    assert not (root / "__pycache__").exists() and not (root / "k_0a1b.py").exists()
    kernel_cache.prune.cache_clear()


CHUNKED = """
import hashlib, json, numpy as np, fastgd
r = np.random.default_rng(1)
x = (r.standard_normal(70000) * 4).astype(np.float32)
dy = r.standard_normal(70000).astype(np.float32)
dx = fastgd.mish_backward(dy, x)  # chunked: the parallel loop around the serial kernel
be = fastgd.get_backend("numba")
kernels = {id(k): k for k in [*be._span_loops.values(), *be._kernels.values()]
           if hasattr(k, "stats")}  # the loop and the serial kernel (a SpanKernel binds them)
hits = sum(sum(k.stats.cache_hits.values()) for k in kernels.values())
print(json.dumps([hashlib.sha256(dx.tobytes()).hexdigest(), hits]))
"""


@pytest.mark.parametrize("prefetch", ["0", "1"])  # either chunked loop, whatever the CPU
def test_a_loaded_chunked_loop_computes_the_bits_of_the_compiled_one(tmp_path, prefetch):
    """The chunked loop once held a re-optimized copy of its span (other last bits of mish's
    backward, 614 of these 70000): loaded alone, it ran that copy where the compiling process
    ran the span itself. It now calls the span by address (cpu_span): both processes run the
    one serial kernel, the loop and the kernel each loaded from the cache."""
    env = {**os.environ, "FASTGD_CACHE_DIR": str(tmp_path), "FASTGD_PREFETCH": prefetch}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHUNKED], env=env,
                                      capture_output=True, text=True, check=True)
                       .stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert runs[1][0] == runs[0][0]
    assert runs[0][1] == 0 and runs[1][1] == 2  # both kernels loaded, none compiled


ONE_OP = """
import hashlib, json, sys, numpy as np, fastgd
r = np.random.default_rng(1)
x = (r.standard_normal(70000) * 4).astype(np.float32)  # chunked: > 4096
dy = r.standard_normal(70000).astype(np.float32)
print(json.dumps({op: hashlib.sha256(getattr(fastgd, op)(dy, x).tobytes()).hexdigest()
                  for op in sys.argv[1:]}))
"""


def test_kernels_compiled_in_different_processes_keep_apart(tmp_path):
    """Every generated kernel was a function named `kernel` of one module, its symbol that
    name plus a per-process counter: two processes could give two ops' kernels one symbol,
    and a third that loaded both ran the first for both (with PYTHONHASHSEED=0 mish_backward
    returned silu_backward's result). Each kernel is now named by its cache key."""
    def run(*ops, cache=True):
        env = {**os.environ, "PYTHONHASHSEED": "0", "FASTGD_CACHE_DIR": str(tmp_path),
               **({} if cache else {"FASTGD_KERNEL_CACHE": "0"})}
        done = subprocess.run([sys.executable, "-c", ONE_OP, *ops], env=env,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    want = run("silu_backward", "mish_backward", cache=False)
    run("mish_backward")
    run("silu_backward")
    assert run("silu_backward", "mish_backward") == want
    assert run("mish_backward", "silu_backward") == want


def test_threads_writing_the_same_new_kernel_files_get_them_whole(tmp_path, monkeypatch):
    """Threads of one process took one temporary name a file (PID only): one could get back a
    file another was still writing, another None (the kernel left uncached)."""
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    sources = [f"# kernel {i}\n" + "x = 1\n" * 20000 for i in range(40)]
    problems = []
    start = threading.Barrier(4)

    def write():
        start.wait()
        for i, source in enumerate(sources):
            path = kernel_cache.source_file(source, f"{i:024x}")
            if path is None or open(path).read() != source:
                problems.append((i, path))

    run_threads(write, [()] * 4, switch_interval=1e-6)
    assert problems == []
    assert not list(tmp_path.rglob("*.tmp"))
