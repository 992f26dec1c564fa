"""``pass-bench-inference GATED.pt [--heads 48,32,16,8] [--layouts topk,packed] [--batch-size 64,1] [--device cuda]``:
inference benchmark of unpruned, gated and pruned models, side by side in one run.
``--name A --also B=OTHER.pt --also C=THIRD.pt`` adds the pruned models of more gated
checkpoints of the same architecture (other methods, other seeds) to the same run, labelled
by name, so that their speed-ups are ratios from one run.

From one gated checkpoint it writes (to ``--work-dir``) and loads the unpruned model as a
stock fairseq ``transformer`` (``transformer_lm``, ``roberta``), the gated model itself,
pruned models at each K (top-K and packed masks) and an attention-free model
(:mod:`pass_fairseq.bench.variants`). Every model decodes the same sentences with fairseq's
``SequenceGenerator`` (beam 5, fixed output length) through its task's ``inference_step``:
a translation model translates the first sentences of the split, a language model
(``transformer_lm_pass*``) continues their first ``--prompt-len`` tokens, decoding
incrementally as fairseq generates; a sentence classifier (``roberta_pass``) runs its
encoder and classification head over them (no beam: ``--beam`` and ``--out-len`` do not
apply); models interleaved within each repeat, after warm-up; attention time comes from a
second, instrumented pass per repeat (:mod:`pass_fairseq.bench.timing`). The table gives
medians as speed-ups against the unpruned model and time over the per-module ideal
(definitions: :mod:`pass_fairseq.bench.summary`), one table per batch size with its
per-module cost model, printed and written to ``WORK_DIR/bench.md`` and ``bench.csv``
(a ``batch`` column tells the batch sizes apart).
"""
import argparse
import os
import sys
from typing import List, Optional, Tuple

import torch
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq.tasks.sentence_prediction import SentencePredictionTask

from pass_fairseq.bench.data import has_split, prompt_batches, sentence_batches
from pass_fairseq.bench.summary import COLUMNS, COST_COLUMNS, ModelTiming, cost_model, summarize
from pass_fairseq.bench.tables import to_markdown, write_tables
from pass_fairseq.bench.timing import Timer, time_classification, time_decoding
from pass_fairseq.bench.variants import (CHECKPOINT_NAME, CHECKPOINT_NAME_RULE, load_models, module_heads, param_count,
                                         same_architecture, write_variants)
from pass_fairseq.checkpoints import load_checkpoint
from pass_fairseq.cli import one_line_errors, parse_cli, parse_int_list
from pass_fairseq.errors import fail


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pass-bench-inference",
                                description="Inference benchmark of unpruned, gated and pruned models,"
                                            " side by side in one run.")
    p.add_argument("checkpoint", help="gated checkpoint (transformer_pass, transformer_lm_pass or roberta_pass)")
    p.add_argument("--data", help="data-bin directory (default: the one in the checkpoint's config)")
    p.add_argument("--subset", default="test", help="split to translate, or whose sentences give a language model its prompts (default test)")
    p.add_argument("--sentences", default="256",
                   help="first N sentences of the split; one value per --batch-size, or one for all (default 256)")
    p.add_argument("--batch-size", default="64",
                   help="sentences per batch; several (64,1: throughput and latency) give one table each, in one"
                        " run (default 64)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--out-len", type=int, default=20,
                   help="fixed output length in tokens (default 20); a language model generates them after its prompt")
    p.add_argument("--prompt-len", type=int, default=16,
                   help="language models: prompt tokens, the first P tokens of each sentence of the split"
                        " that has more (default 16)")
    p.add_argument("--name", default="",
                   help="label of this checkpoint's pruned models (beside --also's); default none")
    p.add_argument("--also", metavar="NAME=GATED.pt", action="append", default=[],
                   help="another gated checkpoint of the same architecture (repeatable): its own pruned models at"
                        " each K and layout, labelled NAME, timed in the same run against the same unpruned model")
    p.add_argument("--heads", default="48,32,16,8", dest="targets", metavar="K[,K...]", help="K values of the pruned models (default 48,32,16,8)")
    p.add_argument("--layouts", default="topk,packed",
                   help="masks per K: topk (the checkpoint's largest log_alpha) and/or packed (default both)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per model first (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--work-dir", default="bench_out", help="where the converted checkpoints and tables go")
    p.add_argument("--markdown", help="markdown table path (default WORK_DIR/bench.md)")
    p.add_argument("--csv", help="CSV path (default WORK_DIR/bench.csv)")
    return p


