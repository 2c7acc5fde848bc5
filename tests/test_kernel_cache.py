"""The on-disk kernel cache: a second process loads what the first compiled, kernels that
share a shape but not their math never share a file, and the cache can be turned off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fastgd.activation import formulas as m
from fastgd.backends import codegen, kernel_cache
from fastgd.nn import _kernels

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
    files = sorted(p.name for p in (tmp_path / "kernels").glob("k_*.py"))
    assert first["hits"] == 0 and len(files) == 2
    second = _run(tmp_path)
    assert second["hits"] == 2
    assert second["y"] == first["y"] and second["dx"] == first["dx"]
    assert sorted(p.name for p in (tmp_path / "kernels").glob("k_*.py")) == files


def test_the_cache_can_be_turned_off(tmp_path):
    out = _run(tmp_path, FASTGD_KERNEL_CACHE="0")
    assert out["hits"] == 0 and not (tmp_path / "kernels").exists()


def test_kernels_of_one_shape_get_their_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    source = codegen.map_source(1, 1, 0, "serial")
    paths = {kernel_cache.source_file(source, fn, "float32", "serial", {"nsz"})
             for fn in (m.sigmoid, m.silu, m.relu)}
    paths.add(kernel_cache.source_file(source, m.sigmoid, "float64", "serial", {"nsz"}))
    paths.add(kernel_cache.source_file(source, m.sigmoid, "float32", "parallel", {"nsz"}))
    assert len(paths) == 5 and all(open(p).read() == source for p in paths)
    # functions composed at run time (nn's activation wrappers) differ by what they call
    sig = _kernels.get_activation("sigmoid").f
    tanh = _kernels.get_activation("tanh").f
    assert sig.__qualname__ == tanh.__qualname__
    assert kernel_cache.fingerprint(sig) != kernel_cache.fingerprint(tanh)


def test_an_unwritable_folder_means_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(blocker))  # kernels/ cannot be made in a file
    assert kernel_cache.source_file("def kernel(): pass\n", m.relu, "f", "serial", ()) is None


def test_a_changed_helper_changes_the_fingerprint():
    """A user's function that calls a user's helper: editing the helper alone must not load
    the kernel compiled from the old one."""
    old, new = {}, {}
    exec("def h(x):\n    return x + 1\n\ndef f(x):\n    return h(x)\n", old)
    exec("def h(x):\n    return x + 2\n\ndef f(x):\n    return h(x)\n", new)
    assert kernel_cache.fingerprint(old["f"]) != kernel_cache.fingerprint(new["f"])
    assert kernel_cache.fingerprint(old["f"]) == kernel_cache.fingerprint(old["f"])
