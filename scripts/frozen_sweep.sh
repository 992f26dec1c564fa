#!/usr/bin/env bash
# Run a sweep config from a frozen copy of the code, so that later commits (a change to the gates,
# say) cannot split a sweep that spans sessions:
#
#   bash scripts/frozen_sweep.sh COMMIT results/deb-de-en-v2/sweep.json [pass-sweep flags...]
#
# The copy is a git worktree of COMMIT beside the checkout (../frozen-<COMMIT>), with its own .venv
# (make venv). Only the code is frozen: its data/ is this checkout's, and its results folder (the
# config's folder) is a link to this checkout's, so the config, the finished runs and base.json are
# the ones here and every run file lands here, ready to commit. Then pass-sweep runs from the copy:
# it trains the base if this machine has none (checking its fingerprint against base.json), and
# resumes the sweep. Run it in the background and commit results/ as runs finish.
set -euo pipefail

die() {
    echo "frozen_sweep: error: $*" >&2
    exit 2
}

[[ $# -ge 2 ]] || die "usage: $0 COMMIT CONFIG [pass-sweep flags...]"
commit=$1
config=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ -f $config ]] || die "$config: no such sweep config (give its path from the repository root)"
sha=$(git rev-parse --verify --quiet "$commit^{commit}") || die "$commit: not a commit of this repository"
short=$(git rev-parse --short "$sha")
results=$(dirname "$config")
[[ -d data ]] || die "no data/ here: build the corpus first (bash scripts/prepare_deb_de_en.sh data/deb-de-en)"

copy="$root/../frozen-$short"
if [[ ! -d $copy ]]; then
    git worktree add --detach "$copy" "$sha" >/dev/null
fi
[[ $(git -C "$copy" rev-parse HEAD) == "$sha" ]] || die "$copy is not at $short: remove it (git worktree remove)"
ln -sfn "$root/data" "$copy/data"
if [[ ! -L $copy/$results ]]; then
    rm -rf "${copy:?}/$results"
    mkdir -p "$(dirname "$copy/$results")"
    ln -s "$root/$results" "$copy/$results"
fi
make -C "$copy" venv >/dev/null
cd "$copy"
echo "frozen_sweep: running $config from $copy (code at $short)" >&2
exec .venv/bin/python -m pass_fairseq.cli.sweep "$config" "$@"
