#!/usr/bin/env python
"""Show the deterministic gates of a checkpoint trained with a transformer_pass architecture:
per module the gate values and kept heads (z > 0.5), and the totals.

    python scripts/inspect_gates.py CKPT [--json] [--plot gates.png]

Bad input (missing file, not a checkpoint, no gates): one line on stderr, exit 2.
"""
import argparse
import json
import logging
import os
import sys

logging.basicConfig(level=logging.WARNING)  # keep fairseq's import-time INFO lines off stderr

import torch  # noqa: E402

import pass_fairseq  # noqa: F401  (allows argparse.Namespace in weights_only loads)
from pass_fairseq.errors import fail  # noqa: E402
from pass_fairseq.gate_report import gate_report, layer_grid  # noqa: E402


def load_state_dict(path):
    if not os.path.isfile(path):
        fail(f"no such checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, not a torch file, an unknown pickled class...
        fail(f"cannot read {path} as a torch checkpoint ({type(e).__name__})")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        fail(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state["model"]


def print_table(report, path):
    print(f"{path}")
    for m in report["modules"]:
        gates = " ".join(f"{z:.2f}" for z in m["gates"])
        print(f"  {m['name']:<32} z = [{gates}]  kept {m['kept']}")
    print(f"heads {report['heads_total']}: open {report['open']}, closed {report['closed']}, "
          f"non-binary {report['nonbinary']}; kept (z > 0.5) {report['kept']}; "
          f"modules active {report['modules_active']} of {report['modules_total']}")


def plot(report, out_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = layer_grid(report)
    heads = max(len(m["gates"]) for m in report["modules"])
    labels = list(grid)
    layers = max(len(v) for v in grid.values())
    data = [[row[i] if i < len(row) else 0 for i in range(layers)] for row in grid.values()]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * layers, 1.2 + 0.6 * len(labels)))
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=heads, aspect="auto")
    for r, row in enumerate(data):
        for c, v in enumerate(row):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > heads / 2 else "black")
    ax.set_xticks(range(layers), [str(i) for i in range(layers)])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("layer")
    ax.set_title(f"kept heads per module: {report['kept']} of {report['heads_total']}")
    fig.colorbar(im, ax=ax, label="kept heads")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint trained with --arch transformer_pass*")
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--plot", metavar="PNG", help="also write a heat map of kept heads per layer")
    args = parser.parse_args(argv)
    try:
        report = gate_report(load_state_dict(args.checkpoint))
    except ValueError as e:
        fail(f"{args.checkpoint}: {e}")
    if args.plot:
        plot(report, args.plot)
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report, args.checkpoint)
        if args.plot:
            print(f"gate picture: {args.plot}")


if __name__ == "__main__":
    main()
