"""What the CPU decides about Numba's code: the vector width (512-bit on AVX-512 CPUs, set
before Numba's first compile), whether streams from main memory are prefetched in software
(:func:`software_prefetch`) and how many vectors a loop of transcendental math interleaves
(:func:`interleaved`).

LLVM tunes Intel's AVX-512 CPUs (Skylake-SP to Sapphire Rapids) with ``prefer-256-bit``: its
loop vectorizer stops at 256-bit vectors, leaving half of each AVX-512 register unused (clang
lifts it with ``-mprefer-vector-width=512``; Numba has no such option). Our transcendental
kernels are compute-bound in cache, so they lose up to a third there. Numba takes its CPU
features once, when it creates its CPU target (at its first compile or ``@njit`` decoration):
fastgd adds ``-prefer-256-bit`` to them when it is imported, for the whole process. It does
nothing where the CPU has no AVX-512, where ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` are set
(the user's choice stands) or with ``FASTGD_VECTOR_512=0``; if Numba's target already exists
(Numba code ran before fastgd was imported) it is too late, and :func:`describe` says so.
"""

from __future__ import annotations

LIFT = "-prefer-256-bit"


#: a bad FASTGD_VECTOR_512, raised by :func:`check_setting` (at the first compile, and by
#: ``fastgd info``) rather than while fastgd is imported, where it was a traceback
SETTING_ERROR = None


def check_setting() -> None:
    if SETTING_ERROR is not None:
        raise SETTING_ERROR


def prefer_512_bit() -> str:
    """Lift LLVM's 256-bit preference for this process where it applies; says what it did."""
    from fastgd.config import SettingError, env_flag

    global SETTING_ERROR
    try:
        lift = env_flag("FASTGD_VECTOR_512")
    except SettingError as e:
        SETTING_ERROR = e
        return f"LLVM's default ({e})"
    if not lift:
        return "LLVM's default (FASTGD_VECTOR_512=0)"
    try:
        from llvmlite import binding
        from numba.core import config
    except ImportError:
        return "no Numba"
    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return "as NUMBA_CPU_NAME / NUMBA_CPU_FEATURES set them"
    features = binding.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return "LLVM's default (no AVX-512)"
    config.CPU_FEATURES = f"{features},{LIFT}"
    return "512-bit"


def numba_features() -> list[str]:
    """The CPU features Numba's CPU target compiles with (made here if not yet made)."""
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen().magic_tuple()[2].split(",")


def has_avx512() -> bool:
    return "+avx512f" in numba_features()


def describe() -> str:
    """The vector preference Numba's CPU target compiles with, for ``fastgd info``."""
    check_setting()
    features = numba_features()
    if "+avx512f" not in features:
        return "256-bit at most (no AVX-512)"
    if LIFT in features:
        return "512-bit (AVX-512; FASTGD_VECTOR_512=0 keeps LLVM's choice)"
    if PREFERENCE == "512-bit":
        return ("LLVM's default for this CPU: Numba's CPU target was made before fastgd was "
                "imported (import fastgd first)")
    return PREFERENCE

PREFERENCE = prefer_512_bit()


#: LLVM's names of AMD CPUs (``znver3``...): their hardware prefetchers keep a compute-bound
#: loop fed from main memory without help
AMD_CPU_NAMES = ("znver", "bdver", "btver", "amdfam")
#: where Linux names the CPU's vendor, for a CPU LLVM does not know
CPUINFO = "/proc/cpuinfo"


def is_amd() -> bool:
    """An AMD CPU, by LLVM's name for it or, where LLVM does not know it ("generic"), by
    the vendor Linux reports."""
    try:
        from llvmlite import binding

        name = binding.get_host_cpu_name()
        if name != "generic":
            return name.startswith(AMD_CPU_NAMES)
    except ImportError:
        pass
    try:
        with open(CPUINFO) as f:
            return "AuthenticAMD" in f.read(4096)
    except OSError:
        return False


def software_prefetch() -> tuple[bool, str]:
    """(whether, what decided): whether a parallel map of transcendental math over arrays
    from main memory runs in short chunks that each prefetch the inputs ahead
    (``codegen._chunked``, ``cpu_memory``); the Numba backend asks once, before its first
    such kernel. Measured both ways, float32 at 2^24 on 2-core VMs: on Intel's Sapphire
    Rapids it lifted mish-like math from 0.57 to 1.01 Gelem/s; on AMD's Zen 3 the same
    chunks cost 10-45 % against long chunks without prefetch (sigmoid's backward 12.9-17.6
    against 21.2-21.5 GB/s, tanh's forward 15.4-17.1 against 21.6-24.2), so AMD CPUs go
    without and every other CPU keeps it. ``FASTGD_PREFETCH=1`` / ``0`` decides instead."""
    from fastgd.config import env_flag

    asked = env_flag("FASTGD_PREFETCH", default=None)
    return (not is_amd(), "this CPU") if asked is None else (asked, "FASTGD_PREFETCH")


INTERLEAVE_OPTION = "-force-vector-interleave"


def interleave_note() -> str:
    """How loops of transcendental math interleave, for ``fastgd info`` and reports."""
    from fastgd import config

    count = config.INTERLEAVE
    return (f"{count} vectors an iteration in loops of transcendental math" if count > 1
            else "LLVM's choice (config.INTERLEAVE = 1)")


def interleaved(kernel, count: int):
    """``kernel`` (a Numba dispatcher) compiling with LLVM's loop vectorizer told to
    interleave ``count`` vectors (``config.INTERLEAVE``); 1: LLVM's choice. The option is
    LLVM's, for the whole process: it is set only while the kernel compiles, under Numba's
    compiler lock (no other thread compiles meanwhile), then back to its default (0: LLVM's
    cost model). A kernel loaded from fastgd's cache compiles nothing; its key holds
    ``count``."""
    if count == 1:
        return kernel
    from llvmlite import binding
    from numba.core.compiler_lock import global_compiler_lock

    compile_one = kernel.compile  # what the dispatcher calls for a signature it lacks

    def compile_interleaved(sig):
        with global_compiler_lock:
            binding.set_option("fastgd", f"{INTERLEAVE_OPTION}={count}")
            try:
                return compile_one(sig)
            finally:
                binding.set_option("fastgd", f"{INTERLEAVE_OPTION}=0")

    kernel.compile = compile_interleaved
    return kernel
