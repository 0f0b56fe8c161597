#!/usr/bin/env bash
# The MiniLM / Rotten Tomatoes probes behind the README's probe section, on one GPU:
# seeds 0-2 with the defaults (head fitted, 8 folds, sign_flip) and with --no-fit-head, and seed 0 at
# 16, 64 and 128 batches (how the tested rank grows with N). Writes OUT/probes.tar.gz (every probe
# folder) and OUT/summary.json (per probe: label contrast, tested ranks, timings).
#   bash scripts/gpu_probes.sh OUT
set -eu
cd "$(dirname "$0")/.."
python3 -c "import intrinsic.cli.app" 2>/dev/null || source scripts/gpu_env.sh
OUT=${1:?usage: gpu_probes.sh OUT}
P=$OUT/probes
mkdir -p "$P"
run() { intrinsic probe minilm rotten-tomatoes --device cuda --overwrite --json "$@" > /dev/null; }
for s in 0 1 2; do
  run --seed $s --out "$P/fit-s$s" $([ $s = 0 ] || echo --no-update)
  run --seed $s --out "$P/nofit-s$s" --no-fit-head --no-update
done
for n in 16 64 128; do run --seed 0 --batches $n --out "$P/fit-n$n" --no-update; done
python3 - "$P" "$OUT/summary.json" <<'PY'
import json, sys
from pathlib import Path
from intrinsic.probes import ProbeReport
out = {}
for d in sorted(Path(sys.argv[1]).iterdir()):
    r = ProbeReport.load(d)
    top = r.top_level()
    sf = [int(m.grad_ranks.get("sign_flip", -1)) for m in top]
    out[d.name] = {"timings": r.timings, "head_fit": r.summary.get("head_fit"),
                   "label_contrast": {k: v for k, v in (r.summary.get("label_contrast") or {}).items() if k != "modules"},
                   "sign_flip_total": sum(sf), "sign_flip_zero": sum(x == 0 for x in sf),
                   "half_difference_total": sum(int(m.grad_ranks["half_difference"]) for m in top),
                   "ranks": {m.short: [int(m.grad_ranks.get("sign_flip", -1)), int(m.grad_ranks["half_difference"]),
                                       round(m.energy_share, 4)] for m in top}}
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PY
tar -czf "$OUT/probes.tar.gz" -C "$OUT" probes && rm -rf "$P"
ls -la "$OUT"
