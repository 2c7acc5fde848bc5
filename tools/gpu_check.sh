#!/usr/bin/env bash
# The GPU checks of issues 2 and 4 in one call on a lent NVIDIA machine (the `device` tool's
# `run`, from the repository root; at most 9.5 minutes, so run it with timeout_s=600):
#
#   1. the CUDA tests for real (FASTGD_CUDA_TESTS=1: tests/cuda on the GPU, not the simulator;
#      up to 25 failures are collected, so one call shows what a real device breaks);
#   2. softmax, log_softmax and cross-entropy rows with a block of threads per row against a
#      thread per row (tools/perf_rows_cuda.py: the choice backends/cuda_rows made unmeasured);
#   3. `pytest benchmarks` with the GPU columns (cuda, torch-cuda, cupy, cupy-kernel; sizes up
#      to 2^28 on the GPU) and the report it writes, packed into one file under $OUT (the tool
#      brings back at most 8 files), with the pytest-benchmark JSON beside it.
#
# Unpack the report here with `tar xzf report.tgz -C reports/`, check it, commit it.
# BENCH_ARGS adds pytest options to step 2 (e.g. "--fastgd-ops relu,gelu,adam" to rerun a few).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/fastgd-gpu}
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
  | tee "$out/machine.txt"
python3 -m fastgd.cli info 2>&1 | tee -a "$out/machine.txt"

echo "== CUDA tests on the GPU"
FASTGD_CUDA_TESTS=1 timeout 180 python3 -m pytest tests/cuda -q --maxfail=25 -p no:cacheprovider \
  > "$out/cuda-tests.log" 2>&1
echo "rc=$?"; tail -5 "$out/cuda-tests.log"

echo "== row kernels: a block per row against a thread per row (tools/perf_rows_cuda.py)"
timeout 50 python3 tools/perf_rows_cuda.py --n 24 > "$out/rows.txt" 2>&1
echo "rc=$?"; cat "$out/rows.txt"

echo "== pytest benchmarks (the report goes to a new folder under reports/)"
start=$(mktemp)
# shellcheck disable=SC2086
timeout 340 python3 -m pytest benchmarks -q -p no:cacheprovider ${BENCH_ARGS:-} \
  > "$out/bench.log" 2>&1
echo "rc=$?"; tail -25 "$out/bench.log"
folder=$(find reports -mindepth 1 -maxdepth 1 -type d -newer "$start" | head -1)
if [ -n "$folder" ]; then
  tar czf "$out/report.tgz" -C reports "$(basename "$folder")"
  cp "$folder/index.md" "$out/index.md"
fi
