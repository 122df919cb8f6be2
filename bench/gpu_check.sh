#!/usr/bin/env bash
# The GPU checks and benchmarks, in one short run for a lent GPU machine (docs/benchmarks.md, "On a GPU").
#
#   bench/gpu_check.sh OUTDIR kernels   numba.cuda: GPU kernel tests, bench preprocess (no onnxruntime-gpu needed)
#   bench/gpu_check.sh OUTDIR ort       onnxruntime-gpu: doctor, GPU engine tests, bench infer
#   bench/gpu_check.sh OUTDIR pipeline  bench pipeline single-stream (the infer stage on the GPU)
#
# Needs python3 (or $PYTHON) with edgert's dependencies importable and an NVIDIA driver. Every step has
# its own time limit and log (OUTDIR/STEP.log); one failing step does not stop the others.
set -u
out=${1:?usage: bench/gpu_check.sh OUTDIR kernels|ort ...}; shift
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
mkdir -p "$out"
step() {
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - t0)) s"
    tail -n 6 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >"$out/gpu.txt" 2>&1
for phase in "$@"; do
    case $phase in
    kernels)
        step tests_kernels_gpu 180 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_kernels_cuda.py \
            -k "not sessions_device_input"
        step bench_preprocess 150 env EDGERT_BENCH_N=500 EDGERT_BENCH_NO_COLDSTART=1 \
            "$py" -m edgert.runtime.cli bench preprocess --quick --out "$out/preprocess" ;;
    ort)
        step doctor 60 "$py" -m edgert.runtime.cli doctor
        step tests_engine_gpu 150 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_engine.py \
            tests/test_kernels_cuda.py::test_cuda_kernel_writes_the_sessions_device_input_on_gpu
        step bench_infer 180 env EDGERT_BENCH_N=5000 "$py" -m edgert.runtime.cli bench infer --out "$out/infer" ;;
    pipeline)
        step bench_pipeline 150 "$py" -m edgert.runtime.cli bench pipeline --scenario single-stream --quick --min-count 1024 --min-duration 30 \
            --out "$out/pipeline" ;;
    *) echo "unknown phase $phase (kernels, ort, pipeline)"; exit 2 ;;
    esac
done
