"""``pass-bench-training DATA_BIN [--target-heads K] [--kd] [--device cuda] [--fp16]``: what one
PASS training update costs against one stock fairseq update, on the same batches and
width, measured side by side in one run (:mod:`pass_fairseq.bench.training`); ``--kd`` adds
a third model, PASS with word-level distillation from a teacher of the stock model's shape
(what pruning a base with ``--kd-teacher BASE`` costs: one more forward pass per update).

Default shape: the demo's (6+6 layers, 4 heads, width 128 / ffn 512, pre-norm, shared
embeddings, so the data needs a joined dictionary), batches of ``--max-tokens 4096``. It
prints the settings and a markdown table (ms per update, target tokens/s, time over the
stock update), then the PASS / stock ratio; ``--markdown`` and ``--csv`` also write it.
"""
import argparse
import os
import sys
import tempfile
from typing import List, Optional

import torch

from pass_fairseq.bench.data import has_split
from pass_fairseq.bench.tables import to_markdown, write_tables
from pass_fairseq.bench.timing import Timer
from pass_fairseq.bench.training import (COLUMNS, STOCK_FLAGS, build_trainer, pass_flags, summarize, time_updates,
                                         train_batches)
from pass_fairseq.cli import one_line_errors, parse_cli
from pass_fairseq.errors import fail

LABELS = ["stock (transformer_iwslt_de_en, adam)", "PASS (transformer_pass_iwslt, pass_adam)",
          "PASS + KD (--kd-teacher: a stock model of this shape)"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pass-bench-training",
                                description="Training benchmark: one PASS update against one stock fairseq update,"
                                            " same batches and width, side by side in one run.")
    p.add_argument("data", help="data-bin directory with a train split (joined dictionary)")
    p.add_argument("--target-heads", type=int, default=24, metavar="K", help="PASS target K (default 24)")
    p.add_argument("--concentrator", action="store_true", help="PASSCONC: add the concentrator")
    p.add_argument("--kd", action="store_true",
                   help="also time PASS with word-level distillation (--kd-teacher) from a stock model of the same"
                        " shape, as when a base is pruned with itself as the teacher")
    p.add_argument("--width", type=int, default=128, help="embedding width (default 128)")
    p.add_argument("--ffn", type=int, default=512, help="feed-forward width (default 512)")
    p.add_argument("--layers", type=int, default=6, help="encoder layers and decoder layers (default 6)")
    p.add_argument("--heads", type=int, default=4, dest="num_heads", metavar="H", help="attention heads per module (default 4)")
    p.add_argument("--post-norm", action="store_true", help="post-norm layers (default pre-norm)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (default 4096)")
    p.add_argument("--updates", type=int, default=10, help="timed updates per repeat and model (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (default 5)")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per model first (default 5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (default) or cuda")
    p.add_argument("--fp16", action="store_true",
                   help="fairseq's --fp16 (with --device cuda); PASS also gets --fp16-no-flatten-grads, which"
                        " pass_adam needs")
    p.add_argument("--stock-no-flatten-grads", action="store_true",
                   help="with --fp16, give the stock model --fp16-no-flatten-grads too, to tell that cost"
                        " from the rest of PASS's")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=1, help="seed of both models and the batch order (default 1)")
    p.add_argument("--markdown", help="also write the table to this markdown file")
    p.add_argument("--csv", help="also write the table to this CSV file")
    return p


def shared_flags(args) -> List[str]:
    """fairseq-train flags of both models: task, shape, regularisation, batches, device."""
    shape = [("embed-dim", args.width), ("ffn-embed-dim", args.ffn), ("layers", args.layers),
             ("attention-heads", args.num_heads)]
    flags = ["--task", "translation_pass", "--share-all-embeddings", "--dropout", "0.1", "--label-smoothing", "0.1",
             "--adam-betas", "(0.9,0.98)", "--lr", "5e-4", "--max-tokens", str(args.max_tokens),
             "--seed", str(args.seed), "--num-workers", "0"]
    for side in ("encoder", "decoder"):
        flags += [x for name, value in shape for x in (f"--{side}-{name}", str(value))]
        if not args.post_norm:
            flags.append(f"--{side}-normalize-before")
    if args.device == "cpu":
        flags.append("--cpu")
    if args.fp16:
        flags.append("--fp16")
    return flags


