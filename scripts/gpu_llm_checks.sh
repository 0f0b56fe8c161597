#!/usr/bin/env bash
# The single-process GPU checks of one session, each alone on the device (after scripts/gpu_llm_setup.sh):
# the LoRA-step benchmark (issue 11, arms round-robin with --repeats) on both shapes, and the full-size
# `intrinsic train smollm2 20newsgroups-gen --placement auto` (issue 12).   bash scripts/gpu_llm_checks.sh OUT
set -u
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh || exit 1
O=$1; mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
date +%T
timeout ${BENCH_S:-150} python3 benchmarks/bench_lora_step.py --shape smollm2 --device cuda --repeats 3 \
  --arms full,full-fast,peft,intrinsic,fast,fast-compile --profile fast,full-fast --results /tmp/bench > "$O/bench-smollm2.log" 2>&1; echo "smollm2 bench rc=$? $(date +%T)"
timeout ${BENCH_S:-150} python3 benchmarks/bench_lora_step.py --shape llama-1b --device cuda --repeats 3 \
  --arms trainer,peft,intrinsic,fast --results /tmp/bench > "$O/bench-1b.log" 2>&1; echo "1b bench rc=$? $(date +%T)"
timeout ${TRAIN_S:-200} intrinsic train smollm2 20newsgroups-gen --placement auto --budget-like all@8 --device cuda \
  --mixed-precision bf16 --max-length 256 --steps 300 --batch-size 16 --max-eval-examples 500 \
  --out /tmp/runs/20ng-auto --overwrite --json > "$O/20ng-auto.json" 2> "$O/20ng-auto.log"; echo "20ng auto rc=$? $(date +%T)"
tail -n 3 "$O"/*.log
