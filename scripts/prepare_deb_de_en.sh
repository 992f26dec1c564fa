#!/usr/bin/env bash
# Build a German->English corpus offline from Debian packages and binarize it
# for fairseq.
#
#   bash scripts/prepare_deb_de_en.sh DEST
#
# Sources (human translations): trans-de-en (Ding dictionary, GPL-2+),
# libreoffice-help-de/-en-us (MPL-2.0), gnome-user-docs (CC-BY-SA-3.0),
# debian-reference-de/-en (GPL-2+). See docs/data.md.
#
# Output:
#   DEST/raw/{train,valid,test}.{de,en}   detokenized text (and .origin: source)
#   DEST/spm.model, DEST/spm.vocab        joint sentencepiece BPE model
#   DEST/spm/{train,valid,test}.{de,en}   sentencepiece-encoded text
#   DEST/data-bin/                        fairseq-preprocess output
#   DEST/counts.json                      per-source and per-split counts
#
# Environment:
#   PYTHON              python with sentencepiece  (default .venv/bin/python)
#   FAIRSEQ_PREPROCESS  fairseq-preprocess          (default .venv/bin/fairseq-preprocess)
#   SPM_VOCAB_SIZE      joint BPE vocabulary size   (default 8000)
#   SEED                split seed                  (default 1)
#   DEB_CACHE           where the .deb files are kept (default DEST/../deb-cache)
# Relative PYTHON / FAIRSEQ_PREPROCESS paths are taken from the repository root;
# DEST and DEB_CACHE from the current directory.
set -euo pipefail

