#!/usr/bin/env bash
# r90 per component of every finished full fine-tuning test cell of a study (saved with save_full_model),
# one `intrinsic truncate` process per cell, side by side on the GPU(s); packs the truncation.json files.
#   bash scripts/gpu_truncate.sh RESULTS_DIR OUT.tgz [RANKS]
set -u
cd "$(dirname "$0")/.."
python3 -c "import intrinsic.cli.app" 2>/dev/null || source scripts/gpu_env.sh
R=$1; T=$2; RANKS=${3:-1,2,4,8,16,32,64}
CELLS=$(python3 -c "
import json; rows = json.load(open('$R/results.json'))['rows']
print(' '.join(r['id'] for r in rows if r['strategy'] == 'full' and r['phase'] == 'test' and r['status'] == 'ok'))")
echo "full test cells: $CELLS"
for c in $CELLS; do
  intrinsic truncate "$R/cells/$c" --ranks "$RANKS" --json > "/tmp/trunc-$c.json" 2> "/tmp/trunc-$c.log" &
done
wait
for c in $CELLS; do tail -n 2 "/tmp/trunc-$c.log"; done
(cd "$R/.." && tar czf "$T" $(for c in $CELLS; do echo "$(basename "$R")/cells/$c/truncation.json"; done) 2>/dev/null)
ls -la "$T"
