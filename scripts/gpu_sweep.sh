#!/usr/bin/env bash
# A sweep config's methods side by side on one CUDA GPU (default: the K = 16 rows of PASS,
# PASSCONC and the strongest baseline at transformer_iwslt_de_en's width,
# results/deb-de-en-512/sweep.json). Run from the repository root on a machine where
# pass-sweep and fairseq's commands are installed (on PATH):
#
#   bash scripts/gpu_sweep.sh LOG_DIR [CONFIG]
#
# 1. the config's first method ("base" when it has one) runs alone: it trains the base when
#    its checkpoint is missing, builds the shards and scores its runs;
# 2. then every other method runs, one `pass-sweep CONFIG --only METHOD --no-table` process
#    each, side by side (a small model leaves the GPU mostly idle: at width 512 on an H200,
#    four fine-tunes side by side took about twice as long as one alone);
# 3. the table and plots are built once, when all have finished.
# Each process's output goes to LOG_DIR/<method>.log. Like pass-sweep itself it resumes:
# finished runs are skipped. Methods that depend on each other (tuning tries, tries_from, a
# mask kind that several methods prepare, strongest_baseline) are refused (`pass-sweep CONFIG
# --independent-methods` says which): run `pass-sweep CONFIG` for those. The fine-tune wall
# times of runs side by side are not a method's cost.
set -uo pipefail
LOGS=${1:?usage: gpu_sweep.sh LOG_DIR [CONFIG]}
CFG=${2:-results/deb-de-en-512/sweep.json}
command -v pass-sweep > /dev/null || { echo "gpu_sweep.sh: pass-sweep is not on PATH: install the plugin first" >&2; exit 2; }
METHODS=$(pass-sweep "$CFG" --independent-methods) || exit 2
mkdir -p "$LOGS"
read -r FIRST REST <<< "$METHODS"
if ! pass-sweep "$CFG" --only "$FIRST" --no-table > "$LOGS/$FIRST.log" 2>&1; then
  echo "gpu_sweep.sh: $FIRST failed (the others need its base and shards); see $LOGS/$FIRST.log" >&2
  tail -3 "$LOGS/$FIRST.log" >&2
  exit 1
fi
failed=0
pids=()
for method in $REST; do
  pass-sweep "$CFG" --only "$method" --no-table > "$LOGS/$method.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
pass-sweep "$CFG" --table > "$LOGS/table.log" 2>&1 || failed=1
grep -h "^sweep: .*sacreBLEU\|failed" "$LOGS"/*.log
exit $failed
