#!/usr/bin/env bash
# r90 for a study whose full fine-tuning models were not kept (they live only on the GPU host that trained them):
# rerun its finished full fine-tuning test cells, one process per cell on this host's visible GPU(s), each then
# measuring the study's [truncate] in-process (`intrinsic study run --only ID`). The rerun replaces each cell's
# run.json (same seed and chosen lr; GPU kernels may move the last digits; its times are marked shared, as
# `--shard 0/1` says: other work may share the GPU). Source `scripts/gpu_env.sh` first.
#   bash scripts/gpu_truncate_rerun.sh STUDY.toml RESULTS_DIR
set -u
S=$1; R=$2
IDS=$(python3 -c "
from intrinsic.study.spec import load_spec
print(' '.join(c.id for c in load_spec('$S').cells() if c.strategy == 'full' and c.phase != 'lr-sweep'))")
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then GPUS=(${CUDA_VISIBLE_DEVICES//,/ })  # the GPUs given, else all
else GPUS=($(seq 0 $(($(python3 -c "import torch; print(max(1, torch.cuda.device_count()))") - 1)))); fi
k=0
for id in $IDS; do
  [ -d "$R/cells/$id/model" ] || rm -rf "${R:?}/cells/$id"
  CUDA_VISIBLE_DEVICES=${GPUS[$((k % ${#GPUS[@]}))]} intrinsic study run "$S" --out "$R" --only "$id" --shard 0/1 --no-report > "/tmp/truncate-$id.log" 2>&1 &
  k=$((k + 1))
done
wait
for id in $IDS; do echo "$id: $(tail -n 1 /tmp/truncate-$id.log 2>/dev/null)"; done
