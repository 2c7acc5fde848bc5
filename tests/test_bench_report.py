"""The report writer, from small pytest-benchmark JSON fixtures (tests/data/bench_*.json).

In bench_small.json (real pytest-benchmark format, numbers set by hand): relu forward on
numpy/numba/cuda at 2^10 and 2^20, sigmoid backward on numpy/numba at 2^20, a CPU copy probe;
bandwidth CPU copy 100 / in-place 80 GB/s, GPU copy 2000, host↔device 20 and 25 GB/s.
bench_other.json is the same with numba relu forward at 2^20 twice as fast.
"""

import json
from pathlib import Path

import pytest
from matplotlib import image

from fastgd.bench import report

DATA = Path(__file__).parent / "data"
SMALL, OTHER = DATA / "bench_small.json", DATA / "bench_other.json"


def png_size(path):
    img = image.imread(path)
    return img.shape[1], img.shape[0]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.write([SMALL], out)


def test_summary_table_has_the_right_numbers(single):
    text = single.read_text()
    assert "| relu | forward | float32 | 2^10 | numba | 2 µs | 4.1 | 4 | 5.00 |" in text
    assert "| relu | forward | float32 | 2^20 | cuda | 10 µs | 839 | 42 | 100.00 |" in text
    assert "| sigmoid | backward | float32 | 2^20 | numba | 200 µs | 62.9 | 63 | 20.00 |" in text
    assert "| CPU | 2^25 | 100.0 | 80.0 | 100.0 | – | – |" in text
    assert "| GPU | 2^26 | 2000.0 | 1800.0 | 2000.0 | 20.0 | 25.0 |" in text
    assert "| cpu | Fixture CPU 9000 |" in text and "| peer torch | 2.0.0 |" in text


def test_crossover_with_and_without_transfers(single):
    # GPU 10 µs < CPU 100 µs at 2^20; plus 8.4 MB over 20 GB/s (419 µs) it loses
    assert "| relu | forward | float32 | 2^20 | > 2^20 |" in single.read_text()


def test_all_results_table(single):
    text = single.read_text()
    row = "| relu | forward | float32 | 2^20 | numba | 100 µs | 110 µs | 83.9 | 84 | 0.75 |"
    assert row in text


def test_expected_pngs(single):
    folder = single.parent
    names = {p.name for p in folder.glob("*.png")}
    assert names == {"throughput-relu.png", "throughput-sigmoid.png", "speedup.png",
                     "latency.png", "compile.png"}
    for name in names:
        assert f"![{name}]({name})" in single.read_text()
        width, height = png_size(folder / name)
        assert width >= 600 and height >= 250, (name, width, height)


def test_comparison_ratios_and_overlaid_plots(tmp_path):
    index = report.write([SMALL, OTHER], tmp_path)
    text = index.read_text()
    assert "| relu | forward | float32 | 2^20 | numba | 100 µs | 2.00 |" in text
    assert "| relu | forward | float32 | 2^20 | numpy | 1 ms | 1.00 |" in text
    assert "| run 2 vs run 1 | numba | 3 | 1.26 |" in text  # (2·1·1)^(1/3): no probe row
    assert "fixture-box" in text and "other-box" in text
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"compare-throughput-relu.png", "compare-throughput-sigmoid.png"}
    assert png_size(tmp_path / "compare-throughput-relu.png")[0] >= 600


def test_comparison_keeps_ratios_far_from_1(tmp_path):
    """A ratio below 0.005 printed as 0.00 and its logarithm stopped the report (math domain
    error); the geometric mean is taken over the unrounded ratios."""
    other = json.loads(OTHER.read_text())
    for b in other["benchmarks"]:
        b["stats"] = {k: v * 300 if isinstance(v, float) else v for k, v in b["stats"].items()}
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(other))
    text = report.write([SMALL, slow], tmp_path / "r").read_text()
    assert "| relu | forward | float32 | 2^20 | numba | 100 µs | 0.0067 |" in text  # 2/300
    assert "| run 2 vs run 1 | numba | 3 | 0.0042 |" in text  # (2·1·1)^(1/3)/300


def test_default_folder_is_new(tmp_path):
    run = report.load(SMALL)
    first = report.default_dir(run, tmp_path)
    assert first.name == "fixture-box-2025-01-02"
    first.mkdir()
    assert report.default_dir(run, tmp_path).name == "fixture-box-2025-01-02-2"


