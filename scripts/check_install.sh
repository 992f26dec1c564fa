#!/usr/bin/env bash
# Installing the plugin into an environment of your own (README.md, "Installing into your own
# fairseq environment"), checked end to end as a user would do it:
#
#   1. a fresh venv gets what a fairseq user's environment already has: torch (here the
#      pinned CPU build; yours may be a CUDA build), fairseq and fairseq's own dependencies
#      (sacrebleu among them: fairseq imports it);
#   2. the plugin goes in as README.md says: `pip install --no-deps /path/to/pass_fairseq`
#      (a built copy, not an editable one, so a file missing from the package shows); it
#      needs nothing fairseq does not; torch is not touched;
#   3. from outside the checkout: a toy task, a short fairseq-train with the plugin's task,
#      model, criterion and optimizer through --user-dir (K = 8), pass-inspect-gates,
#      pass-prune-checkpoint to 8 heads and fairseq-generate on the pruned checkpoint. It
#      checks the install, not the model: 12 short epochs do not train the toy task.
#
#   bash scripts/check_install.sh [WORKDIR]      # default: a new temporary folder
#
# Prints one line per step and "install check: ok" at the end; exits non-zero on the first
# failure (its log is in WORKDIR).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
mkdir -p "$WORK"
cd "$WORK"
step() { echo "install check: $*"; }

step "1. a fresh environment with torch and fairseq ($WORK/env)"
"$PYTHON" -m venv env
PIP=(env/bin/python -m pip install --quiet --disable-pip-version-check)
# fairseq's dependencies as requirements.txt pins them, without what only the plugin's own
# tests and plots use
grep -v -E "^(#|pytest|matplotlib)" "$ROOT/requirements.txt" > fairseq-deps.txt
"${PIP[@]}" -r fairseq-deps.txt > install.log 2>&1
"${PIP[@]}" --no-deps ve-fairseq==0.12.3 >> install.log 2>&1
env/bin/python -c "import fairseq, torch; print('  torch', torch.__version__, 'fairseq', fairseq.__version__)"

step "2. the plugin: pip install --no-deps $ROOT"
TORCH_BEFORE=$(env/bin/python -c "import torch; print(torch.__version__)")
"${PIP[@]}" --no-deps "$ROOT" >> install.log 2>&1
env/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '$TORCH_BEFORE')" \
  || { echo "install check: the plugin's install changed torch" >&2; exit 1; }
env/bin/python -c "import pass_fairseq, pass_fairseq.experiments.sweep; print('  plugin at', pass_fairseq.PLUGIN_DIR)"

step "3. a short training run with K = 8 of 24 heads, inspect, prune to 8, generate (from $WORK)"
env/bin/python -m pass_fairseq.experiments.toy_task toy --train 600 > toy.log 2>&1
env/bin/fairseq-train toy/data-bin --user-dir "$ROOT/pass_fairseq" --task translation_pass \
  --arch transformer_pass_iwslt --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64 \
  --decoder-embed-dim 64 --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --share-all-embeddings \
  --criterion pass_label_smoothed_cross_entropy --label-smoothing 0.1 --pass-target-heads 8 \
  --optimizer pass_adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt --warmup-updates 50 \
  --max-tokens 1500 --max-epoch 12 --seed 1 --best-checkpoint-metric pass_loss --no-epoch-checkpoints \
  --save-dir ckpt --num-workers 0 --cpu --log-format simple --log-interval 1000 > train.log 2>&1
env/bin/pass-inspect-gates ckpt/checkpoint_last.pt | tail -1
env/bin/pass-prune-checkpoint ckpt/checkpoint_last.pt ckpt/pruned.pt --heads 8
env/bin/fairseq-generate toy/data-bin --user-dir "$ROOT/pass_fairseq" --path ckpt/pruned.pt --beam 5 \
  --batch-size 64 --required-batch-size-multiple 1 --num-workers 0 --cpu > generate.txt 2>&1
grep -c "^H-" generate.txt | sed 's/^/  hypotheses: /'
tail -1 generate.txt | sed 's/.*| //; s/^/  /'
echo "install check: ok"
