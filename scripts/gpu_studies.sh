#!/usr/bin/env bash
# Run studies on a GPU host (one GPU or several) through the Ray engine, then their reports: a thin
# wrapper over `intrinsic study run STUDY --engine ray`, which schedules every cell as a Ray task,
# retries a cell whose worker dies, and resumes a stopped study (run this again).
#
#   bash scripts/gpu_studies.sh [RESULTS_DIR]      (default studies/results)
#
# Env: STUDIES (space-separated names, default "placement-ablation weight-types"), QUICK=1 (the studies'
# --quick variants, to check the pipeline), GPUS_PER_CELL (default 0.0625: 16 MiniLM cells share a GPU,
# since one MiniLM LoRA step is launch-bound), EXCLUSIVE=1 (one cell per GPU: unshared time and memory),
# ADDRESS (a running Ray cluster to join, e.g. auto; default: a Ray instance on this host for each study).
set -u
cd "$(dirname "$0")/.."
python3 -c "import intrinsic.cli.app" 2>/dev/null || source scripts/gpu_env.sh  # not installed: a bare GPU host
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
R=${1:-studies/results}
args=(--engine ray --gpus-per-cell "${GPUS_PER_CELL:-0.0625}")
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
[ "${EXCLUSIVE:-0}" = 1 ] && args+=(--exclusive-timing)
[ -n "${ADDRESS:-}" ] && args+=(--address "$ADDRESS")
rc=0
for s in ${STUDIES:-placement-ablation weight-types}; do
  intrinsic study run "$s" --out "$R/$s" "${args[@]}" || rc=$?
done
exit $rc
