#!/usr/bin/env bash
# Before a GPU session's transfer calls: a call carries at most 64 MiB with the working tree, and the committed
# study results are most of the tree (69 MB on 2026-11-29). The GPU needs only the results of the studies it runs
# (to resume them or adopt shared cells): this removes every other folder of studies/results from the working tree
# (tracked files missing from the working tree do not travel), so the tree is a few MB and each transfer part fits.
#   bash scripts/gpu_slim_tree.sh smollm2-placement-gen smollm2-rank-data   # keep only these results folders
#   bash scripts/gpu_slim_tree.sh restore                                   # after the calls (deleted files back)
# With no folder named it keeps the SmolLM2 folders except the finished, unshared ones (the seventh session's set).
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = restore ]; then  # only the files the slimming deleted: results copied in since stay as they are
  git ls-files -d -z -- studies/results | xargs -0 -r git checkout --
else
  KEEP="${*:-smollm2-budgets-lm smollm2-auto-fill smollm2-layer-bands smollm2-lr-edge smollm2-placement-gen smollm2-rank-data smollm2-predictors}"
  for k in $KEEP; do [ -d "studies/results/$k" ] || { echo "no results folder studies/results/$k" >&2; exit 2; }; done
  for d in studies/results/*/; do
    name=$(basename "$d"); case " $KEEP " in *" $name "*) ;; *) rm -rf "$d";; esac
  done
fi
git ls-files -z | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {printf "working tree: %.1f MB\n", s / 1e6}'
