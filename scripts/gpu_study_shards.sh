#!/usr/bin/env bash
# One study on one GPU host without Ray: probes first (one process per seed, PROBES_PER_GPU at a time), then PER_GPU shard processes
# per GPU, twice (the first pass runs the lr-sweep cells and every test cell whose sweep is done; the second
# the test cells that waited), then the report. Times of cells that shared a GPU are marked "shared".
#   bash scripts/gpu_study_shards.sh STUDY RESULTS_DIR [PASS_TIMEOUT_S]
set -u
cd "$(dirname "$0")/.."
python3 -c "import intrinsic.cli.app" 2>/dev/null || source scripts/gpu_env.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
S=$1; R=$2; T=${3:-300}
NGPU=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
N=$((NGPU * ${PER_GPU:-16}))
F=$S; [ -f "studies/$S.toml" ] && F="studies/$S.toml"
SEEDS=$(python3 -c "from intrinsic.study.spec import load_spec, resolve_study as r; print(len(load_spec(r('$F')).seeds))")
PAR=$((NGPU * ${PROBES_PER_GPU:-2}))  # probes at a time: the sign-flip test is latency-bound, 5 side by side on one
for k in $(seq 0 $((SEEDS - 1))); do  # H200 did not finish in 500 s (2026-11-29)
  CUDA_VISIBLE_DEVICES=$((k % NGPU)) intrinsic study run "$S" --out "$R" --probes-only --shard "$k/$SEEDS" > "/tmp/probe-$k.log" 2>&1 &
  [ $(((k + 1) % PAR)) -eq 0 ] && wait
done
wait; echo "probes done $(date +%T)"; tail -n 1 /tmp/probe-*.log
for pass in 1 2; do
  for k in $(seq 0 $((N - 1))); do
    CUDA_VISIBLE_DEVICES=$((k % NGPU)) timeout "$T" intrinsic study run "$S" --out "$R" --shard "$k/$N" --no-report --json \
      > "/tmp/shard-$pass-$k.log" 2>&1 &
  done
  wait; echo "pass $pass done $(date +%T)"
  [ -n "${SAVE_TO:-}" ] && (cd "$(dirname "$R")" && find "$(basename "$R")" -name '*.json' | tar -czf "$SAVE_TO/pass$pass.tar.gz" -T -)
done
intrinsic study report "$R" > /tmp/report.log 2>&1 || tail -n 20 /tmp/report.log
python3 -c "import json; from collections import Counter; r=json.load(open('$R/results.json'))['rows']; print(Counter((x['phase'], x['status']) for x in r))"
grep -h -i "error\|Traceback" /tmp/shard-*.log | sort | uniq -c | head -10
