"""The LM example's report (examples/lm/run.sh, stage 8), from its runs' files only:

    python examples/lm/report.py WORK K > WORK/report.md

Perplexities from the fairseq-eval-lm logs (``Loss (base 2): L, Perplexity: P``), kept heads
from pass-inspect-gates' JSON, updates from the training logs, speed from the benchmark's
tables."""
import json
import os
import re
import sys

#: (eval-lm log name, model, checkpoint, gates JSON or None, training log), under WORK
ROWS = [
    ("base", "base (stock transformer_lm)", "base/checkpoint_last.pt", None, "base/train.log"),
    ("control", "control: base fine-tuned, no gates", "control/checkpoint_best.pt", None, "control/train.log"),
    ("pass-gated", "PASS, gated", "pass/checkpoint_best.pt", "pass/gates.json", "pass/train.log"),
    ("pass-pruned", "PASS, pruned", "pass/pruned.pt", "pass/gates.json", "pass/train.log"),
    ("passconc-gated", "PASSCONC, gated", "passconc/checkpoint_best.pt", "passconc/gates.json", "passconc/train.log"),
    ("passconc-pruned", "PASSCONC, pruned", "passconc/pruned.pt", "passconc/gates.json", "passconc/train.log"),
]
_SCORE = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)")
_UPDATES = re.compile(r"num_updates (\d+)")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def main(work, k):
    size = json.loads(read(os.path.join(work, "pass", "gates.json")))  # the model's heads and modules
    total_heads, total_modules = size["heads_total"], size["modules_total"]
    lines = [f"# PASS on a decoder-only LM: K = {k} of {total_heads} heads", "",
             "| model | checkpoint | heads | attention modules active | updates of its run | test loss (bits/token)"
             " | test perplexity |", "|---|---|---|---|---|---|---|"]
    base_updates = None
    for name, label, ckpt, gates, log in ROWS:
        score = _SCORE.findall(read(os.path.join(work, "eval", name + ".log")))[-1]
        updates = max(int(u) for u in _UPDATES.findall(read(os.path.join(work, log))))
        if name == "base":
            base_updates = updates
            shown = f"{updates}"
        else:
            shown = f"{base_updates} + {updates}"
        heads, modules = total_heads, total_modules
        if gates:
            report = json.loads(read(os.path.join(work, gates)))
            heads, modules = report["kept"], report["modules_active"]
            assert report["nonbinary"] == 0, gates
        lines.append(f"| {label} | `{ckpt}` | {heads} | {modules} of {total_modules} | {shown} | {score[0]} | {score[1]} |")
    for name in ("pass", "passconc"):
        report = json.loads(read(os.path.join(work, name, "gates.json")))
        kept = ", ".join(f"layer {m['name'].split('.')[2]}: {m['kept']}" for m in report["modules"])
        lines += ["", f"{name.upper()} kept heads: {kept}."]
    for name in ("pass", "passconc"):
        lines += ["", f"## Generation speed, {name.upper()} checkpoint (`pass-bench-inference`)", "",
                  read(os.path.join(work, f"bench-{name}", "bench.md")).strip()]
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
