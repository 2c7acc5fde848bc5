"""The ``fastgd`` command line: report, bench argument checks, info."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fastgd
from fastgd import cli

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def test_report_writes_index(tmp_path, capsys):
    assert cli.main(["report", str(DATA / "bench_small.json"), "--out", str(tmp_path)]) == 0
    assert f"report written: {tmp_path / 'index.md'}" in capsys.readouterr().out
    assert (tmp_path / "throughput-relu.png").is_file()
    # the folder stands alone: its JSON beside it (the source may be git-ignored .benchmarks/)
    assert (tmp_path / "benchmarks.json").read_bytes() == (DATA / "bench_small.json").read_bytes()
    index = tmp_path / "index.md"
    assert "Source: [`benchmarks.json`](benchmarks.json) (beside this page; from" in (
        index.read_text())
    assert cli.main(["report", str(tmp_path / "benchmarks.json"), "--out", str(tmp_path)]) == 0
    assert "Source: [`benchmarks.json`](benchmarks.json) (beside this page)\n" in (
        index.read_text())
    # a comparison keeps its runs' JSON too, and removes the single run's it replaces
    other = DATA / "bench_other.json"
    assert cli.main(["report", str(DATA / "bench_small.json"), str(other), "--out",
                     str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks-2.json").read_bytes() == other.read_bytes()
    assert "[`benchmarks-2.json`](benchmarks-2.json) (beside this page; from" in (
        index.read_text())
    assert not (tmp_path / "benchmarks.json").exists()
    # compared again the other way round, from the folder's own files: each keeps its data
    first, second = (tmp_path / f"benchmarks-{k}.json" for k in (1, 2))
    small, other_data = (json.loads(p.read_text()) for p in (first, second))
    assert cli.main(["report", str(second), str(first), "--out", str(tmp_path)]) == 0
    assert json.loads(first.read_text()) == other_data
    assert json.loads(second.read_text()) == small


@pytest.mark.parametrize("content, message", [
    ("{oops", "is not JSON"),
    ('{"hello": 1}', "is not pytest-benchmark output: expected an object with a 'benchmarks'"),
])
def test_report_bad_json(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert cli.main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgd report: error: ") and message in err
    assert not (tmp_path / "r").exists()


def test_report_missing_file(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bench_unknown_backend(capsys):
    assert cli.main(["bench", "--backends", "numba,tpu"]) == 2
    assert "unknown backend(s) tpu; known: numpy, numba, cuda, torch" in capsys.readouterr().err


@pytest.mark.parametrize("sizes, message", [
    ("2^30", "between 1 and 2^28"), ("lots", "bad size 'lots'"),
    ("2^20..2^10", "bad size range"),
    ("2^0..2^10000000", "between 1 and 2^28"),  # refused before the range is built (60 GB)
    ("2^99999999", "between 1 and 2^28"),
    ("", "no sizes given"),  # ran the whole sweep
])
def test_bench_bad_sizes(capsys, sizes, message):
    assert cli.main(["bench", "--sizes", sizes]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--min-rounds", "0"], "--min-rounds must be at least 1"),
    (["--max-time", "-1"], "--max-time must be a number of seconds > 0"),
    (["--max-time", "inf"], "--max-time must be a number of seconds > 0"),  # every one failed
    (["--backends", ","], "--backends names nothing"),  # ran the whole sweep
    (["--backends", " "], "--backends names nothing"),
    (["--out", "{file}"], "exists and is not a folder"),
    (["--out", "{file}/sub"], "exists and is not a folder"),
])
def test_bench_bad_options_fail_before_the_sweep(capsys, tmp_path, args, message):
    (tmp_path / "file").write_text("")
    args = [a.format(file=tmp_path / "file") for a in args]
    assert cli.main(["bench", "--ops", "relu", *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_empty_ops_and_a_study_with_a_bad_out(capsys, tmp_path):
    assert cli.main(["bench", "--ops", ","]) == 2
    assert "--ops names nothing; leave it out for all" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):  # os.makedirs' traceback
        assert cli.main(["study", "vanishing", "--tiny", "--out", str(out)]) == 2
        assert "exists and is not a folder" in capsys.readouterr().err


def test_parse_sizes():
    assert cli.parse_sizes("2^16..2^20") == [1 << k for k in range(16, 21)]
    assert cli.parse_sizes("2^16..2^26:5") == [1 << 16, 1 << 21, 1 << 26]
    assert cli.parse_sizes("1000, 2^10") == [1000, 1024]


def test_bench_args():
    args = cli.parser().parse_args(
        ["bench", "--quick", "--ops", "relu, gelu", "--backends", "numba", "--sizes", "2^10",
         "--out", "x", "--", "-x"])
    argv = cli.bench_args(args, Path("benchmarks"))
    assert argv[0] == "benchmarks"
    for flag in ("--fastgd-ops=relu,gelu", "--fastgd-backends=numba", "--fastgd-sizes=1024",
                 "--fastgd-quick", "--fastgd-report=x", "-x"):
        assert flag in argv


def test_bench_unknown_op_fails_before_the_sweep(capsys):
    assert cli.main(["bench", "--ops", "relu,nope"]) == 2
    err = capsys.readouterr().err
    assert "fastgd bench: error: unknown op(s) nope; known: " in err
    assert all(f"{op}," in err for op in ("elu", "gelu", "adam", "sgd_momentum"))


def test_pytest_benchmarks_unknown_op_fails_clearly(tmp_path):
    """Runs collection only (nothing is timed): unknown ops are named with the known ones."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
         "--fastgd-ops=relu,nope", "--fastgd-backends=numpy", "--fastgd-quick",
         f"--fastgd-report={tmp_path / 'r'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4  # pytest's usage error
    out = proc.stdout + proc.stderr
    assert "unknown op(s) nope; known: " in out
    assert all(f"{op}," in out for op in ("elu", "gelu", "adam", "sgd_momentum"))