def parse_options(args):
    """(device, K values, layouts) from the flags, or a one-line error."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    targets = parse_int_list(args.targets, "--heads")
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if not set(layouts) <= {"topk", "packed"} or not layouts:
        fail(f"--layouts {args.layouts}: give topk, packed or both")
    if args.repeats < 1 or args.warmup < 0:
        fail("--repeats must be >= 1 and --warmup >= 0")
    if args.prompt_len < 1 or args.out_len < 1:
        fail("--prompt-len and --out-len must be at least 1")
    batch_sizes, sentences = parse_int_list(args.batch_size, "--batch-size"), parse_int_list(args.sentences, "--sentences")
    if len(sentences) == 1:
        sentences = sentences * len(batch_sizes)
    if len(sentences) != len(batch_sizes):
        fail(f"--sentences {args.sentences}: give one value, or one per --batch-size ({args.batch_size})")
    return device, targets, layouts, list(zip(batch_sizes, sentences))


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    device, targets, layouts, runs = parse_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    state = load_checkpoint(args.checkpoint)
    num_heads = module_heads(state)
    if not num_heads:
        fail("no gates in this checkpoint: give one trained with a gated architecture (transformer_pass*,"
             " transformer_lm_pass*, roberta_pass*)")
    total = sum(num_heads.values())
    for target_heads in targets:
        if not 1 <= target_heads <= total:
            fail(f"--heads: K={target_heads} is out of range: the model has {total} heads, give 1..{total}")
    data = args.data or _cfg_get(state["cfg"]["task"], "data")
    if not has_split(data, args.subset):
        fail(f"no {args.subset} split in {data}: give the data-bin directory that has it with --data DIR")
    os.makedirs(args.work_dir, exist_ok=True)
    others = load_others(args, state)
    variants = write_variants(state, args.checkpoint, targets, layouts, args.work_dir, args.name, others)
    models, task = load_models(variants, data, device, args.beam)
    language_model = isinstance(task, LanguageModelingTask)
    classifier = isinstance(task, SentencePredictionTask)
    prompt_len = args.prompt_len if language_model else 0
    if not classifier:  # a decoder's outputs must fit its positions
        positions = min(model.max_decoder_positions() for model in models)
        if prompt_len + args.out_len >= positions:
            fail(f"--prompt-len {prompt_len} plus --out-len {args.out_len} must stay below the model's {positions}"
                 " positions")
    parts, rows = [], []
    for batch_size, sentences in runs:
        if language_model:
            batches, n_sent = prompt_batches(task, data, args.subset, sentences, batch_size, prompt_len, device)
            if n_sent == 0:
                fail(f"no sentence of the {args.subset} split is longer than --prompt-len {prompt_len}")
        else:
            batches, n_sent = sentence_batches(task, args.subset, sentences, batch_size, device)
            if n_sent == 0:
                fail(f"the {args.subset} split is empty")
        if classifier:
            measured = time_classification(models, batches, Timer(device), args.warmup, args.repeats,
                                           task.cfg.classification_head_name)
        else:
            measured = time_decoding(models, task, batches, Timer(device), args.beam, args.out_len, args.warmup,
                                     args.repeats, prompt_len)
        timings = [ModelTiming(label=v.label, kind=v.kind, kept=None if v.kept is None else
                               {p: len(h) for p, h in v.kept.items()}, params=param_count(model),
                               file_bytes=os.path.getsize(v.path), **m)
                   for v, model, m in zip(variants, models, measured)]
        summary = summarize(timings, num_heads, n_sent)
        inputs = f"{n_sent} {prompt_len}-token prompts" if language_model else f"{n_sent} sentences"
        work = "the encoder's forward pass and classification head" if classifier else \
            f"beam {args.beam}, {args.out_len}-token outputs"
        settings = (f"device {device.type}, threads {torch.get_num_threads()}, {inputs}, batch {batch_size},"
                    f" {work}, warm-up {args.warmup}, median of"
                    f" {args.repeats} interleaved repeats; unpruned attention share {summary.base_attn_share:.3f};"
                    f" T_noattn / T_unpruned {summary.noattn_over_base:.3f}")
        parts.append(to_markdown(COLUMNS, summary.rows,
                                 f"### Batch {batch_size}\n\nSettings: {settings}. Speed-ups are against the unpruned"
                                 " stock model (higher is faster); ideal = T_noattn + per-module unpruned attention"
                                 " time x kept/heads."))
        parts.append(to_markdown(COST_COLUMNS, cost_model(timings, num_heads),
                                 f"Cost model at batch {batch_size}: one call of an attention module (a decoding step"
                                 " for the decoder's, with its cache reordering; one per batch for an encoder's),"
                                 " fitted over the pruned models' active modules as fixed + per head x kept heads."))
        rows += [dict(r, batch=batch_size) for r in summary.rows]
    markdown = "\n\n".join(parts)
    print(markdown)
    write_tables(markdown, rows, args.markdown or os.path.join(args.work_dir, "bench.md"),
                 args.csv or os.path.join(args.work_dir, "bench.csv"))
    return 0


def load_others(args, state: dict) -> List[Tuple[str, dict]]:
    """(name, state) of every ``--also NAME=GATED.pt``, or a one-line error: names are
    distinct file-name words, files are checkpoints of ``state``'s architecture."""
    if args.name and not CHECKPOINT_NAME.fullmatch(args.name):
        fail(f"--name {args.name}: give {CHECKPOINT_NAME_RULE} (it becomes part of a file name)")
    others, names = [], [args.name]
    for item in args.also:
        name, sep, path = item.partition("=")
        if not sep or not CHECKPOINT_NAME.fullmatch(name) or not path:
            fail(f"--also {item}: give NAME=GATED.pt, NAME of {CHECKPOINT_NAME_RULE}")
        if name in names:
            fail(f"--also {item}: the name {name} is used twice; give every checkpoint its own")
        other = load_checkpoint(path)
        other.pop("last_optimizer_state", None)  # not needed to prune it; kept until the end otherwise
        if not same_architecture(state, other):
            fail(f"--also {item}: its model's shapes differ from {args.checkpoint}'s; give checkpoints of one"
                 " architecture")
        names.append(name)
        others.append((name, other))
    return others


def _cfg_get(part, key):
    return getattr(part, key, None) if not isinstance(part, dict) else part.get(key)


if __name__ == "__main__":  # python -m pass_fairseq.cli.bench_inference
    sys.exit(main())