die() {
    echo "prepare_deb_de_en: error: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 DEST"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Absolute path of $1 against the current directory, before any cd.
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

DEST=$(abspath "${1%/}")
DEB_CACHE=$(abspath "${DEB_CACHE:-$(dirname "$DEST")/deb-cache}")
SPM_VOCAB_SIZE=${SPM_VOCAB_SIZE:-8000}
SEED=${SEED:-1}
PACKAGES=(trans-de-en libreoffice-help-de libreoffice-help-en-us
          gnome-user-docs debian-reference-de debian-reference-en)

cd "$REPO_ROOT"

# A tool given as a relative path is taken from the repository root; a bare
# name is looked up on PATH.
resolve_tool() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        */*) printf '%s\n' "$REPO_ROOT/$1" ;;
        *) command -v "$1" || printf '%s\n' "$1" ;;
    esac
}
PYTHON=$(resolve_tool "${PYTHON:-.venv/bin/python}")
FAIRSEQ_PREPROCESS=$(resolve_tool "${FAIRSEQ_PREPROCESS:-.venv/bin/fairseq-preprocess}")
HELPER="$REPO_ROOT/scripts/deb_corpus.py"

if [[ -f "$DEST/data-bin/dict.en.txt" && -f "$DEST/.complete" ]]; then
    echo "corpus cached at $DEST"
    exit 0
fi

[[ "$SPM_VOCAB_SIZE" =~ ^[0-9]+$ ]] || die "SPM_VOCAB_SIZE must be a number, got '$SPM_VOCAB_SIZE'"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a number, got '$SEED'"
[[ -x "$PYTHON" ]] || die "python not found or not executable: $PYTHON (set PYTHON)"
[[ -x "$FAIRSEQ_PREPROCESS" ]] || die "fairseq-preprocess not found: $FAIRSEQ_PREPROCESS (set FAIRSEQ_PREPROCESS)"
"$PYTHON" -c "import sentencepiece" 2>/dev/null || die "$PYTHON cannot import sentencepiece"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (a Debian-based system is needed)"

mkdir -p "$(dirname "$DEST")" "$DEB_CACHE"
WORK=$(mktemp -d "$(dirname "$DEST")/.$(basename "$DEST").tmp.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
START=$(date +%s)

# The newest cached .deb of package $1, if any.
cached_deb() {
    local files=("$DEB_CACHE/$1"_*.deb)
    if [[ -e "${files[0]}" ]]; then
        printf '%s\n' "${files[-1]}"
    fi
}

# Download package $1 into the cache unless it is there already.
fetch_deb() {
    local pkg=$1 opts=()
    [[ -n "$(cached_deb "$pkg")" ]] && return 0
    command -v apt-get >/dev/null || die "apt-get not found: cannot download $pkg"
    # As root, apt drops to the _apt user, which may not write the cache.
    [[ $EUID -eq 0 ]] && opts=(-o APT::Sandbox::User=root)
    if ! (cd "$DEB_CACHE" && apt-get "${opts[@]}" -qq download "$pkg") >"$WORK/apt.log" 2>&1; then
        if [[ $EUID -eq 0 ]]; then
            apt-get -qq update >>"$WORK/apt.log" 2>&1 || true
            (cd "$DEB_CACHE" && apt-get "${opts[@]}" -qq download "$pkg") >>"$WORK/apt.log" 2>&1 \
                || die "apt-get download $pkg failed: $(tail -n 1 "$WORK/apt.log")"
        else
            die "apt-get download $pkg failed (try 'apt-get update'): $(tail -n 1 "$WORK/apt.log")"
        fi
    fi
    [[ -n "$(cached_deb "$pkg")" ]] || die "apt-get download $pkg left no .deb in $DEB_CACHE"
}

# Unpack only the parts of package $1 that the helper reads.
unpack_deb() {
    local pkg=$1 deb target patterns
    deb=$(cached_deb "$pkg")
    target="$WORK/pkgs/$pkg"
    mkdir -p "$target"
    case "$pkg" in
        trans-de-en) patterns=('./usr/share/trans/*') ;;
        libreoffice-help-*) patterns=('./usr/share/libreoffice/help/*/text/*') ;;
        gnome-user-docs) patterns=('./usr/share/help/C/*' './usr/share/help/de/*') ;;
        debian-reference-*) patterns=('./usr/share/debian-reference/*.html') ;;
        *) patterns=('./*') ;;
    esac
    if ! dpkg-deb --fsys-tarfile "$deb" 2>"$WORK/unpack.log" \
            | tar -x -C "$target" --wildcards "${patterns[@]}" 2>>"$WORK/unpack.log"; then
        die "cannot unpack $deb: $(head -n 1 "$WORK/unpack.log")"
    fi
    printf '%s %s\n' "$pkg" "$(dpkg-deb -f "$deb" Version)" >>"$WORK/versions.txt"
}

echo "fetching packages into $DEB_CACHE"
for pkg in "${PACKAGES[@]}"; do
    fetch_deb "$pkg"
    unpack_deb "$pkg"
done

BUILD="$WORK/corpus"
mkdir -p "$BUILD"
echo "extracting, cleaning and splitting (seed $SEED)"
"$PYTHON" "$HELPER" build --pkgs "$WORK/pkgs" --out "$BUILD" \
    --seed "$SEED" --versions "$WORK/versions.txt" || exit 1
rm -rf "$WORK/pkgs"

echo "learning sentencepiece BPE (vocab $SPM_VOCAB_SIZE) and encoding"
"$PYTHON" "$HELPER" spm --out "$BUILD" --vocab-size "$SPM_VOCAB_SIZE" || exit 1

echo "binarizing with fairseq-preprocess"
if ! "$FAIRSEQ_PREPROCESS" --source-lang de --target-lang en \
        --trainpref "$BUILD/spm/train" --validpref "$BUILD/spm/valid" \
        --testpref "$BUILD/spm/test" --destdir "$BUILD/data-bin" \
        --joined-dictionary --workers 2 >"$BUILD/preprocess.log" 2>&1; then
    cp "$BUILD/preprocess.log" "$DEST.preprocess-failed.log" 2>/dev/null || true
    die "fairseq-preprocess failed, log kept at $DEST.preprocess-failed.log"
fi
[[ -f "$BUILD/data-bin/dict.en.txt" ]] || die "fairseq-preprocess wrote no dictionary"

ELAPSED=$(( $(date +%s) - START ))
"$PYTHON" - "$BUILD/counts.json" "$SPM_VOCAB_SIZE" "$ELAPSED" <<'EOF' || die "cannot update counts.json"
import json, sys
path, vocab, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, encoding="utf-8") as handle:
    counts = json.load(handle)
counts["spm_vocab_size"] = vocab
counts["build_seconds"] = seconds
with open(path, "w", encoding="utf-8") as handle:
    json.dump(counts, handle, indent=2)
    handle.write("\n")
EOF
touch "$BUILD/.complete"

# Swap the finished corpus into place; an old, incomplete DEST is replaced.
rm -rf "$DEST"
mv "$BUILD" "$DEST"
"$PYTHON" "$HELPER" report "$DEST/counts.json"
echo "corpus ready at $DEST (${ELAPSED}s)"