def test_bench_sizes_past_an_ops_limit_say_so(tmp_path):
    """Activations stop at 2^26 on the CPU: asking gelu at 2^27 there left the suite with no
    case and pytest with an INTERNALERROR; it is a usage error that gives the limit."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastgd.cli", "bench", "--ops", "gelu", "--sizes", "2^27",
         "--backends", "numpy", "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no case of gelu at the sizes asked" in proc.stderr + proc.stdout
    assert "INTERNALERROR" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, message", [
    pytest.param(["--ops", "lion", "--backends", "torch"], "no case of lion on torch at the "
                 "sizes asked (PyTorch has no Lion)", marks=pytest.mark.skipif(
                     importlib.util.find_spec("torch") is None, reason="needs torch")),
    (["--ops", "copy"], "copy and inplace are the bandwidth probe"),
    (["--ops", "relu", "--backends", "cupy"], "backend(s) cupy not available here"),
])
def test_bench_op_and_backend_with_no_case_fail_clearly(tmp_path, args, message):
    """It ran the bandwidth probe alone and wrote an empty report."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastgd.cli", "bench", "--sizes", "2^10", *args,
         "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()


def test_sizes_above_the_cpu_limit_are_left_out_for_every_suite(tmp_path):
    """Activations stop at 2^26 on the CPU; the optimizer cases ran at 2^27 there, silently
    unlike the activations: both leave it out, and a warning says so."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--co", "-q", "-p", "no:cacheprovider",
         "--fastgd-ops=relu,adam", "--fastgd-backends=numba", "--fastgd-sizes=2^10,2^27",
         "--fastgd-report=none"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ran and not [line for line in ran if str(1 << 27) in line]
    assert any("adam" in line for line in ran)
    assert "n above 2^26 runs on a GPU only: 2^27 not run on numba" in proc.stdout


def test_pytest_benchmarks_refuses_a_moved_rootdir(tmp_path):
    """``--fastgd-report DIR`` with an existing DIR (no '='): pytest would take the top-level
    configuration instead of benchmarks/pytest.ini, and silently save no JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--co", "-q", "--fastgd-report",
         "reports"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "was not read" in proc.stderr and "--fastgd-report=DIR" in proc.stderr


def test_info_says_how_the_openmp_workers_wait(capsys, monkeypatch):
    """GOMP_SPINCOUNT decides how fastgd's kernels share the cores with BLAS: ``info`` and
    the reports say what it is and who set it."""
    from fastgd.bench import machine

    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    assert machine.openmp_wait() == "GOMP_SPINCOUNT=10000 (fastgd's default)"
    cli.main(["info", "--no-probe"])
    assert "OpenMP wait: GOMP_SPINCOUNT=10000 (fastgd's default)\n" in capsys.readouterr().out
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    assert machine.openmp_wait() == "GOMP_SPINCOUNT=7 (set in the environment)"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert machine.openmp_wait() == "OMP_WAIT_POLICY=passive (set in the environment)"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert machine.openmp_wait() == "libgomp's default (set before fastgd was imported)"


