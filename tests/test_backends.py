"""Backend listing, choice (argument > context > environment > auto) and its errors."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastgd
from fastgd import config
from fastgd.backends import codegen, resolve


def test_backends_lists_every_backend_with_a_status():
    status = fastgd.backends()
    assert set(status) == {"numpy", "numba", "cuda"}
    assert status["numpy"].startswith("ok") and status["numba"].startswith("ok")
    assert "threads" in status["numba"]
    assert status["cuda"].startswith(("ok", "unavailable: "))


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown backend 'tpu'.*numpy.*numba.*cuda"):
        fastgd.sigmoid(np.ones(3), backend="tpu")
    with pytest.raises(ValueError, match="unknown backend"):
        with fastgd.use_backend("tpu"):
            pass
    for empty in ("", 0):  # named nothing: refused, not taken for auto (an audit)
        with pytest.raises(ValueError, match=f"unknown backend {empty!r}"):
            fastgd.sigmoid(np.ones(3), backend=empty)


@pytest.mark.skipif(fastgd.backends()["cuda"].startswith("ok"), reason="a GPU is present")
def test_unavailable_cuda_backend_says_why():
    with pytest.raises(fastgd.BackendUnavailable, match="unavailable.*available: \\['numpy'"):
        fastgd.get_backend("cuda")
    with pytest.raises(fastgd.BackendUnavailable, match="'cuda' is unavailable: "):
        fastgd.to_device(np.ones(3))  # not numba-cuda's driver error
    entered = False
    with pytest.raises(fastgd.BackendUnavailable, match="'cuda' is unavailable: "):
        with fastgd.use_backend("cuda"):  # at the with, not at the block's first call
            entered = True
    assert not entered


def test_backends_gives_the_thread_count_of_the_moment():
    import numba

    before = numba.get_num_threads()
    assert f"{before} threads" in fastgd.backends()["numba"]
    try:
        numba.set_num_threads(1)
        assert "1 threads" in fastgd.backends()["numba"]
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("name", [b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"])
def test_cuda_status_names_the_device_as_any_numba_cuda_gives_it(name, monkeypatch):
    """numba-cuda gave device names as bytes, and gives str since its devices come from
    cuda.core: ``.decode()`` on a str made the backend 'unavailable' on every real GPU."""
    from types import SimpleNamespace

    from fastgd.backends import cuda_backend

    device = SimpleNamespace(name=name)
    fake = SimpleNamespace(is_available=lambda: True, get_current_device=lambda: device)
    monkeypatch.setattr(cuda_backend, "_cuda", lambda: fake)
    monkeypatch.setattr(cuda_backend, "simulator_enabled", lambda: False)
    assert cuda_backend.CudaBackend().status() == "ok (NVIDIA H100 80GB HBM3)"


def test_cuda_backend_reads_foreign_device_arrays_through_a_numba_view(monkeypatch):
    """A torch CUDA tensor (``.size`` a method, ``.dtype`` torch's) reaches the kernels as
    a Numba view of its memory, as ``numba.cuda.as_cuda_array`` makes one; CuPy and Numba
    arrays pass as they are."""
    from types import SimpleNamespace

    from fastgd.backends import cuda_backend

    def device_class(module):
        cai = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}
        return type("Array", (), {"__module__": module, "__cuda_array_interface__": cai,
                                  "size": lambda self: 4})

    views = []
    fake = SimpleNamespace(as_cuda_array=lambda a: views.append(a) or "numba view")
    monkeypatch.setattr(cuda_backend, "_cuda", lambda: fake)
    tensor = device_class("torch")()
    assert cuda_backend.CudaBackend.native(tensor) == "numba view" and views == [tensor]
    for module in ("cupy._core.core", "numba.cuda.cudadrv.devicearray"):
        a = device_class(module)()
        assert cuda_backend.CudaBackend.native(a) is a


def test_order_of_choice(monkeypatch):
    x = np.ones(3)
    assert resolve(None, x).name == "numba"  # auto for host arrays
    # as if FASTGD_BACKEND=numpy had been set when fastgd was imported
    monkeypatch.setattr(sys.modules["fastgd.backends"], "_ENV_BACKEND", "numpy")
    assert resolve(None, x).name == "numpy"
    with fastgd.use_backend("numba"):
        assert resolve(None, x).name == "numba"  # the context beats the environment
        assert resolve("numpy", x).name == "numpy"  # the argument beats the context
    assert resolve(None, x).name == "numpy"


def test_environment_variable_is_read_at_import():
    code = ("import numpy as np, fastgd; from fastgd.backends import resolve; "
            "print(resolve(None, np.ones(3)).name)")
    env = {**os.environ, "FASTGD_BACKEND": " NumPy"}  # any case, spaces around
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["numpy"]
    env["FASTGD_BACKEND"] = "nope"
    code = "import numpy as np, fastgd; fastgd.relu(np.ones(3))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    # the message says where the name came from: the call named no backend
    assert "FASTGD_BACKEND='nope' (from the environment): unknown backend 'nope'" in done.stderr


def test_use_backend_is_per_thread():
    seen = {}
    ready = threading.Barrier(2)

    def worker(name):
        with fastgd.use_backend(name):
            ready.wait()
            seen[name] = resolve(None, np.ones(1)).name

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "numba")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"numpy": "numpy", "numba": "numba"}


def test_small_arrays_run_the_serial_loop(thresholds):
    be = fastgd.get_backend("numba")
    assert be.loop_for(1 << 12) == "serial"
    assert be.loop_for(config.PARALLEL_THRESHOLD + 1) == "parallel"
    assert be.loop_for(1 << 12, nbytes=config.STREAM_BYTES) == "serial"  # its size decides


def test_arrays_from_main_memory_get_a_loop_of_their_own(thresholds):
    be = fastgd.get_backend("numba")
    n = config.CHEAP_PARALLEL_THRESHOLD + 1
    relu = fastgd.activations["relu"].scalar_forward
    assert be.loop_for(n, relu, config.STREAM_BYTES - 1) == "parallel"
    assert be.loop_for(n, relu, config.STREAM_BYTES) == "parallel_from_memory"
    assert be.loop_for(n, nbytes=config.STREAM_BYTES) == "parallel_from_memory"


def test_cheap_math_stays_serial_longer(thresholds):
    """relu and the optimizers' rules (SGD's, Adam's with its sqrt) pay the threads'
    start-up up to CHEAP_PARALLEL_THRESHOLD; math with transcendental functions (sigmoid)
    from PARALLEL_THRESHOLD on."""
    from fastgd.optim import rules

    be = fastgd.get_backend("numba")
    relu, sigmoid = (fastgd.activations[n].scalar_forward for n in ("relu", "sigmoid"))
    middle = config.PARALLEL_THRESHOLD + 1
    for cheap in (relu, rules.sgd_momentum, rules.adam):
        assert be.loop_for(middle, cheap) == "serial"
        assert be.loop_for(config.CHEAP_PARALLEL_THRESHOLD, cheap) == "serial"
        assert be.loop_for(config.CHEAP_PARALLEL_THRESHOLD + 1, cheap) == "parallel"
    assert be.loop_for(middle, sigmoid) == "parallel"
    x = np.linspace(-3, 3, middle, dtype=np.float32)
    np.testing.assert_array_equal(fastgd.relu(x), np.maximum(x, 0))


def test_in_place_outputs_are_one_argument_with_their_input():
    """An output written back into its input is one kernel argument (codegen.map_source): two
    arguments for one array fail the overlap check of the serial loop's vector code."""
    source = codegen.map_source(4, 3, 2, "serial", packed=True, aliases=(0, 2, 3))
    assert source.splitlines()[0] == "def kernel(in0, in1, in2, in3, sv):"
    assert "in0[i] = r[0]" in source and "in3[i] = r[2]" in source
    be = fastgd.get_backend("numba")
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    expected = fastgd.sigmoid(x, backend="numpy")
    assert fastgd.sigmoid(x, out=x) is x
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    sigmoid = fastgd.activations["sigmoid"].scalar_forward
    assert any(key[0][-1] == (0,) and key[1] is sigmoid for key in be._kernels)


def test_get_backend_auto_is_refused():
    with pytest.raises(ValueError, match="auto"):
        fastgd.get_backend("auto")


def test_to_host_passes_host_arrays_through():
    x = np.arange(3.0)
    assert fastgd.to_host(x) is x


@pytest.mark.parametrize("env", [None, "numpy", "numba"])
def test_the_fast_path_of_a_call_chooses_as_resolve_does(env, monkeypatch):
    """Activation calls on plain NumPy arrays skip ``resolve`` (registry._fast_call): the
    backend they run on must be the one it would choose, for every argument, context and
    environment."""
    from fastgd.backends import host_fast_path

    monkeypatch.setattr(sys.modules["fastgd.backends"], "_ENV_BACKEND", env)
    x = np.ones(3)
    for context in (None, "auto", "numpy", "numba"):
        with fastgd.use_backend(context) if context else contextlib.nullcontext():
            for arg in (None, "auto", "numpy", "numba"):
                chosen = resolve(arg, x)
                fast = host_fast_path(arg)
                assert fast is (chosen if chosen.name == "numba" else None), (arg, context)


def test_a_torch_out_is_written_back_through_a_numba_view(monkeypatch):
    """A scratch result (an ``out`` with no flat view, or overlapping an input) is copied into
    a torch ``out`` through a Numba view of its memory: torch's ``__setitem__`` refuses a
    CuPy or Numba value (TypeError after the kernel had run)."""
    from types import SimpleNamespace

    from fastgd.activation import registry
    from fastgd.backends import cuda_backend

    memory = np.zeros((2, 3), np.float32)

    class Tensor:
        __module__ = "torch"

        def __setitem__(self, key, value):
            raise TypeError("can't assign a CAI to a torch.FloatTensor")

    class NumbaView:  # as numba's DeviceNDArray: no Ellipsis index (numba#5170)
        def __setitem__(self, key, value):
            if key is Ellipsis:
                raise TypeError("unsupported operand type(s) for +: 'ellipsis' and 'int'")
            memory[key] = value

    fake = SimpleNamespace(as_cuda_array=lambda a: NumbaView())  # a view of the memory
    monkeypatch.setattr(cuda_backend, "_cuda", lambda: fake)
    monkeypatch.setattr(registry._arrays, "shape_of", lambda a: (2, 3))
    out = Tensor()
    assert registry._write_back(out, np.arange(6, dtype=np.float32), scratch=True) is out
    np.testing.assert_array_equal(memory, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_a_cpu_tensor_that_requires_grad_is_refused_by_name():
    """Read as a NumPy array it raised torch's own RuntimeError; docs/activations.md
    promises a refusal saying to pass t.detach()."""
    torch = pytest.importorskip("torch")
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"a Tensor that requires grad: pass t.detach\(\)"):
        fastgd.relu(t)
    np.testing.assert_array_equal(fastgd.relu(t.detach()), [1, 1, 1])

    class Wrapped:  # not a tensor: read through __array__, whatever its attributes say
        requires_grad = True

        def __array__(self, dtype=None, copy=None):
            return np.array([-1.0, 2.0])

    np.testing.assert_array_equal(fastgd.relu(Wrapped()), [0, 2])
    with pytest.raises(TypeError, match=r"requires grad: pass t.detach\(\)"):
        fastgd.to_host(t)
    with pytest.raises(TypeError, match=r"is not an array: Size$"):
        fastgd.Adam({"w": torch.Size([3])})


def test_a_device_tensor_that_cannot_share_its_memory_is_named():
    """torch raises RuntimeError, not AttributeError, for the array interface of a CUDA tensor
    that requires grad: ``hasattr`` let it through every check with torch's words."""

    class Parameter:
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires "
                               "grad. If gradients aren't required, use var.detach()")

    for call in (lambda: fastgd.relu(Parameter()), lambda: fastgd.Adam([Parameter()]),
                 lambda: fastgd.clip_grad_norm([Parameter()], 1.0)):
        with pytest.raises(TypeError, match="Parameter cannot share its memory.*detach"):
            call()