def stock_flags(args) -> List[str]:
    """The stock model, criterion and optimizer (and unflattened fp16 gradients if asked)."""
    return STOCK_FLAGS + (["--fp16-no-flatten-grads"] if args.stock_no_flatten_grads else [])


def check(args) -> None:
    """One-line errors for flags out of range and data without a train split."""
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    if args.fp16 and args.device != "cuda":
        fail("--fp16 needs --device cuda")
    if args.stock_no_flatten_grads and not args.fp16:
        fail("--stock-no-flatten-grads is an fp16 setting: add --fp16")
    if min(args.updates, args.repeats, args.width, args.ffn, args.layers, args.num_heads, args.max_tokens) < 1 \
            or args.warmup < 0:
        fail("--updates, --repeats and the shape flags must be >= 1 and --warmup >= 0")
    if args.width % args.num_heads:
        fail(f"--width {args.width} is not a multiple of --heads {args.num_heads}")
    if not 1 <= args.target_heads <= 3 * args.layers * args.num_heads:
        fail(f"--target-heads {args.target_heads}: the model has {3 * args.layers * args.num_heads} heads")
    if not has_split(args.data, "train"):
        fail(f"no train split in {args.data}: give a data-bin directory (e.g. python -m pass_fairseq.experiments.toy_task DEST"
             " writes DEST/data-bin)")


def settings_line(args, batch_tokens: float) -> str:
    """Device, precision, shape, PASS target, batches and repeats, for the table's intro."""
    precision = "fp32"
    if args.fp16:
        precision = f"fp16, {'both' if args.stock_no_flatten_grads else 'PASS'} with --fp16-no-flatten-grads"
    return (f"device {args.device}, threads {torch.get_num_threads()}, {precision}; {args.layers}+{args.layers}"
            f" layers, {args.num_heads} heads, width {args.width} / ffn {args.ffn}, {'post' if args.post_norm else 'pre'}"
            f"-norm; PASS K={args.target_heads}{' with the concentrator' if args.concentrator else ''}; batches of"
            f" --max-tokens {args.max_tokens} ({batch_tokens:.0f} target tokens on average); warm-up {args.warmup}"
            f" updates, median of {args.repeats} interleaved repeats of {args.updates} updates per model")


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = shared_flags(args)
    gated = flags + pass_flags(args.target_heads, args.concentrator, args.fp16)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = [build_trainer(args.data, flags + stock_flags(args)), build_trainer(args.data, gated)]
        if args.kd:  # the teacher: the stock model, saved as a checkpoint (its weights do not change the cost)
            teacher = os.path.join(tmp, "teacher.pt")
            trainers[0].consolidate_optimizer()
            torch.save(trainers[0].state_dict(), teacher)
            trainers.append(build_trainer(args.data, gated + ["--kd-teacher", teacher]))
        batches = train_batches(trainers[0], args.updates)
        if not batches:
            fail(f"the train split of {args.data} is empty")
        seconds = time_updates(trainers, batches, Timer(torch.device(args.device)), args.warmup, args.repeats)
    tokens = sum(int(b["ntokens"]) for b in batches)
    rows = summarize(LABELS[:len(trainers)], seconds, args.updates, tokens)
    markdown = to_markdown(COLUMNS, rows, f"Settings: {settings_line(args, tokens / len(batches))}.")
    markdown += f"\n\nPASS update / stock update: {rows[1]['time_over_stock']}"
    if args.kd:
        markdown += (f"\nPASS + KD update / stock update: {rows[2]['time_over_stock']}; / PASS update:"
                     f" {round(rows[2]['time_over_stock'] / rows[1]['time_over_stock'], 3)}")
    print(markdown)
    write_tables(markdown, rows, args.markdown, args.csv)
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.bench_training
    sys.exit(main())
