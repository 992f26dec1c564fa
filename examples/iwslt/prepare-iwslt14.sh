#!/usr/bin/env bash
# IWSLT'14 German->English, prepared the way fairseq's
# examples/translation/prepare-iwslt14.sh does it, then binarized with a
# joined dictionary:
#
#   bash examples/iwslt/prepare-iwslt14.sh [WORKDIR]
#
# Needs internet access, git, perl, wget (or curl), python with fairseq.
#
# Steps:
#   1. download de-en.tgz of the IWSLT 2014 evaluation campaign (WIT3 2014-01
#      release of TED talks; fetched from the mirror fairseq uses since the
#      WIT3 server stopped serving it);
#   2. train: drop the <url>/<talkid>/<keywords> lines, unwrap <title> and
#      <description>, Moses-tokenize, clean-corpus-n (ratio 1.5, 1-175 tokens),
#      lowercase;
#   3. dev/test XML: take the <seg> texts, map ’ to ', tokenize, lowercase;
#   4. valid = every 23rd line of the cleaned training data, train = the rest;
#      test = IWSLT14.TED.dev2010 + IWSLT14.TEDX.dev2012 + IWSLT14.TED.tst2010
#      + tst2011 + tst2012 (in that order);
#   5. joint BPE with 10000 merges (subword-nmt) learned on train.de + train.en;
#   6. fairseq-preprocess --joined-dictionary into
#      data-bin/iwslt14.tokenized.de-en.
# fairseq's recipe gives 160239 train, 7283 valid and 6750 test pairs; the
# script warns when the counts differ.
#
# Environment:
#   IWSLT14_URL         archive URL (default: the fairseq mirror below)
#   MOSES_SCRIPTS       an existing mosesdecoder/scripts folder (else cloned)
#   SUBWORD_NMT         an existing subword-nmt checkout (else cloned)
#   PYTHON              python for subword-nmt (default python3)
#   FAIRSEQ_PREPROCESS  fairseq-preprocess command (default: on PATH)
#   DATA_BIN            output folder (default data-bin/iwslt14.tokenized.de-en)
#   WORKERS             fairseq-preprocess workers (default 4)
#   THREADS             Moses tokenizer threads (default 8)
set -euo pipefail

die() {
    echo "prepare-iwslt14: error: $*" >&2
    exit 1
}

WORKDIR=${1:-data/iwslt14}
IWSLT14_URL=${IWSLT14_URL:-http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz}
DATA_BIN=${DATA_BIN:-data-bin/iwslt14.tokenized.de-en}
FAIRSEQ_PREPROCESS=${FAIRSEQ_PREPROCESS:-fairseq-preprocess}
WORKERS=${WORKERS:-4}
THREADS=${THREADS:-8}
BPE_MERGES=10000
MAX_LEN=175
SRC=de
TGT=en
PAIR=de-en
TEST_SETS=(IWSLT14.TED.dev2010 IWSLT14.TEDX.dev2012 IWSLT14.TED.tst2010
           IWSLT14.TED.tst2011 IWSLT14.TED.tst2012)

command -v perl >/dev/null || die "perl is needed for the Moses scripts"
command -v "$FAIRSEQ_PREPROCESS" >/dev/null || die "fairseq-preprocess not found (set FAIRSEQ_PREPROCESS)"

mkdir -p "$WORKDIR" "$DATA_BIN"
WORKDIR=$(cd "$WORKDIR" && pwd)
DATA_BIN=$(cd "$DATA_BIN" && pwd)
ORIG="$WORKDIR/orig"
TMP="$WORKDIR/tmp"
TOKENIZED="$WORKDIR/iwslt14.tokenized.de-en"
mkdir -p "$ORIG" "$TMP" "$TOKENIZED"

# --- tools -----------------------------------------------------------------
clone_once() {  # clone_once URL DIR: shallow clone unless DIR exists
    [[ -d "$2" ]] || git clone --depth 1 "$1" "$2"
}
if [[ -z "${MOSES_SCRIPTS:-}" ]]; then
    clone_once https://github.com/moses-smt/mosesdecoder.git "$WORKDIR/mosesdecoder"
    MOSES_SCRIPTS="$WORKDIR/mosesdecoder/scripts"
fi
if [[ -z "${SUBWORD_NMT:-}" ]]; then
    clone_once https://github.com/rsennrich/subword-nmt.git "$WORKDIR/subword-nmt"
    SUBWORD_NMT="$WORKDIR/subword-nmt"
fi
TOKENIZER="$MOSES_SCRIPTS/tokenizer/tokenizer.perl"
LOWERCASE="$MOSES_SCRIPTS/tokenizer/lowercase.perl"
CLEAN="$MOSES_SCRIPTS/training/clean-corpus-n.perl"
LEARN_BPE="$SUBWORD_NMT/subword_nmt/learn_bpe.py"
APPLY_BPE="$SUBWORD_NMT/subword_nmt/apply_bpe.py"
for tool in "$TOKENIZER" "$LOWERCASE" "$CLEAN" "$LEARN_BPE" "$APPLY_BPE"; do
    [[ -f "$tool" ]] || die "missing $tool"
