"""``fastgd``: ``info`` (this machine), ``bench`` (run the benchmarks, write a report),
``report`` (write a report from pytest-benchmark JSON files) and ``study`` (rerun a
learning-dynamics study, write its report).

    fastgd info
    fastgd bench --quick
    fastgd bench --ops adam,gelu --backends numba,cuda --sizes 2^16..2^26
    fastgd report .benchmarks/…/0001_….json other-machine.json --out reports/compare
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from pathlib import Path

from fastgd import config
from fastgd._optional import MissingDependency, need

MAX_EXPONENT = 28


class CLIError(Exception):
    """A bad command line: printed as ``fastgd: error: ...``, exit status 2."""


def parse_sizes(text: str) -> list[int]:
    """``"1024,2^20"``, ``"2^16..2^26"`` (every power of two) or ``"2^16..2^26:2"`` (every
    second one) -> sorted sizes in elements."""
    sizes = set()
    too_big = CLIError(f"sizes must be between 1 and 2^{MAX_EXPONENT} elements")
    for part in filter(None, (p.strip() for p in text.split(","))):
        if any(len(d) > 20 for d in re.findall(r"\d+", part)):  # before int() refuses it
            raise too_big
        m = re.fullmatch(r"2\^(\d+)\.\.2\^(\d+)(?::(\d+))?", part)
        if m:
            lo, hi, step = int(m[1]), int(m[2]), int(m[3] or 1)
            if lo > hi or step < 1:
                raise CLIError(f"bad size range {part!r}: write 2^LOW..2^HIGH[:STEP]")
            if hi > MAX_EXPONENT:  # before the range is built: 2^0..2^100000 took 760 MB
                raise too_big
            sizes.update(1 << e for e in range(lo, hi + 1, step))
            continue
        m = re.fullmatch(r"2\^(\d+)|(\d+)", part)
        if not m:
            raise CLIError(f"bad size {part!r}: write a number, 2^K, or a range 2^A..2^B")
        if m[1] and int(m[1]) > MAX_EXPONENT:
            raise too_big
        sizes.add(1 << int(m[1]) if m[1] else int(m[2]))
    if not sizes:
        raise CLIError("no sizes given")
    if min(sizes) < 1 or max(sizes) > 1 << MAX_EXPONENT:
        raise too_big
    return sorted(sizes)


def _names(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


# -- info ---------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from fastgd.bench import bandwidth, machine

    figures = None if args.no_probe else bandwidth.measure()
    facts = machine.facts(figures)  # after the probe: the threading layer is known by then
    print(f"fastgd {facts['fastgd']}  (Python {facts['python']}, NumPy {facts['numpy']})")
    print(f"CPU: {facts['cpu']}, {facts['cores']} cores")
    print(f"Numba: {facts['numba']}, {facts.get('numba_threads')} threads, "
          f"threading layer {facts.get('threading_layer')}")
    print(f"OpenMP wait: {facts.get('openmp_wait')}")
    print(f"CPU vectors: {facts.get('cpu_vectors')}")
    print(f"CPU software prefetch: {facts.get('cpu_prefetch')}")
    print(f"CPU loop interleave: {facts.get('cpu_interleave')}")
    print(f"GPU: {facts['gpu'] or 'none'}")
    print("backends:")
    for name, status in facts["backends"].items():
        print(f"  {name:12s} {status}")
    print("peers: " + (", ".join(f"{k} {v}" for k, v in facts["peers"].items()) or "none"))
    print(f"kernel cache: {_kernel_cache_line()}")
    if figures:
        print("measured bandwidth (GB/s):")
        for device, f in figures.items():
            shown = ", ".join(f"{k} {v:.1f}" for k, v in f.items() if k != "n")
            print(f"  {device.upper()}: {shown}  (n = 2^{f['n'].bit_length() - 1} float32)")
    return 0


def _kernel_cache_line() -> str:
    from fastgd.backends import kernel_cache

    if not kernel_cache.enabled():
        return f"off (FASTGD_KERNEL_CACHE={os.environ.get('FASTGD_KERNEL_CACHE', '')})"
    folder = kernel_cache.folder()
    if folder.is_dir() and not kernel_cache.writable():
        return f"{folder} (not writable: kernels are compiled in each process)"
    count = len(list(folder.glob("k_[0-9a-f]*.py"))) if folder.is_dir() else 0
    files = [f for f in kernel_cache.root().rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files) / 1e6
    return f"{folder} ({count} kernels of this fastgd; {size:.0f} MB for every version)"


# -- bench --------------------------------------------------------------------------------
def find_benchmarks() -> Path:
    """The ``benchmarks/`` folder: in the current directory, else beside the package."""
    import fastgd

    for root in (Path.cwd(), Path(fastgd.__file__).resolve().parent.parent):
        if (root / "benchmarks" / "conftest.py").is_file():
            return root / "benchmarks"
    raise CLIError("no benchmarks/ folder found here or beside the fastgd package; run "
                   "fastgd bench from a fastgd source checkout")


class Progress:
    """A pytest plugin showing a tqdm progress bar over the benchmarks."""

    def __init__(self):
        self.total = 0
        self.bar = None
        # off a terminal (a log, CI) pytest's dots show progress: a bar there is one long line
        self.tty = sys.stderr.isatty()

    def pytest_collection_finish(self, session):
        self.total = len(session.items)  # pytest calls this even when collection fails

    def pytest_runtest_logstart(self, nodeid, location):
        if self.bar is None and self.tty:  # from the first benchmark on: no empty bar first
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="bench", desc="fastgd bench",
                            file=sys.stderr, dynamic_ncols=True)

    def pytest_runtest_logreport(self, report):
        if self.bar is not None and report.when == "teardown":
            self.bar.set_postfix_str(report.nodeid.rsplit("[", 1)[-1].rstrip("]"))
            self.bar.update(1)

    def pytest_report_teststatus(self, report, config):
        if report.when == "call" and report.passed and self.tty:
            return "passed", "", ""  # the progress bar shows progress, not dots
        return None

    def pytest_sessionfinish(self, session):
        if self.bar is not None:
            self.bar.close()


def bench_args(args, folder: Path) -> list[str]:
    """The pytest command line for ``fastgd bench`` arguments."""
    from fastgd.backends import kernel_cache
    from fastgd.bench import activation_cases, optimizer_cases

    kernel_cache.enabled()  # a bad FASTGD_KERNEL_CACHE fails here, not in every benchmark
    known = tuple(activation_cases.DEVICE)  # every implementation a sweep knows, and peers
    backends = _names(args.backends)
    unknown = [b for b in backends if b not in known]
    if unknown:
        raise CLIError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(known)}")
    known_ops = sorted({*activation_cases.ops(), *optimizer_cases.OPS})
    probe = ("copy", "inplace")  # run with every sweep; named alone, the suite says so
    unknown = [o for o in _names(args.ops or "") if o not in known_ops and o not in probe]
    if unknown:
        raise CLIError(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(known_ops)}")
    for flag, value in (("--ops", args.ops), ("--backends", args.backends)):
        if value is not None and not _names(value):  # "" or ",": not the whole sweep
            raise CLIError(f"{flag} names nothing; leave it out for all")
    out = [str(folder), "-q", "-p", "no:cacheprovider", "--benchmark-quiet"]
    if args.ops:
        out.append(f"--fastgd-ops={','.join(_names(args.ops))}")
    if backends:
        out.append(f"--fastgd-backends={','.join(backends)}")
    if args.sizes is not None:  # "" is no sizes, not the whole sweep
        out.append(f"--fastgd-sizes={','.join(map(str, parse_sizes(args.sizes)))}")
    if args.quick:
        # 5 rounds at least: pytest-benchmark sizes the rounds from a calibration, which a
        # busy moment can make 2, both stalled (a 7 µs kernel timed at 5 ms)
        out += ["--fastgd-quick", "--benchmark-max-time=0.01", "--benchmark-min-rounds=5"]
    if args.min_rounds is not None:
        if args.min_rounds < 1:
            raise CLIError(f"--min-rounds must be at least 1, got {args.min_rounds}")
        out.append(f"--benchmark-min-rounds={args.min_rounds}")
    if args.max_time is not None:
        if not 0 < args.max_time < math.inf:
            raise CLIError(f"--max-time must be a number of seconds > 0, got {args.max_time}")
        out.append(f"--benchmark-max-time={args.max_time}")
    if args.out:
        _check_out(args.out)  # before the sweep, not after it
    out.append(f"--fastgd-report={args.out or ''}")
    return out + list(args.pytest_args)


def _check_out(out) -> None:
    from fastgd.bench import report

    try:
        report.check_out(out)
    except report.ReportError as e:
        raise CLIError(str(e)) from e


def cmd_bench(args) -> int:
    pytest = need("pytest", "bench", "fastgd bench")
    need("pytest_benchmark", "bench", "fastgd bench")
    folder = find_benchmarks()
    argv = bench_args(args, folder)
    with warnings.catch_warnings():  # pytest-benchmark's "Not saving anything" after an error
        warnings.filterwarnings("ignore", message="Not saving anything")
        code = pytest.main(argv, plugins=[Progress()])
    if code == pytest.ExitCode.USAGE_ERROR:
        return 2
    return int(code)


# -- report -------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from fastgd.bench import report

    try:
        index = report.write(args.files, args.out)
    except report.ReportError as e:
        raise CLIError(str(e)) from e
    print(f"report written: {index}")
    return 0


# -- study --------------------------------------------------------------------------------
def cmd_study(args) -> int:
    from fastgd.nn import studies

    need("matplotlib", "examples", "fastgd study")  # checked before a study trains
    need("sklearn", "examples", "fastgd study (the digits data set)")
    if args.out:
        _check_out(args.out)  # a clear message, not os.makedirs' traceback
    argv = [args.name] + (["--out", args.out] if args.out else []) + (["--tiny"] * args.tiny)
    return studies.main(argv)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgd", description=__doc__.split("\n\n")[0].replace(
        "``", ""), epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, threads, CPU, GPU, measured bandwidth")
    info.add_argument("--no-probe", action="store_true", help="skip the bandwidth probe")
    info.set_defaults(run=cmd_info)

    bench = sub.add_parser("bench", help="run the benchmarks (pytest benchmarks), then report")
    bench.add_argument("--quick", action="store_true",
                       help="sizes 2^10, 2^16, 2^20, short timings, activation backwards from x "
                       "only (not from y): about a minute on 2 cores; 1.5 to 2 the first time, "
                       "when the kernels compile")
    bench.add_argument("--ops", help="comma list of ops, e.g. gelu,adam (default all; an "
                       "unknown name lists the known ones)")
    bench.add_argument("--backends",
                       help="comma list of backends and peers, e.g. numba,cuda,torch")
    bench.add_argument("--sizes", help="e.g. 2^16..2^26, 2^16..2^26:2 or 1024,2^20 (up to "
                       "2^26 on the CPU, 2^28 on a GPU; softmax and log_softmax run whole rows "
                       "of 256 and prelu 16 channels, so their n is rounded to fit: the report "
                       "shows the n that ran)")
    bench.add_argument("--min-rounds", type=int, help="pytest-benchmark --benchmark-min-rounds "
                       "(calls slower than 0.1 s run 2 rounds whatever it says)")
    bench.add_argument("--max-time", type=float, help="pytest-benchmark --benchmark-max-time "
                       "(idem)")
    bench.add_argument("--out", help="report folder (default a new reports/<machine>-<date>)")
    bench.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    bench.set_defaults(run=cmd_bench)

    rep = sub.add_parser("report", help="write a report from pytest-benchmark JSON files")
    rep.add_argument("files", nargs="+", help="pytest-benchmark JSON; two or more compare")
    rep.add_argument("--out", help="report folder (default a new reports/<machine>-<date>, or "
                     "reports/compare-<machine>-<date> for two or more files)")
    rep.set_defaults(run=cmd_report)

    study = sub.add_parser("study", help="run a learning-dynamics study, write its report")
    study.add_argument("name", help="vanishing, gd-variants, optimizers, learning-rate, "
                       "clipping, dead-relu, or all")
    study.add_argument("--out", help="report folder (default reports/studies/NAME)")
    study.add_argument("--tiny", action="store_true", help="a small, fast setting")
    study.set_defaults(run=cmd_study)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (CLIError, config.SettingError, MissingDependency) as e:  # (SettingError: a
        # bad FASTGD_... value; MissingDependency: an optional package not installed)
        print(f"fastgd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
