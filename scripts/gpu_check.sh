#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run (results/gpu-check/README.md holds its
# output; docs/distributed.md explains it). Run from the repository root on a machine with a
# GPU, a CUDA build of torch, and fairseq importable (PYTHONPATH may point at a folder that
# holds it); nothing needs to be pip-installed: the plugin's tools run with python -m:
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# 1. pass-bench-training on CUDA, fp32 and fp16 (on $BENCH_DATA, default the toy task): a PASS update against a stock fairseq update
#    on the same batches and width (the demo's shape), ratios measured side by side;
# 2. --fp16 end to end on the toy reversal task (K = 8 of 72 heads): the run ends on target
#    (exactly K open, every gate binary), the confidence statistics stayed float32, and the
#    physically pruned checkpoint gives the gated checkpoint's beam-5 hypotheses.
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi -L | tee "$OUT/device.txt"
$PY -c "import torch, fairseq; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'fairseq', fairseq.__version__)" \
  | tee -a "$OUT/device.txt"

TOY=$OUT/toy
$PY -m pass_fairseq.experiments.toy_task "$TOY" > "$OUT/toy.log" 2>&1

echo "== 1. training update: PASS vs stock (CUDA) =="
BENCH_DATA=${BENCH_DATA:-$TOY/data-bin}
$PY -m pass_fairseq.cli.bench_training "$BENCH_DATA" --device cuda --markdown "$OUT/bench_training_fp32.md" \
  2>&1 | tee "$OUT/bench_training_fp32.log" | tail -8
$PY -m pass_fairseq.cli.bench_training "$BENCH_DATA" --device cuda --fp16 --markdown "$OUT/bench_training_fp16.md" \
  2>&1 | tee "$OUT/bench_training_fp16.log" | tail -8

echo "== 2. --fp16 end to end on the toy task =="
$PY -c "import pass_fairseq, fairseq_cli.train as t, sys; sys.argv[0] = 'fairseq-train'; t.cli_main()" \
  "$TOY/data-bin" --user-dir pass_fairseq --task translation_pass --arch transformer_pass_iwslt \
  --encoder-embed-dim 64 --decoder-embed-dim 64 --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 \
  --share-all-embeddings --dropout 0.1 --criterion pass_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --pass-target-heads 8 --optimizer pass_adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt \
  --warmup-updates 50 --max-tokens 1500 --max-epoch 40 --seed 1 --fp16 --fp16-no-flatten-grads \
  --best-checkpoint-metric pass_loss --no-epoch-checkpoints --save-dir "$OUT/fp16" --num-workers 0 \
  --log-format simple --log-interval 1000 > "$OUT/fp16_train.log" 2>&1
grep "pass: epoch 40" "$OUT/fp16_train.log" | tail -1
$PY -m pass_fairseq.cli.inspect_gates "$OUT/fp16/checkpoint_last.pt" | tail -1
$PY - "$OUT/fp16/checkpoint_last.pt" <<'EOF'
import sys
import torch
import pass_fairseq  # noqa: F401
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["model"]
dtypes = {str(v.dtype) for k, v in state.items() if k.endswith("conf_mean")}
print("conf_mean dtypes in the fp16 checkpoint:", dtypes)
EOF
$PY -m pass_fairseq.cli.prune_checkpoint "$OUT/fp16/checkpoint_last.pt" "$OUT/fp16/pruned.pt"
for ckpt in checkpoint_last pruned; do
  $PY -c "import pass_fairseq, fairseq_cli.generate as g, sys; sys.argv[0] = 'fairseq-generate'; g.cli_main()" \
    "$TOY/data-bin" --user-dir pass_fairseq --path "$OUT/fp16/$ckpt.pt" --beam 5 --batch-size 64 \
    --required-batch-size-multiple 1 --fp16 --num-workers 0 > "$OUT/generate_$ckpt.txt" 2>&1
  tail -1 "$OUT/generate_$ckpt.txt"
done
if diff <(grep '^H-' "$OUT/generate_checkpoint_last.txt" | sort) <(grep '^H-' "$OUT/generate_pruned.txt" | sort) > /dev/null; then
  echo "pruned == gated: identical beam-5 hypotheses (fp16)"
else
  echo "pruned != gated: hypotheses differ (fp16)"
fi
