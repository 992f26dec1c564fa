#!/usr/bin/env bash
# PASS and PASSCONC on a decoder-only language model, end to end (examples/lm/README.md):
#
#   1. data      the English side of the offline corpus, sentencepiece, fairseq-preprocess --only-source
#   2. base      a stock transformer_lm (4 layers of 4 heads: 16 heads, width 64), trained once
#   3. shards    the training set in 32 shards: one fine-tune epoch is one shard
#   4. fine-tunes from the base, 5 epochs, same data, updates and lr: the control (stock, no gates),
#                PASS and PASSCONC to exactly K heads
#   5. pruning   pass-prune-checkpoint: the kept heads physically, the rest removed
#   6. scoring   fairseq-eval-lm on the test set: base, control, gated and pruned models
#   7. speed     pass-bench-inference: incremental generation from prompts, unpruned vs pruned
#   8. report    WORK/report.md
#
#   bash examples/lm/run.sh                      # from the repository root or anywhere
#   K=8 BASE_UPDATES=2000 EPOCHS=8 bash examples/lm/run.sh
#
# Resumable: a finished stage leaves a .done file beside its output and is skipped; an
# interrupted fairseq-train resumes from its checkpoint_last.pt when run again. Every command
# is echoed and logged under WORK (default data/lm, ignored by git). PYTHON (default
# .venv/bin/python, `make venv` makes it) names the environment; its bin folder holds
# fairseq-train & co. and the plugin's pass-* commands.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
CORPUS=${CORPUS:-data/deb-de-en}
WORK=${WORK:-data/lm}
K=${K:-4}                        # heads to keep, of 16
BASE_UPDATES=${BASE_UPDATES:-300}
MAX_TOKENS=${MAX_TOKENS:-2048}   # tokens per update
SHARDS=${SHARDS:-32}             # the training set in SHARDS shards; one fine-tune epoch is one shard
EPOCHS=${EPOCHS:-5}              # fine-tune epochs (shards), at most SHARDS
SEED=${SEED:-1}
PROMPTS=${PROMPTS:-64}           # the benchmark: test prompts of PROMPT_LEN tokens, continued by OUT_LEN
PROMPT_LEN=${PROMPT_LEN:-16}
OUT_LEN=${OUT_LEN:-16}
THREADS=${THREADS:-2}            # torch threads of the benchmark

# the model (stock transformer_lm_gpt2_tiny, gated transformer_lm_pass_gpt2_tiny: the same
# defaults, gelu, pre-norm) and how sentences make training samples
MODEL=(--decoder-layers 4 --decoder-embed-dim 64 --decoder-ffn-embed-dim 256 --decoder-attention-heads 4
       --share-decoder-input-output-embed --dropout 0.1)
SAMPLES=(--tokens-per-sample 128 --sample-break-mode complete)
STOCK=(--task language_modeling --arch transformer_lm_gpt2_tiny --criterion cross_entropy --optimizer adam)
GATED=(--user-dir pass_fairseq --task language_modeling_pass --arch transformer_lm_pass_gpt2_tiny
       --criterion pass_cross_entropy --optimizer pass_adam --pass-target-heads "$K")
COMMON=(--adam-betas "(0.9,0.98)" --max-tokens "$MAX_TOKENS" --no-epoch-checkpoints --log-format simple --log-interval 25
        --num-workers 0 --seed "$SEED")
# the fine-tunes: EPOCHS shards of the training set, fixed lr after a short warm-up
FINETUNE=(--lr 5e-4 --lr-scheduler fixed --warmup-updates 50 --max-epoch "$EPOCHS")
# PASS as the demo runs it (docs/demo.md, "Why the demo's schedule"): lambda weighs one
# token's loss, no reopening, checkpoint_best.pt only ever on target
PASS=(--pass-reg-scaling token --pass-lambda-init 0.1 --pass-no-reopen --best-checkpoint-metric pass_loss)
# the concentrator from epoch 3, once PASS alone is on target, off for the last two epochs
CONC=(--pass-concentrator --pass-conc-start-epoch 3 --pass-conc-end-epoch $((EPOCHS - 2)))

step() { echo; echo "=== $* ==="; }
run() {  # run LOG CMD...: echo the command, append it and its output to LOG; the command's status
    local log=$1 status; shift
    { printf '$'; printf ' %q' "$@"; echo; } | tee -a "$log"
    set +e
    "$@" 2>&1 | tee -a "$log" | grep --line-buffered -v -E "Warning|warn\(|hydra|version_base|deprecat|compatab|Will assume"
    status=${PIPESTATUS[0]}
    set -e
    return "$status"
}
done_or() { [ -f "$1/.done" ]; }
mkdir -p "$WORK"

step "1. data"
if ! done_or "$WORK/data-bin"; then
    [ -f "$CORPUS/.complete" ] || PYTHON="$PYTHON" bash scripts/prepare_deb_de_en.sh "$CORPUS"
    mkdir -p "$WORK/spm"
    for split in train valid test; do
        "$PYTHON" -c "import sys, sentencepiece as s; m = s.SentencePieceProcessor(model_file=sys.argv[1])
