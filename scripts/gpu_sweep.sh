#!/usr/bin/env bash
# A sweep config's runs side by side on one CUDA GPU (default: the K = 16 rows of PASS,
# PASSCONC and the strongest baseline at transformer_iwslt_de_en's width,
# results/deb-de-en-512/sweep.json). Run from the repository root on a machine where
# pass-sweep and fairseq's commands are installed (beside python, or on PATH):
#
#   bash scripts/gpu_sweep.sh LOG_DIR [CONFIG]
#
# 1. the run named "base" trains the base (when its checkpoint is missing), builds the shards
#    and scores the base;
# 2. once the shards exist, every other method's runs start, one pass-sweep process per
#    method (the GPU is mostly idle during one small model's update, so four fine-tunes side by
#    side take about as long as one);
# 3. the table and plots are built once, when all have finished.
# Each process's output goes to LOG_DIR/<method>.log. Like pass-sweep itself it resumes:
# finished runs are skipped. The fine-tune wall times of runs side by side are not a method's
# cost.
set -uo pipefail
LOGS=${1:?usage: gpu_sweep.sh LOG_DIR [CONFIG]}
CFG=${2:-results/deb-de-en-512/sweep.json}
PY=${PYTHON:-python3}
mkdir -p "$LOGS"
command -v pass-sweep > /dev/null || { echo "gpu_sweep.sh: pass-sweep is not on PATH: install the plugin first"; exit 2; }
read -r SHARDS METHODS < <("$PY" - "$CFG" <<'EOF'
import json, os, sys
from pass_fairseq.shards import MARKER
cfg = json.load(open(sys.argv[1], encoding="utf-8"))
shards = os.path.join(cfg["workdir"], f"shards{cfg['finetune']['shards']}", MARKER)
methods = [r["method"] for r in cfg["runs"] if r["method"] != "base"]
print(shards, ",".join(dict.fromkeys(methods)))
EOF
) || { echo "gpu_sweep.sh: cannot read $CFG"; exit 2; }

pass-sweep "$CFG" --only base --no-table > "$LOGS/base.log" 2>&1 &
pids=($!)
while kill -0 "${pids[0]}" 2> /dev/null && [ ! -f "$SHARDS" ]; do sleep 5; done
if [ ! -f "$SHARDS" ]; then
  echo "gpu_sweep.sh: the base step ended without building the shards; see $LOGS/base.log"
  tail -5 "$LOGS/base.log"
  exit 1
fi
for method in ${METHODS//,/ }; do
  pass-sweep "$CFG" --only "$method" --no-table > "$LOGS/$method.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
pass-sweep "$CFG" --table > "$LOGS/table.log" 2>&1 || failed=1
grep -h "^sweep: .*sacreBLEU\|failed" "$LOGS"/*.log
exit $failed
