#!/usr/bin/env bash
# One prepared GPU check (docs/kernels.md): the CUDA kernel tests (tests/gpu) and the kernel
# benchmark (bench/bench_kernels_gpu.py) in a single call of about 8 minutes at most, writing
# logs and figures into $OUT when it is set (else into a temporary folder it prints).
#
# The GPU machine's Python has torch and triton but not qruntime's pure-Python dependencies
# (pydantic, jsonschema, PyYAML, ...): `make gpu-wheels` downloads their wheels for its Python
# into .gpu-wheels/ (git-ignored), which the call carries; they are installed into a temporary
# target here and put first on PYTHONPATH, with packages/*/src (nothing is pip-installed).
#
#   bash bench/gpu_check.sh             on the GPU machine (carry .gpu-wheels)
#   bash bench/gpu_check.sh --dry-run   here, on CPU: the same steps with TRITON_INTERPRET=1,
#                                       CPU tensors and tiny sizes (`make gpu-check-dry`)
#
# Exit status: non-zero if a GPU test failed or the benchmark found a kernel output that differs
# from the reference. Time limits per step (tests 240 s, benchmark 120 s of new rows + 90 s)
# keep the whole call under about 8 minutes; the benchmark JSON is rewritten after every row.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
PY="${PYTHON:-python3}"
WHEELS="${GPU_WHEELS:-.gpu-wheels}"
RESULTS="${OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
TEST_TIMEOUT="${GPU_TEST_TIMEOUT:-240}"
BENCH_BUDGET="${GPU_BENCH_BUDGET:-120}"
START=$(date +%s)
mkdir -p "$RESULTS"
echo "gpu_check: results in $RESULTS (dry run: $DRY)"

# 1. Dependencies: wheels into a temporary target, first on the path.
SITE=$(mktemp -d /tmp/qruntime-site.XXXXXX)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "gpu_check: installing $WHEELS failed"; exit 2; }
else
  echo "gpu_check: no wheels in $WHEELS (make gpu-wheels); using the interpreter's packages"
fi
export PYTHONPATH="$SITE:$PWD/packages/qconfig/src:$PWD/packages/qruntime/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ $DRY == 1 ]]; then
  export TRITON_INTERPRET=1 QRUNTIME_GPU_DRY_RUN=1
fi

# 2. What ran where.
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  "$PY" - <<'EOF'
import platform, torch, triton, pydantic
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "triton", triton.__version__, "pydantic", pydantic.__version__, "from", pydantic.__file__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "sms", p.multi_processor_count, "cc", f"{p.major}.{p.minor}")
import qruntime.kernels as k
print("kernels", sorted(k.kernels()))
EOF
} 2>&1 | tee "$RESULTS/env.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "gpu_check: environment check failed"; exit 2; }

# 3. GPU tests (pytest.ini ignores tests/gpu for `make test`; addopts is overridden here).
MARK=()
if [[ $DRY == 1 ]]; then MARK=(-m "not large"); fi
# The LSQ check compares with Model Optimizer's own Triton kernels; the GPU image has no Model
# Optimizer. Say so in the results instead of letting one import error stop every test.
if ! "$PY" -c "import modelopt.torch.quantization" >/dev/null 2>&1; then
  MARK+=(--ignore=tests/gpu/test_lsq_gpu.py)
  echo "gpu_check: NOT RUN tests/gpu/test_lsq_gpu.py: Model Optimizer is not installed here" \
    | tee "$RESULTS/not_run.txt"
fi
timeout "$TEST_TIMEOUT" "$PY" -m pytest -o addopts="-p no:cacheprovider" -q -n "${GPU_TEST_WORKERS:-8}" \
  "${MARK[@]}" --junitxml="$RESULTS/gpu_tests.xml" tests/gpu 2>&1 | tee "$RESULTS/gpu_tests.log"
TESTS_RC=${PIPESTATUS[0]}
echo "gpu_check: tests exit $TESTS_RC after $(( $(date +%s) - START )) s"

# 4. Benchmark (rows not started within the budget are listed as skipped in the JSON).
BENCH_ARGS=(--budget-s "$BENCH_BUDGET" --json "$RESULTS/bench_kernels_gpu.json")
if [[ $DRY == 1 ]]; then BENCH_ARGS+=(--dry-run --dtypes bf16); fi
timeout $(( BENCH_BUDGET + 90 )) "$PY" bench/bench_kernels_gpu.py "${BENCH_ARGS[@]}" 2>&1 \
  | tee "$RESULTS/bench.log"
BENCH_RC=${PIPESTATUS[0]}
echo "gpu_check: bench exit $BENCH_RC, total $(( $(date +%s) - START )) s"

rm -rf "$SITE"
if [[ $TESTS_RC != 0 || $BENCH_RC != 0 ]]; then exit 1; fi
echo "gpu_check: OK"