for line in open(sys.argv[2], encoding='utf-8'): print(' '.join(m.encode(line.strip(), out_type=str)))" \
            "$CORPUS/spm.model" "$CORPUS/raw/$split.en" > "$WORK/spm/$split.txt"
    done
    rm -rf "$WORK/data-bin"
    run "$WORK/preprocess.log" "$BIN/fairseq-preprocess" --only-source --trainpref "$WORK/spm/train.txt" \
        --validpref "$WORK/spm/valid.txt" --testpref "$WORK/spm/test.txt" --destdir "$WORK/data-bin" --workers 2
    touch "$WORK/data-bin/.done"
fi
grep -h "tokens" "$WORK/data-bin/preprocess.log" | sed 's/.*| //'

step "2. base: stock transformer_lm, $BASE_UPDATES updates"
if ! done_or "$WORK/base"; then
    mkdir -p "$WORK/base"
    run "$WORK/base/train.log" "$BIN/fairseq-train" "$WORK/data-bin" "${STOCK[@]}" "${MODEL[@]}" "${SAMPLES[@]}" \
        "${COMMON[@]}" --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 100 --max-update "$BASE_UPDATES" \
        --save-interval-updates 50 --keep-interval-updates 1 --save-dir "$WORK/base"
    touch "$WORK/base/.done"
fi

step "3. shards: the training set in $SHARDS shards"
DATA=$("$PYTHON" -c "import sys; from pass_fairseq.experiments.shards import build_shards
print(build_shards(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])).data)" \
    "$WORK/data-bin" "$WORK/shards$SHARDS" "$SHARDS" "$SEED")

step "4. fine-tunes from the base: control, PASS and PASSCONC to K=$K"
finetune() {  # finetune NAME FLAGS...
    local name=$1; shift
    if ! done_or "$WORK/$name"; then
        mkdir -p "$WORK/$name"
        run "$WORK/$name/train.log" "$BIN/fairseq-train" "$DATA" "$@" "${MODEL[@]}" "${SAMPLES[@]}" "${COMMON[@]}" \
            "${FINETUNE[@]}" --finetune-from-model "$WORK/base/checkpoint_last.pt" --save-dir "$WORK/$name"
        touch "$WORK/$name/.done"
    fi
}
finetune control "${STOCK[@]}"
finetune pass "${GATED[@]}" "${PASS[@]}"
finetune passconc "${GATED[@]}" "${PASS[@]}" "${CONC[@]}"
for name in pass passconc; do
    [ -f "$WORK/$name/checkpoint_best.pt" ] || {
        echo "run.sh: $name never validated with exactly $K binary gates (no checkpoint_best.pt): see $WORK/$name/train.log" >&2
        exit 1; }
done

step "5. pruning: the kept heads physically, the others removed"
for name in pass passconc; do
    "$BIN/pass-prune-checkpoint" "$WORK/$name/checkpoint_best.pt" "$WORK/$name/pruned.pt"
    "$BIN/pass-inspect-gates" "$WORK/$name/checkpoint_best.pt" --json > "$WORK/$name/gates.json"
done

step "6. scoring: fairseq-eval-lm on the test set"
score() {  # score NAME CHECKPOINT [FLAGS...]: the log's "Loss (base 2): L, Perplexity: P"
    local name=$1 ckpt=$2; shift 2
    local log="$WORK/eval/$name.log"
    if [ ! -f "$log.done" ]; then
        rm -f "$log"
        run "$log" "$BIN/fairseq-eval-lm" "$WORK/data-bin" --path "$ckpt" --gen-subset test "${SAMPLES[@]}" \
            --max-tokens 4096 --num-workers 0 "$@"
        touch "$log.done"
    fi
}
mkdir -p "$WORK/eval"
score base "$WORK/base/checkpoint_last.pt"
score control "$WORK/control/checkpoint_best.pt"
for name in pass passconc; do
    score "$name-gated" "$WORK/$name/checkpoint_best.pt" --user-dir pass_fairseq
    score "$name-pruned" "$WORK/$name/pruned.pt" --user-dir pass_fairseq
done

step "7. speed: incremental generation, unpruned vs pruned, one run per checkpoint"
for name in pass passconc; do
    if ! done_or "$WORK/bench-$name"; then
        mkdir -p "$WORK/bench-$name"
        run "$WORK/bench-$name/bench.log" "$BIN/pass-bench-inference" "$WORK/$name/checkpoint_best.pt" \
            --data "$WORK/data-bin" --heads "$K" --layouts topk,packed --sentences "$PROMPTS" --batch-size 32 \
            --prompt-len "$PROMPT_LEN" --out-len "$OUT_LEN" --beam 1 --repeats 5 --warmup 1 --threads "$THREADS" \
            --work-dir "$WORK/bench-$name"
        touch "$WORK/bench-$name/.done"
    fi
done

step "8. report"
"$PYTHON" examples/lm/report.py "$WORK" "$K" | tee "$WORK/report.md"
