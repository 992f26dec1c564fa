"""``pass-profile-step [--batch-size 64,1] [--threads 1]``: one attention module's call, isolated.

Per module kind and batch size, the stock module with every head and pruned modules with
1 ... heads heads, side by side: microseconds per call, aten operators per call, the call
over its ideal share (k / heads of the stock call) and the fit fixed + per head
(:mod:`pass_fairseq.bench.step_profile`). No checkpoint: timing does not depend on the
weights' values, only on the shapes (defaults: the demo's model, beam 5, 20-token outputs).
"""
import argparse
import sys
from typing import List, Optional

import torch

from pass_fairseq.bench.step_profile import KIND_LABELS, StepSetup, fit_rows, profile_kind
from pass_fairseq.bench.tables import to_markdown, write_tables
from pass_fairseq.cli import one_line_errors, parse_cli, parse_int_list
from pass_fairseq.errors import fail

COLUMNS = [("kind", "module kind"), ("module", "module"), ("heads", "heads"), ("us_per_call", "us per call"),
           ("aten_ops", "aten ops per call"), ("ideal_us", "ideal share us"), ("over_ideal", "over ideal share"),
           ("spread", "repeat spread")]
FIT_COLUMNS = [("kind", "module kind"), ("fixed_us", "fixed us per call"), ("per_head_us", "us per head per call"),
               ("stock_us", "stock module us")]


def build_parser() -> argparse.ArgumentParser:
    defaults = StepSetup()
    p = argparse.ArgumentParser(prog="pass-profile-step",
                                description="One attention module's call (encoder self, decoder self with its"
                                            " cache and beam reordering, decoder cross), stock against pruned"
                                            " modules of 1 ... heads heads, side by side.")
    p.add_argument("--embed-dim", type=int, default=defaults.embed_dim,
                   help=f"model width (default {defaults.embed_dim}, the demo's)")
    p.add_argument("--heads", type=int, default=defaults.num_heads, dest="num_heads", metavar="H",
                   help=f"heads of the stock module (default {defaults.num_heads})")
    p.add_argument("--batch-size", default="64,1",
                   help="sentences per batch, comma-separated: one table each (default 64,1)")
    p.add_argument("--beam", type=int, default=defaults.beam, help=f"beam size (default {defaults.beam})")
    p.add_argument("--src-len", type=int, default=defaults.src_len,
                   help=f"source tokens (default {defaults.src_len})")
    p.add_argument("--steps", type=int, default=defaults.steps,
                   help=f"decoding steps, the output length (default {defaults.steps})")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per module (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first (default 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--markdown", help="also write the tables to this markdown file")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    return p


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    batches = parse_int_list(args.batch_size, "--batch-size")
    if min(args.embed_dim, args.num_heads, args.beam, args.src_len, args.steps, args.repeats) < 1 or args.warmup < 0:
        fail("--embed-dim, --heads, --beam, --src-len, --steps and --repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads {args.threads}: give 1 or more")
    if args.embed_dim % args.num_heads:
        fail(f"--embed-dim {args.embed_dim} is not a multiple of --heads {args.num_heads}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    parts, all_rows = [], []
    for batch in batches:
        setup = StepSetup(args.embed_dim, args.num_heads, batch, args.beam, args.src_len, args.steps)
        rows = [row for kind in KIND_LABELS for row in profile_kind(kind, setup, args.warmup, args.repeats)]
        intro = (f"Settings: cpu, threads {torch.get_num_threads()}, width {args.embed_dim}, {args.num_heads} heads;"
                 f" batch {batch}, beam {args.beam}, source {args.src_len} tokens, {args.steps} decoding steps;"
                 f" warm-up {args.warmup}, median of {args.repeats} interleaved repeats. A decoder call is one"
                 " decoding step with its beam reordering (averaged over the steps); an encoder call is one"
                 " batch. Ideal share = the stock call x heads kept / heads.")
        fits = to_markdown(FIT_COLUMNS, fit_rows(rows), f"Fit over the pruned modules at batch {batch}:")
        parts.append(f"#### Batch {batch}\n\n{to_markdown(COLUMNS, rows, intro)}\n\n{fits}")
        all_rows += [dict(row, batch=batch) for row in rows]
    markdown = "\n\n".join(parts)
    print(markdown)
    write_tables(markdown, all_rows, args.markdown, args.csv)
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.profile_step
    sys.exit(main())
