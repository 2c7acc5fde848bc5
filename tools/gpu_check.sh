#!/usr/bin/env bash
# The GPU checks of issues 2 and 4 on a lent NVIDIA machine, run through the `device` tool's
# `run` from the repository root, in stages so that each call stays short and a failed one
# can be rerun inside a session's 15 minutes of device time (the machine's start included):
#
#   tools/gpu_check.sh tests rows   # call 1, 4 min 40 s at most: timeout_s=290
#   tools/gpu_check.sh bench        # call 2, at once (the machine stays warm 30 s): timeout_s=365
#
#   tests  the CUDA tests for real (FASTGD_CUDA_TESTS=1: tests/cuda on the GPU, not the
#          simulator; a process per file, up to 25 failures each, so that one call shows
#          what a device breaks; their logs end to end in cuda-tests.log)
#   rows   softmax, log_softmax and cross-entropy rows with a block of threads per row against
#          a thread per row (tools/perf_rows_cuda.py: the choice backends/cuda_rows made), and
#          whether launches on CuPy arrays make the host wait for the GPU, with Numba's
#          synchronization on their announced stream and without (tools/cuda_launch_sync.py)
#   bench  `pytest benchmarks` with the GPU columns (cuda, torch-cuda, cupy, cupy-kernel; sizes
#          up to 2^28 on the GPU) and numba beside them (the CPU side of the crossover), the
#          optimizers first, and the report it writes, packed into report.tgz under $OUT
#          (the tool brings back at most 8 files), with index.md beside it. The sweep stops
#          at --fastgd-deadline (285 s: a 2^28 case begun just before has 40 s to end), so
#          what ran is saved and reported even when the whole of it does not fit; `timeout`
#          (SIGINT, so pytest still saves) backs it up
#
# With no stage it runs all three (about 9.5 minutes: only for a session with the time).
# Unpack the report here with `tar xzf report.tgz -C reports/`, check it, commit it.
# BENCH_ARGS replaces the bench stage's pytest options (default: the backends above), e.g.
# "--fastgd-ops=relu,gelu,adam" for every backend and peer.
set -uo pipefail
cd "$(dirname "$0")/.."
# numba-cuda warns at every launch of under 128 blocks (every small n): noise in the logs
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
out=${OUT:-/tmp/fastgd-gpu}
failed=0  # the exit status: 1 if a stage's command failed
mkdir -p "$out"
stages=${*:-tests rows bench}
for stage in $stages; do
  case $stage in tests|rows|bench) ;; *) echo "unknown stage $stage (tests, rows, bench)"; exit 2;; esac
done

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
  | tee "$out/machine.txt"
# no bandwidth probe here (the bench stage measures it into its JSON): seconds of the budget
python3 -m fastgd.cli info --no-probe 2>&1 | tee -a "$out/machine.txt"
python3 -m pip list 2>/dev/null | grep -iE '^(numba|numba-cuda|cupy|torch|cuda-python|numpy) ' \
  | tee -a "$out/machine.txt"

for stage in $stages; do
  case $stage in
    tests)
      # compiling the kernels (one process: ~60 s of NVVM for the PTX check's 235 alone) is
      # most of their time: the four files run at once, on four of the machine's cores;
      # SIGINT, so that pytest still prints what failed
      echo "== CUDA tests on the GPU, a process per file"
      logs=$(mktemp -d)
      pids=() names=()
      for f in tests/cuda/test_*.py; do
        FASTGD_CUDA_TESTS=1 timeout -s INT -k 15 170 python3 -m pytest "$f" -q --maxfail=25 \
          -p no:cacheprovider > "$logs/$(basename "$f" .py).log" 2>&1 &
        pids+=($!) names+=("$(basename "$f")")
      done
      for k in "${!pids[@]}"; do
        wait "${pids[$k]}"; rc=$?
        echo "rc=$rc ${names[$k]}"; [ "$rc" -eq 0 ] || failed=1
      done
      for log in "$logs"/*.log; do
        echo "== $(basename "$log")"; cat "$log"
      done > "$out/cuda-tests.log"
      for log in "$logs"/*.log; do echo "-- $(basename "$log")"; tail -3 "$log"; done;;
    rows)
      echo "== row kernels: a block per row against a thread per row (tools/perf_rows_cuda.py)"
      timeout 45 python3 tools/perf_rows_cuda.py --n 24 > "$out/rows.txt" 2>&1
      rc=$?; echo "rc=$rc"; [ "$rc" -eq 0 ] || failed=1; cat "$out/rows.txt"
      echo "== launches on CuPy arrays: Numba's stream synchronization on and off"
      for sync in 1 0; do
        NUMBA_CUDA_ARRAY_INTERFACE_SYNC=$sync timeout 22 python3 tools/cuda_launch_sync.py \
          >> "$out/launch-sync.txt" 2>&1
        rc=$?; echo "rc=$rc"; [ "$rc" -eq 0 ] || failed=1
      done
      cat "$out/launch-sync.txt";;
    bench)
      echo "== pytest benchmarks (the report goes to a new folder under reports/)"
      start=$(mktemp)
      # shellcheck disable=SC2086
      timeout -s INT -k 20 325 python3 -m pytest benchmarks/test_bandwidth.py \
        benchmarks/test_optimizers.py benchmarks/test_activations.py -q -p no:cacheprovider \
        --fastgd-deadline=285 \
        ${BENCH_ARGS:---fastgd-backends=numba,cuda,torch-cuda,cupy,cupy-kernel} \
        > "$out/bench.log" 2>&1
      rc=$?; echo "rc=$rc"; [ "$rc" -eq 0 ] || failed=1; tail -25 "$out/bench.log"
      folder=$(find reports -mindepth 1 -maxdepth 1 -type d -newer "$start" | head -1)
      if [ -n "$folder" ]; then
        tar czf "$out/report.tgz" -C reports "$(basename "$folder")"
        cp "$folder/index.md" "$out/index.md"
      fi;;
  esac
done
exit $failed