def test_any_op_and_direction(tmp_path):
    """An optimizer suite's results (direction "step", plain extra_info) report too."""
    data = json.loads(SMALL.read_text())
    for b in data["benchmarks"]:
        if b["extra_info"].get("op") == "sigmoid":
            b["extra_info"].update(op="adam", direction="step")
            b["params"] = {"backend": b["params"]["backend"], "n": b["params"]["n"]}
    index = report.write([data], tmp_path)
    assert "| adam | step | float32 | 2^20 | numba | 200 µs | 62.9 | 63 | 20.00 |" in (
        index.read_text())
    assert (tmp_path / "throughput-adam.png").is_file()


@pytest.mark.parametrize("content, message", [
    ("not json {", "is not JSON"),
    (b"\x89PNG\r\n\x1a\n", "is not JSON .not text"),
    ('{"benchmarks": [{"name": "x", "stats": {"min": null}, "params": '
     '{"op": "relu", "backend": "numba", "n": 8}}]}', "'x' has a malformed field"),
    ('{"benchmarks": [{"name": "y", "stats": {"min": 1.0}, "params": '
     '{"op": "relu", "backend": "numba", "n": "1k"}}]}', "'y' has a malformed field"),
    ('{"benchmarks": [{"name": "z", "stats": {"min": 1.0}, "params": [1]}]}',
     "'z' has a malformed field: params and extra_info must be objects"),
    ('{"rows": []}', "is not pytest-benchmark output"),
    ('[1, 2]', "is not pytest-benchmark output"),
    ('{"benchmarks": [{"name": "x"}]}', "is not pytest-benchmark output"),
    ('{"benchmarks": [{"name": "x", "stats": {"min": 1}, "params": {"a": 1}}]}',
     "has no fastgd results"),
])
def test_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(report.ReportError, match=message):
        report.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(report.ReportError, match="cannot read"):
        report.load(tmp_path / "nope.json")


def test_machine_info_of_another_shape_is_ignored(tmp_path):
    data = json.loads(SMALL.read_text())
    data["machine_info"] = []
    assert "## Best implementation" in report.write([data], tmp_path).read_text()


