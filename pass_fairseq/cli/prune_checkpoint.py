"""``pass-prune-checkpoint IN.pt OUT.pt [--heads K | --threshold T] [--format pruned|stock]``:
prune the heads of a gated checkpoint (see :mod:`pass_fairseq.checkpoints`)."""
import argparse
import os
import sys
from typing import List, Optional

from pass_fairseq.checkpoints import convert, load_checkpoint, save_atomic, stock_notes
from pass_fairseq.cli import one_line_errors, parse_cli
from pass_fairseq.errors import fail
from pass_fairseq.gates import GATE_KEY


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pass-prune-checkpoint",
        description="Prune the heads of a transformer_pass checkpoint: physically (--format pruned,"
                    " loads with --user-dir pass_fairseq) or folded into a dense stock fairseq"
                    " transformer (--format stock).")
    p.add_argument("input", metavar="IN.pt", help="checkpoint trained with a transformer_pass architecture")
    p.add_argument("output", metavar="OUT.pt", help="where to write the result (never IN)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--heads", type=int, metavar="K", dest="target_heads",
                       help="keep the K heads with the largest log_alpha (ties: module order, then head)")
    which.add_argument("--threshold", type=float, metavar="T", help="keep the heads whose eval gate z > T")
    p.add_argument("--format", choices=["pruned", "stock"], default="pruned",
                   help="pruned: heads removed (default); stock: dense, gates folded, no plugin needed")
    return p


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    if os.path.exists(args.output) and os.path.exists(args.input) and os.path.samefile(args.input, args.output) \
            or os.path.abspath(args.input) == os.path.abspath(args.output):
        fail("OUT is IN: write the pruned checkpoint to another file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        fail(f"{args.output}: its directory does not exist")
    state = load_checkpoint(args.input)
    new = convert(state, target_heads=args.target_heads, threshold=args.threshold, fmt=args.format)
    save_atomic(new, args.output)
    kept = new["pass_pruned_heads"]
    total = sum(len(v) for v in kept.values())
    skipped = sum(1 for v in kept.values() if not v)
    n_heads = sum(state["model"][p + GATE_KEY].numel() for p in kept)
    print(f"pass_fairseq: wrote {args.output} ({args.format}): {total} of {n_heads} heads kept,"
          f" {skipped} of {len(kept)} attention modules skipped", file=sys.stderr)
    for note in stock_notes(state) if args.format == "stock" else []:
        print(f"pass_fairseq: note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.prune_checkpoint
    sys.exit(main())