done
PYTHON=${PYTHON:-python3}

# --- download --------------------------------------------------------------
ARCHIVE="$ORIG/de-en.tgz"
if [[ ! -s "$ARCHIVE" ]]; then
    echo "downloading $IWSLT14_URL"
    if command -v wget >/dev/null; then
        wget -q -O "$ARCHIVE.part" "$IWSLT14_URL" || die "download failed: $IWSLT14_URL"
    else
        curl -fsSL -o "$ARCHIVE.part" "$IWSLT14_URL" || die "download failed: $IWSLT14_URL"
    fi
    mv "$ARCHIVE.part" "$ARCHIVE"
fi
tar -xzf "$ARCHIVE" -C "$ORIG"
[[ -f "$ORIG/$PAIR/train.tags.$PAIR.$SRC" ]] || die "unexpected archive layout in $ARCHIVE"

tokenize() {  # tokenize LANG: Moses tokenizer on stdin
    perl "$TOKENIZER" -threads "$THREADS" -l "$1" -q
}

# --- training data -----------------------------------------------------------
echo "tokenizing the training data"
for lang in "$SRC" "$TGT"; do
    grep -v -e '<url>' -e '<talkid>' -e '<keywords>' "$ORIG/$PAIR/train.tags.$PAIR.$lang" \
        | sed -E 's#</?(title|description)>##g' \
        | tokenize "$lang" >"$TMP/train.tags.$PAIR.tok.$lang"
done
perl "$CLEAN" -ratio 1.5 "$TMP/train.tags.$PAIR.tok" "$SRC" "$TGT" \
    "$TMP/train.tags.$PAIR.clean" 1 "$MAX_LEN"
for lang in "$SRC" "$TGT"; do
    perl "$LOWERCASE" <"$TMP/train.tags.$PAIR.clean.$lang" >"$TMP/train.tags.$PAIR.$lang"
done

# --- dev/test sets -----------------------------------------------------------
echo "tokenizing the dev/test sets"
for name in "${TEST_SETS[@]}"; do
    for lang in "$SRC" "$TGT"; do
        xml="$ORIG/$PAIR/$name.$PAIR.$lang.xml"
        [[ -f "$xml" ]] || die "missing $xml"
        grep '<seg id' "$xml" \
            | sed -E -e 's#<seg id="[0-9]+">[[:space:]]*##' \
                     -e 's#[[:space:]]*</seg>[[:space:]]*##' \
                     -e "s#’#'#g" \
            | tokenize "$lang" | perl "$LOWERCASE" >"$TMP/$name.$PAIR.$lang"
    done
done

# --- splits ------------------------------------------------------------------
echo "creating train, valid, test"
for lang in "$SRC" "$TGT"; do
    awk 'NR % 23 == 0' "$TMP/train.tags.$PAIR.$lang" >"$TMP/valid.$lang"
    awk 'NR % 23 != 0' "$TMP/train.tags.$PAIR.$lang" >"$TMP/train.$lang"
    test_files=()
    for name in "${TEST_SETS[@]}"; do
        test_files+=("$TMP/$name.$PAIR.$lang")
    done
    cat "${test_files[@]}" >"$TMP/test.$lang"
done

# --- BPE ---------------------------------------------------------------------
echo "learning BPE ($BPE_MERGES merges) on train.$SRC + train.$TGT"
cat "$TMP/train.$SRC" "$TMP/train.$TGT" >"$TMP/train.$SRC-$TGT.joint"
"$PYTHON" "$LEARN_BPE" -s "$BPE_MERGES" <"$TMP/train.$SRC-$TGT.joint" >"$TOKENIZED/code"
for lang in "$SRC" "$TGT"; do
    for split in train valid test; do
        "$PYTHON" "$APPLY_BPE" -c "$TOKENIZED/code" <"$TMP/$split.$lang" >"$TOKENIZED/$split.$lang"
    done
done

# --- checks ------------------------------------------------------------------
declare -A EXPECTED=([train]=160239 [valid]=7283 [test]=6750)
for split in train valid test; do
    n_src=$(wc -l <"$TOKENIZED/$split.$SRC")
    n_tgt=$(wc -l <"$TOKENIZED/$split.$TGT")
    [[ "$n_src" -eq "$n_tgt" ]] || die "$split: $n_src $SRC lines but $n_tgt $TGT lines"
    echo "$split: $n_src pairs"
    if [[ "$n_src" -ne "${EXPECTED[$split]}" ]]; then
        echo "warning: fairseq's recipe gives ${EXPECTED[$split]} $split pairs" >&2
    fi
done

# --- binarize ----------------------------------------------------------------
echo "binarizing into $DATA_BIN"
"$FAIRSEQ_PREPROCESS" --source-lang "$SRC" --target-lang "$TGT" \
    --trainpref "$TOKENIZED/train" --validpref "$TOKENIZED/valid" \
    --testpref "$TOKENIZED/test" --destdir "$DATA_BIN" \
    --joined-dictionary --workers "$WORKERS"
echo "done: $DATA_BIN"