def test_comparison_of_runs_with_nothing_in_common_says_so(tmp_path):
    data = json.loads(SMALL.read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["op"] = "gelu"
    text = report.write([SMALL, data], tmp_path).read_text()
    assert "**No result in common:**" in text
    assert "No result in common" not in report.write([SMALL, OTHER], tmp_path / "b").read_text()


def test_comparison_of_one_file_twice_numbers_the_runs(tmp_path):
    text = report.write([SMALL, SMALL], tmp_path).read_text()
    assert "| | run 1: fixture-box" in text.replace("|  |", "| |") and "run 2: fixture-box" in text
    assert report.default_dir(report.load(SMALL), tmp_path, compare=True).name == (
        "compare-fixture-box-2025-01-02")


def test_an_out_that_is_a_file_is_refused_before_writing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(report.ReportError, match="exists and is not a folder"):
            report.write([SMALL], out)
    assert blocker.read_text() == "x"


def test_summary_sets_ours_against_the_peer_and_names_the_commit(tmp_path):
    """'Which should I use': the winner alone hid the margin; each of our backends is now set
    against its peer on the same device (time ratio, > 1: ours faster), and the page names
    the commit it measured."""
    import copy

    data = json.loads(SMALL.read_text())
    numba = next(b for b in data["benchmarks"] if b["params"]["backend"] == "numba"
                 and b["params"]["op"] == "relu" and b["params"]["n"] == 1 << 20)
    torch = copy.deepcopy(numba)
    torch["params"]["backend"] = torch["extra_info"]["backend"] = "torch"
    torch["stats"] = {k: v * 1.5 if isinstance(v, float) else v
                      for k, v in torch["stats"].items()}
    data["benchmarks"].append(torch)
    text = report.write([data], tmp_path).read_text()
    assert "| × numpy backend | numba × torch |" in text
    assert "| relu | forward | float32 | 2^20 | cuda | 10 µs | 839 | 42 | 100.00 | 1.50 |" in text
    assert "| relu | forward | float32 | 2^10 | numba | 2 µs | 4.1 | 4 | 5.00 | – |" in text
    assert "| commit | f912578d5c |" in text


def test_a_run_outside_git_names_no_commit(tmp_path):
    data = json.loads(SMALL.read_text())
    data["commit_info"] = {"id": "unversioned", "dirty": False}  # pytest-benchmark's word
    text = report.write([data], tmp_path).read_text()
    assert "unversi" not in text and "| commit | – |" in text


def test_a_report_written_over_another_removes_the_older_plots(tmp_path):
    """Rewriting a folder left the plots the new report does not make (another op's)
    beside it, linked from nowhere; files of the user's own stay, also where an index.md
    of theirs links to them."""
    data = json.loads(SMALL.read_text())
    report.write([data], tmp_path)
    assert "throughput-sigmoid.png" in {p.name for p in tmp_path.glob("*.png")}
    (tmp_path / "mine.png").write_bytes(b"not the report's")
    data["benchmarks"] = [b for b in data["benchmarks"] if b["params"]["op"] != "sigmoid"]
    report.write([data], tmp_path)
    new = {p.name for p in tmp_path.glob("*.png")}
    assert "throughput-sigmoid.png" not in new and "throughput-relu.png" in new
    assert "mine.png" in new  # not one of the report's: kept
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# My project\n\n![a](latency.png) ![b](arch.png)\n")
    for name in ("latency.png", "arch.png", "throughput-sigmoid.png"):
        (docs / name).write_bytes(b"the user's")
    # an index.md of the user's: refused, where it and latency.png were overwritten (audit)
    with pytest.raises(report.ReportError, match="holds an index.md that is not a fastgd"):
        report.write([data], docs)
    assert (docs / "index.md").read_text().startswith("# My project")
    assert {p.read_bytes() for p in docs.glob("*.png")} == {b"the user's"}


@pytest.mark.parametrize("where, bad", [
    ("compile_s", "x"), ("compile_s", [1]),
    ("bandwidth", []), ("bandwidth", {"cpu": {"copy": "x"}}), ("bandwidth", {"cpu": 3}),
    ("peers", ["torch"]), ("cores", "2"), ("load_at_start", [3]),  # an audit: tracebacks
])
def test_malformed_fields_are_named_before_anything_is_written(tmp_path, where, bad):
    """They raised TypeError, AttributeError or a format error after the JSON copy and the
    plots were written, leaving a folder without index.md."""
    data = json.loads(SMALL.read_text())
    if where == "compile_s":
        data["benchmarks"][0]["extra_info"]["compile_s"] = bad
    else:
        data["machine_info"].setdefault("fastgd", {})[where] = bad
    with pytest.raises(report.ReportError, match="has a malformed field"):
        report.write([data], tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_result_without_a_time_is_named_as_malformed(tmp_path):
    """A best time of 0 divided every figure (ZeroDivisionError); left out, it would make a
    slower implementation the best without a word."""
    for bad in (0.0, "0", None):
        data = json.loads(SMALL.read_text())
        data["benchmarks"][0]["stats"]["min"] = bad
        with pytest.raises(report.ReportError, match="has a malformed field"):
            report.write([data], tmp_path)


def test_an_infinite_time_or_negative_bytes_are_malformed(tmp_path):
    for field, bad in (("min", "inf"), ("min", float("inf")), ("bytes", -8)):
        data = json.loads(SMALL.read_text())
        if field == "min":
            data["benchmarks"][0]["stats"]["min"] = bad
        else:
            data["benchmarks"][0]["extra_info"]["bytes"] = bad
        with pytest.raises(report.ReportError, match="has a malformed field"):
            report.write([data], tmp_path)


@pytest.mark.parametrize("field", ["bandwidth", "peers", "cores"])
def test_null_machine_facts_are_absent_ones(tmp_path, field):
    """An audit: a null bandwidth or peers passed the checks, then a traceback."""
    data = json.loads(SMALL.read_text())
    data["machine_info"]["fastgd"][field] = None
    text = report.write([data], tmp_path).read_text()
    assert "| relu | forward | float32 | 2^10 | numba | 2 µs |" in text


def test_two_results_of_one_case_are_refused():
    """An audit: a suite parametrized over something else besides (a thread count) gave
    two results of one op, size and backend; every table showed the last one read as the
    best."""
    data = json.loads(SMALL.read_text())
    twin = json.loads(json.dumps(data["benchmarks"][0]))
    twin["name"] = "twin"
    twin["stats"]["min"] *= 2
    data["benchmarks"].append(twin)
    with pytest.raises(report.ReportError, match="two results of relu forward float32 "
                                                 "n=1024 on numpy: .* and 'twin'"):
        report.parse(data)


def test_a_busy_machine_is_named_at_the_top(tmp_path, single):
    """A quick sweep beside another program reported a 7 µs kernel at 5 ms (both of its
    rounds stalled) and named the wrong best: the report says when it was taken on a shared
    machine, from the load when the sweep started or from unsteady rounds."""
    assert "may have been busy" not in single.read_text()  # the fixture: steady rounds
    data = json.loads(SMALL.read_text())
    data["machine_info"]["fastgd"].update(load_at_start=1.7, cores=2)
    text = report.write([data], tmp_path / "load").read_text()
    assert "may have been busy" in text and "sweep was 1.7 on 2 cores" in text
    assert text.index("busy") < text.index("## Machine")
    assert "| load_at_start | 1.7 |" in text
    data = json.loads(SMALL.read_text())
    benches = data["benchmarks"]
    for k in range(9):  # unsteady rows: a median 3× the best
        b = json.loads(json.dumps(benches[0]))
        b["extra_info"]["n"] = 1 << (30 + k)  # distinct results
        b["stats"]["median"] = 3 * b["stats"]["min"]
        benches.append(b)
    text = report.write([data], tmp_path / "unsteady").read_text()
    assert f"9 of {len(benches)} results have a median more than 2×" in text
    assert text.count(" † |") == 9
    compared = report.write([SMALL, data], tmp_path / "compare").read_text()
    assert "Run 2: **Warning" in compared and "Run 1: **Warning" not in compared


def _run(results, bandwidth=None):
    """A parsed run of forward float32 results ``(op, backend, device, n, seconds, extra)``,
    8 bytes an element."""
    benches = [{"name": f"{op}-{backend}-{n}", "stats": {"min": t, "median": t},
                "extra_info": {"op": op, "direction": "forward", "backend": backend,
                               "device": device, "dtype": "float32", "n": n, "bytes": 8 * n,
                               **extra}}
               for op, backend, device, n, t, extra in results]
    info = {"fastgd": {"bandwidth": bandwidth}} if bandwidth else {}
    return report.parse({"benchmarks": benches, "machine_info": info})


def test_crossover_is_the_size_from_which_the_gpu_stays_faster():
    run = _run([("relu", "numba", "cpu", 2**10, 1e-6, {}),
                ("relu", "cuda", "gpu", 2**10, 5e-7, {}),
                ("relu", "numba", "cpu", 2**15, 1e-6, {}),
                ("relu", "cuda", "gpu", 2**15, 2e-6, {}),  # it loses here again
                ("relu", "numba", "cpu", 2**20, 1e-4, {}),
                ("relu", "cuda", "gpu", 2**20, 1e-5, {})])
    assert report.crossover(run, False) == [["relu", "forward", "float32", "2^20"]]


def test_latencies_leave_out_the_many_tensor_steps():
    """An audit: at sizes below 2^20 a step over 1000 tensors showed as a latency."""
    run = _run([("relu", "numba", "cpu", 2**10, 2e-6, {}),
                ("adam [buffer of 1000]", "numba", "cpu", 2**16, 1e-4, {})])
    assert report.latencies(run) == {"relu forward (n=2^10)": {"numba": pytest.approx(2.0)}}


def test_crossover_with_transfers_unknown_without_a_host_device_speed():
    """An audit: without h2d/d2h figures the column "with host↔device copies" showed the
    crossover without them."""
    results = [("relu", "numba", "cpu", 2**20, 1e-4, {}), ("relu", "cuda", "gpu", 2**20, 1e-5, {})]
    for bandwidth in (None, {"gpu": {"copy": 1000.0}}):
        run = _run(results, bandwidth=bandwidth)
        assert report.crossover(run, False) == [["relu", "forward", "float32", "2^20"]]
        assert report.crossover(run, True) == [["relu", "forward", "float32", "–"]]


def test_crossover_with_transfers_counts_bytes_over_gb_per_s():
    # 8 MiB over 1000 GB/s is 8.4 µs: the GPU's 10 + 8.4 µs still beats the CPU's 100
    run = _run([("relu", "numba", "cpu", 2**20, 1e-4, {}),
                ("relu", "cuda", "gpu", 2**20, 1e-5, {})],
               bandwidth={"gpu": {"h2d": 1000.0, "d2h": 1000.0}})
    assert report.crossover(run, True) == [["relu", "forward", "float32", "2^20"]]


def test_the_plots_values():
    """speedup.png, latency.png and compile.png: their numbers, not only their sizes."""
    run = _run([("relu", "numpy", "cpu", 2**10, 1e-5, {"compile_s": 0.5}),
                ("relu", "numba", "cpu", 2**10, 2e-6, {"compile_s": 1.0}),
                ("relu", "numpy", "cpu", 2**20, 1e-3, {}),
                ("relu", "numba", "cpu", 2**20, 1e-4, {"compile_s": 2.0})])
    assert report.speedups(run) == {"relu forward (n=2^20)": {"numba": pytest.approx(10.0)}}
    assert report.latencies(run) == {"relu forward (n=2^10)": {
        "numpy": pytest.approx(10.0), "numba": pytest.approx(2.0)}}
    assert report.compile_times(run) == {"relu forward": {"numpy": 0.5, "numba": 3.0}}


def test_times_just_under_a_unit_show_in_the_unit_above():
    """0.9996 s rounded to 3 digits in ms printed as 1e+03 ms (found by an audit)."""
    assert report.fmt_time(0.9996) == "1 s"
    assert report.fmt_time(9.9996e-4) == "1 ms"
    assert report.fmt_time(9.9996e-7) == "1 µs"
    assert report.fmt_time(0.0123) == "12.3 ms"
    assert report.fmt_time(4.2e-9) == "4.2 ns"


def test_at_a_glance_sets_each_backend_at_its_largest_size_against_its_peers(tmp_path):
    """One row per op and direction, at the largest size that backend ran (the GPU's may be
    past the CPU's), with the peers' time over ours there and a tally of the rows won."""
    run = _run([("relu", "numba", "cpu", 2**10, 1e-6, {}),
                ("relu", "torch", "cpu", 2**10, 5e-7, {}),
                ("relu", "numba", "cpu", 2**20, 1e-4, {}),
                ("relu", "torch", "cpu", 2**20, 1.5e-4, {}),
                ("relu", "numpy", "cpu", 2**20, 1e-3, {}),
                ("gelu", "numba", "cpu", 2**20, 4e-4, {}),
                ("gelu", "torch", "cpu", 2**20, 2e-4, {}),
                ("relu", "cuda", "gpu", 2**20, 1e-5, {}),
                ("relu", "cuda", "gpu", 2**26, 4e-4, {}),
                ("relu", "torch-cuda", "gpu", 2**26, 6e-4, {})],
               bandwidth={"cpu": {"copy": 100.0}, "gpu": {"copy": 2000.0}})
    header, rows, tallies = report.glance(run, "numba")
    assert header == ["op", "direction", "dtype", "n", "GB/s", "roof %", "× torch",
                      "× numpy backend"]
    # 8 MB in 100 µs = 83.9 GB/s, 84 % of 100; torch 1.5× our time; NumPy 10×
    assert rows == [["gelu", "forward", "float32", "2^20", "21", "21", "0.50", "–"],
                    ["relu", "forward", "float32", "2^20", "83.9", "84", "1.50", "10.00"]]
    assert tallies == ["numba is faster than torch in 1 of 2 rows"]
    header, rows, tallies = report.glance(run, "cuda")
    assert rows == [["relu", "forward", "float32", "2^26", "1342", "67", "1.50", "–"]]
    assert tallies == ["cuda is faster than torch-cuda in 1 of 1 rows"]
    text = report.write([{"benchmarks": [], **run.data}], tmp_path).read_text()
    assert text.index("## At a glance") < text.index("## Best implementation")
    assert "**numba** (numba is faster than torch in 1 of 2 rows):" in text
    assert "| relu | forward | float32 | 2^26 | 1342 | 67 | 1.50 | – |" in text
