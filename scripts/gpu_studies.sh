#!/usr/bin/env bash
# Run the full placement-ablation and weight-types studies on a GPU host (one or more GPUs) as
# many parallel shard processes, then write their reports. MiniLM is too small to fill an H200
# from one process (a LoRA step is launch-bound at ~50 ms), so ~16 processes share each GPU.
#
#   bash scripts/gpu_studies.sh [RESULTS_DIR]      (default studies/results)
#
# Env: STUDIES (space-separated names, default "placement-ablation weight-types"), QUICK=1 (the studies' --quick variants, to check the pipeline), PER_GPU (processes per GPU, default 16), SHARD_TIMEOUT (s, default 420): a shard still
# running then is stopped; its unfinished cells show as pending and a rerun resumes them.
set -u
cd "$(dirname "$0")/.."
python3 -c "import intrinsic.cli.app" 2>/dev/null || source scripts/gpu_env.sh  # not installed: a bare GPU host
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
R=${1:-studies/results}
NGPU=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
PER_GPU=${PER_GPU:-16}
T=${SHARD_TIMEOUT:-420}
Q=""; [ "${QUICK:-0}" = 1 ] && Q="--quick"
read -r -a STUDIES <<< "${STUDIES:-placement-ablation weight-types}"
read -r -a CELLS <<< "${CELLS:-}"  # cell counts, in the order of STUDIES; read from the specs when unset
[ ${#CELLS[@]} -gt 0 ] || for s in "${STUDIES[@]}"; do
  CELLS+=("$(python3 -c "from intrinsic.study.spec import load_spec, resolve_study as r; \
print(len(load_spec(r('$s'), quick='$Q' != '').cells()))")")
done
total=0; for c in "${CELLS[@]}"; do total=$((total + c)); done
N=$((NGPU * PER_GPU))
echo "GPUs: $NGPU, shard processes: $N, results: $R"

# 1. Probes first (one process per study and seed), so no two shards probe the same seed.
i=0
for s in "${STUDIES[@]}"; do
  for k in 0 1 2; do
    CUDA_VISIBLE_DEVICES=$((i % NGPU)) intrinsic study run "$s" --out "$R/$s" --probes-only --shard "$k/3" $Q \
      > "/tmp/probe-$s-$k.log" 2>&1 &
    i=$((i + 1))
  done
done
wait
tail -n 2 /tmp/probe-*.log

# 2. Cells: shards split between the studies in proportion to their cell counts.
g=0
for j in "${!STUDIES[@]}"; do
  s=${STUDIES[$j]}
  n=$(( (N * CELLS[$j] + total - 1) / total ))
  for k in $(seq 0 $((n - 1))); do
    CUDA_VISIBLE_DEVICES=$((g % NGPU)) timeout "$T" intrinsic study run "$s" --out "$R/$s" --shard "$k/$n" $Q \
      --no-report --json > "/tmp/shard-$s-$k.log" 2>&1 &
    g=$((g + 1))
  done
done
wait
echo "shards done at $(date +%T)"

# 3. Reports (rebuilt from the cell directories, so stopped shards lose nothing).
for s in "${STUDIES[@]}"; do
  intrinsic study report "$R/$s" > "/tmp/report-$s.log" 2>&1 || tail -n 20 "/tmp/report-$s.log"
  python3 -c "import json,sys; r=json.load(open('$R/$s/results.json'))['rows']; \
from collections import Counter; print('$s', Counter(x['status'] for x in r))" 2>/dev/null
done
grep -h -i "error\|Traceback" /tmp/shard-*.log | sort | uniq -c | head -20