def test_importing_fastgd_sets_a_short_openmp_spin_unless_the_user_chose_one():
    """``import fastgd`` sets GOMP_SPINCOUNT (libgomp's wait before a worker sleeps) to
    ``config.OPENMP_SPINCOUNT``: libgomp's own spin starves NumPy's BLAS threads. A fresh
    interpreter, so the setting is seen at import."""

    def spin_after_import(env):
        code = "import os, fastgd; print(os.environ.get('GOMP_SPINCOUNT'))"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()

    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    assert spin_after_import(env) == str(config.OPENMP_SPINCOUNT) == "10000"
    assert spin_after_import({**env, "GOMP_SPINCOUNT": "5"}) == "5"
    assert spin_after_import({**env, "OMP_WAIT_POLICY": "passive"}) == "None"


def test_fastgd_nn_is_imported_on_first_use_not_by_import_fastgd():
    """``import fastgd`` leaves out ``fastgd.nn`` (its layers, losses and data sets are a
    layer above the kernels); ``fastgd.nn`` then imports it, as ``from fastgd import nn``
    does, and another missing name is still an AttributeError."""
    code = ("import sys, fastgd; before = 'fastgd.nn' in sys.modules; nn = fastgd.nn; "
            "print(before, nn is sys.modules['fastgd.nn'], hasattr(nn, 'MLP'), "
            "hasattr(fastgd, 'no_such_name'))")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["False", "True", "True", "False"]
