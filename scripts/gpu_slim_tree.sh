#!/usr/bin/env bash
# Before a GPU session's transfer calls: a call carries at most 64 MiB with the working tree, and the committed
# study results are most of the tree (52 MB on 2026-11-29). The GPU needs only the SmolLM2 studies' results (to adopt
# shared cells): this removes the MiniLM results from the working tree (tracked files missing from the working
# tree do not travel), so the tree is ~30 MB and each transfer part (.xfer/rN, ~27 MB) fits with it.
#   bash scripts/gpu_slim_tree.sh          # before the calls
#   bash scripts/gpu_slim_tree.sh restore  # after them (git checkout of the removed folders)
set -eu
cd "$(dirname "$0")/.."
DIRS="studies/results/placement-ablation studies/results/placement-all8 studies/results/rank-sweep
studies/results/layer-bands studies/results/weight-types studies/results/probe-minilm-rotten-tomatoes
studies/results/smollm2-weight-types studies/results/smollm2-placement-lm studies/results/smollm2-20ng-auto-run"
if [ "${1:-}" = restore ]; then git checkout -- $DIRS; else rm -rf $DIRS; fi
git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "working tree: %.1f MB\n", $1 / 1e6}'
