"""Show the deterministic gates of a checkpoint trained with a transformer_pass architecture
(Hard Concrete or subset gates): per module the gate values and kept heads (z > 0.5), and
the totals.

    pass-inspect-gates CKPT [--json] [--plot gates.png]

Bad input (missing file, not a checkpoint, no gates): one line on stderr, exit 2.
"""
import argparse
import json
import sys

from pass_fairseq.checkpoints import load_checkpoint
from pass_fairseq.cli import one_line_errors, quiet_fairseq_logging
from pass_fairseq.errors import fail
from pass_fairseq.files import atomic_write
from pass_fairseq.gate_report import gate_report, layer_grid


def print_table(report, path):
    print(f"{path}")
    if report["subset_k"]:
        print(f"  subset gates: z = 1 for the {report['subset_k']} largest log_alpha of the model, 0 for the others")
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
    num_heads = max(len(m["gates"]) for m in report["modules"])
    labels = list(grid)
    layers = max(len(v) for v in grid.values())
    data = [[row[i] if i < len(row) else 0 for i in range(layers)] for row in grid.values()]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * layers, 1.2 + 0.6 * len(labels)))
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=num_heads, aspect="auto")
    for r, row in enumerate(data):
        for c, v in enumerate(row):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > num_heads / 2 else "black")
    ax.set_xticks(range(layers), [str(i) for i in range(layers)])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("layer")
    ax.set_title(f"kept heads per module: {report['kept']} of {report['heads_total']}")
    fig.colorbar(im, ax=ax, label="kept heads")
    fig.tight_layout()
    with atomic_write(out_path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


@one_line_errors
def main(argv=None):
    quiet_fairseq_logging()
    parser = argparse.ArgumentParser(prog="pass-inspect-gates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint trained with --arch transformer_pass*")
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--plot", metavar="PNG", help="also write a heat map of kept heads per layer")
    args = parser.parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    try:
        report = gate_report(state["model"])
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
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.inspect_gates
    sys.exit(main())