def test_info_without_probe(capsys, tmp_path, monkeypatch):
    from fastgd.backends import kernel_cache

    monkeypatch.delenv("FASTGD_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("FASTGD_CACHE_DIR", str(tmp_path))
    here = kernel_cache.folder()
    here.mkdir(parents=True)
    (here / "k_0.py").write_text("x" * 2_000_000)
    (here / "k_junk.py").write_text("")  # not a kernel's name
    assert cli.main(["info", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "CPU: " in out and "numba" in out and "backends:" in out and "GPU: " in out
    be = fastgd.get_backend("numba")
    assert f"CPU software prefetch: {be.prefetch_note()}" in out
    assert ("CPU loop interleave: 2 vectors an iteration in loops of transcendental math"
            in out)
    assert f"kernel cache: {here} (1 kernels of this fastgd; 2 MB for every version)" in out
    monkeypatch.setenv("FASTGD_KERNEL_CACHE", "0")
    cli.main(["info", "--no-probe"])
    assert "kernel cache: off" in capsys.readouterr().out
    monkeypatch.setenv("FASTGD_PREFETCH", "1" if not be.prefetch else "0")
    cli.main(["info", "--no-probe"])  # what runs, not what a later variable says
    assert f"CPU software prefetch: {be.prefetch_note()}" in capsys.readouterr().out
    monkeypatch.setenv("FASTGD_KERNEL_CACHE", "maybe")  # an error, not a traceback
    assert cli.main(["info", "--no-probe"]) == 2
    assert ("fastgd info: error: FASTGD_KERNEL_CACHE='maybe': write 1 or 0"
            in capsys.readouterr().err)
    assert cli.main(["bench", "--ops", "relu"]) == 2  # before the sweep
    assert "fastgd bench: error: FASTGD_KERNEL_CACHE='maybe'" in capsys.readouterr().err


def test_the_deadline_skips_what_is_left():
    """``--fastgd-deadline``: past it every remaining benchmark is skipped, so a sweep cut
    short (a GPU machine lent for minutes) still ends as usual: its results saved, its
    report written. A ``timeout`` kill saved nothing."""
    import importlib
    import time
    from types import SimpleNamespace

    conftest = importlib.import_module("benchmarks.conftest")
    config = SimpleNamespace(_fastgd_start=time.time() - 10, getoption=lambda name: 5.0)
    item = SimpleNamespace(config=config)
    with pytest.raises(pytest.skip.Exception, match="past --fastgd-deadline=5 s"):
        conftest.pytest_runtest_setup(item)
    config._fastgd_start = time.time()
    conftest.pytest_runtest_setup(item)  # before it: runs
    config.getoption = lambda name: 0.0  # no deadline
    config._fastgd_start = 0.0
    conftest.pytest_runtest_setup(item)


def test_a_sweep_whose_report_cannot_be_written_fails(monkeypatch, tmp_path):
    """`fastgd bench` exited 0 after 'no report written' (its --out passed the permission
    check as root and failed at the end); the session now fails, and --out is probed by
    writing into it before the sweep."""
    import importlib
    from types import SimpleNamespace

    from fastgd.bench import report

    conftest = importlib.import_module("benchmarks.conftest")

    def refuse(sources, out):
        raise report.ReportError("cannot write the report into /proc/x")

    monkeypatch.setattr(conftest.report_writer, "write", refuse)
    config = SimpleNamespace(getoption=lambda name: "", _fastgd_json={"benchmarks": []})
    monkeypatch.setattr(conftest, "_saved_json", lambda config: None)
    session = SimpleNamespace(config=config, exitstatus=pytest.ExitCode.OK)
    conftest.pytest_sessionfinish(session, 0)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert config._fastgd_said.startswith("fastgd: no report written")
    with pytest.raises(report.ReportError, match="cannot write there"):
        report.check_out("/proc/fastgd-report")
    report.check_out(tmp_path / "a" / "b")  # can be made: made, probed, removed again
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("deadline, report, fails", [
    ("0.000001", "r", True), ("0.000001", "none", True),  # nothing ran, report or not
    ("1000", "none", False),
])
def test_a_sweep_that_ran_nothing_before_its_deadline_fails(tmp_path, deadline, report,
                                                            fails):
    """Every benchmark skipped by --fastgd-deadline: nothing saved, no report; the session
    exited 0 without a word. (Counted by the benchmarks that ran, not by a saved JSON:
    --benchmark-disable saves none.)"""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
         "--fastgd-ops=relu", "--fastgd-backends=numpy", "--fastgd-sizes=1024",
         "--benchmark-disable", f"--fastgd-deadline={deadline}",
         f"--fastgd-report={report if report == 'none' else tmp_path / report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert (proc.returncode != 0) == fails, out
    assert ("fastgd: no report: no benchmark ran before the deadline" in out) == fails


def test_the_bandwidth_probe_alone_is_not_a_sweep_that_ran():
    """The probe runs first and passed, so a session whose asked benchmarks the deadline
    all skipped counted one benchmark that ran and exited 0 with an empty report."""
    import importlib
    from types import SimpleNamespace

    conftest = importlib.import_module("benchmarks.conftest")
    conftest._RAN[0] = 0
    conftest._ASKED.clear()
    conftest._ASKED.add("benchmarks/test_optimizers.py::test_optimizer[sgd]")
    for nodeid in ("benchmarks/test_bandwidth.py::test_bandwidth[copy-cpu]",
                   "benchmarks/test_optimizers.py::test_optimizer[sgd]"):
        report = SimpleNamespace(when="call", passed=nodeid.endswith("cpu]"), nodeid=nodeid)
        conftest.pytest_runtest_logreport(report)  # the probe passed, the sgd case skipped
    config = SimpleNamespace(getoption=lambda name: "", _fastgd_json={"benchmarks": []},
                             _fastgd_past_deadline=True)
    session = SimpleNamespace(config=config, exitstatus=pytest.ExitCode.OK)
    conftest.pytest_sessionfinish(session, 0)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert config._fastgd_said == "fastgd: no report: no benchmark ran before the deadline"


def test_a_size_range_with_step_zero_is_a_command_line_error():
    """``--sizes 2^10..2^12:0`` is the user's mistake: a CLIError (``fastgd: error: ...``,
    exit status 2), not range()'s ValueError as a traceback."""
    with pytest.raises(cli.CLIError, match="bad size range"):
        cli.parse_sizes("2^10..2^12:0")
    with pytest.raises(cli.CLIError, match="bad size range"):
        cli.parse_sizes("2^12..2^10")


def test_bench_max_time_zero_is_refused_before_the_sweep(tmp_path):
    """``--max-time 0`` is no number of seconds > 0: refused with the others (-1, inf),
    before a pytest command line for the sweep is built."""
    args = cli.parser().parse_args(["bench", "--ops", "relu", "--max-time", "0"])
    with pytest.raises(cli.CLIError, match="--max-time must be a number of seconds > 0"):
        cli.bench_args(args, tmp_path)
    args = cli.parser().parse_args(["bench", "--ops", "relu", "--max-time", "0.5"])
    assert any("0.5" in a for a in cli.bench_args(args, tmp_path))


@pytest.mark.parametrize("text", ["0", "0,1024", "00"])
def test_a_size_of_zero_elements_is_refused(text):
    """Sizes run from 1 element: ``--sizes 0`` is refused, as 2^30 is, not benchmarked."""
    with pytest.raises(cli.CLIError, match="between 1 and 2"):
        cli.parse_sizes(text)
    assert cli.parse_sizes("1,2^0") == [1]


@pytest.mark.parametrize(("argv", "missing", "message"), [
    (["bench", "--quick"], "pytest_benchmark",
     "fastgd bench: error: fastgd bench needs pytest-benchmark: pip install 'fastgd[bench]'"),
    (["report", "DATA", "--out", "OUT"], "matplotlib",
     "fastgd report: error: a report (its plots) needs matplotlib: pip install 'fastgd[bench]'"),
    (["study", "vanishing", "--tiny", "--out", "OUT"], "matplotlib",
     "fastgd study: error: fastgd study needs matplotlib: pip install 'fastgd[examples]'"),
    (["study", "vanishing", "--tiny", "--out", "OUT"], "sklearn",
     "fastgd study: error: fastgd study (the digits data set) needs scikit-learn"),
])
def test_a_missing_optional_package_is_an_error_line_before_anything_runs(
        argv, missing, message, capsys, tmp_path, monkeypatch):
    """A wheel install without the extra (a packaging audit): `fastgd bench` raised
    ModuleNotFoundError from its first line, `fastgd report` after writing the JSON, and
    `fastgd study` after 30 s of training, each as a traceback."""
    monkeypatch.setitem(sys.modules, missing, None)  # imports of it raise ImportError
    out = tmp_path / "out"
    data = Path(__file__).parent / "data" / "bench_small.json"
    argv = [str(data) if a == "DATA" else str(out) if a == "OUT" else a for a in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
