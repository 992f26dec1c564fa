"""Inference benchmark: unpruned vs gated vs pruned models, side by side in one run.

From one gated checkpoint it writes (to ``--work-dir``) and loads: the unpruned model as a
stock fairseq ``transformer``, the gated model itself, pruned models at several K with the
checkpoint's own top-K mask (``topk``) and with the same K packed into as few modules as
possible (``packed``, what the concentrator aims for), and an attention-free model (every
attention module skipped) that gives T_noattn.

Every model decodes the same sentences with fairseq's ``SequenceGenerator`` (beam 5,
fixed output length, so every model does the same number of steps). Runs are interleaved
model by model within each repeat, after warm-up, and the median over repeats is reported.
Attention time comes from a second, instrumented pass per repeat: forward hooks around every
attention module plus the module's beam reordering of its key/value cache, with device
synchronisation on CUDA.

Per-module ideal of a pruned model: T_noattn + sum_m A_unpruned[m] * kept[m] / heads[m]; its
attention part alone, sum_m A_unpruned[m] * kept[m] / heads[m], is the ideal attention time
(what the mask allows: a decoder head costs more than an encoder head).
The table reports ratios (speed-ups against the unpruned model, time over ideal) and
throughputs; never single absolute times.
"""
import argparse
import csv
import io
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List, Optional

import torch

from pass_fairseq.errors import fail
from pass_fairseq.checkpoints import convert, load_checkpoint, save_atomic
from pass_fairseq.pruning import PruningError, gated_modules, packed_selection, select_heads

logger = logging.getLogger("pass_fairseq.bench")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_inference.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="gated (transformer_pass) checkpoint")
    p.add_argument("--data", help="data-bin directory (default: the one in the checkpoint's config)")
    p.add_argument("--subset", default="test", help="split to translate (default test)")
    p.add_argument("--sentences", type=int, default=256, help="first N sentences of the split (default 256)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--out-len", type=int, default=20, help="fixed output length in tokens (default 20)")
    p.add_argument("--heads", default="48,32,16,8", help="K values of the pruned models (default 48,32,16,8)")
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


class Timer:
    """Wall time with device synchronisation (CUDA work is asynchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class AttentionClock:
    """Adds up the time each attention module spends in its forward and in reordering its
    key/value cache for the beam (``reorder_incremental_state``, called by the generator
    between steps). The cache is attention's own work and grows with the kept heads, so
    it belongs to the module's attention time (and to its share of the ideal)."""

    def __init__(self, model, timer: Timer):
        self.timer = timer
        self.totals: Dict[str, float] = defaultdict(float)
        self.handles = []
        self.wrapped = []
        self.starts: Dict[str, float] = {}
        for name, module in attention_modules(model):
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))
            module.reorder_incremental_state = self._timed(name, module.reorder_incremental_state)
            self.wrapped.append(module)

    def _pre(self, name):
        def hook(module, args):
            self.starts[name] = self.timer.now()
        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.totals[name] += self.timer.now() - self.starts.pop(name)
        return hook

    def _timed(self, name, reorder):
        def timed_reorder(incremental_state, new_order):
            start = self.timer.now()
            result = reorder(incremental_state, new_order)
            self.totals[name] += self.timer.now() - start
            return result
        return timed_reorder

    def remove(self):
        for h in self.handles:
            h.remove()
        for module in self.wrapped:
            del module.reorder_incremental_state  # the instance attribute; the method shows again


def attention_modules(model):
    from fairseq.modules.multihead_attention import MultiheadAttention

    from pass_fairseq.models.transformer_pass_pruned import PrunedMultiheadAttention

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (MultiheadAttention, PrunedMultiheadAttention))]


def make_batches(task, subset: str, n: int, batch_size: int, device):
    """The first ``n`` sentences of ``subset``, in batches of similar source length."""
    from fairseq import utils

    task.load_dataset(subset)
    dataset = task.dataset(subset)
    ids = list(range(min(n, len(dataset))))
    ids.sort(key=lambda i: (dataset.src_sizes[i], i))
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = dataset.collater([dataset[i] for i in ids[start:start + batch_size]])
        batches.append(utils.move_to_cuda(batch, device=device) if device.type == "cuda" else batch)
    return batches, len(ids)


def decode(generator, model, batches) -> int:
    """Translate every batch; returns the number of output tokens of the best hypotheses."""
    tokens = 0
    with torch.inference_mode():
        for batch in batches:
            hypos = generator.generate([model], batch)
            tokens += sum(int(h[0]["tokens"].numel()) for h in hypos)
    return tokens


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    parser.error = lambda message: fail(message)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    try:
        ks = [int(k) for k in args.heads.split(",") if k.strip()]
    except ValueError:
        fail(f"--heads {args.heads}: give comma-separated integers, e.g. 48,32,16,8")
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if not set(layouts) <= {"topk", "packed"} or not layouts:
        fail(f"--layouts {args.layouts}: give topk, packed or both")
    if args.repeats < 1 or args.warmup < 0:
        fail("--repeats must be >= 1 and --warmup >= 0")

    state = load_checkpoint(args.checkpoint)
    sd = state.get("model") or {}
    prefixes = gated_modules(sd)
    if not prefixes:
        fail("no gates in this checkpoint: give one trained with a transformer_pass architecture")
    log_alphas = [sd[p + ".gate.log_alpha"] for p in prefixes]
    total = sum(la.numel() for la in log_alphas)
    heads_per = {p: sd[p + ".gate.log_alpha"].numel() for p in prefixes}
    for k in ks:
        if not 1 <= k <= total:
            fail(f"--heads: K={k} is out of range: the model has {total} heads, give 1..{total}")
    data = args.data or _cfg_get(state["cfg"]["task"], "data")
    from fairseq import utils

    first = utils.split_paths(str(data))[0]  # fairseq reads test data from the first folder
    if not os.path.isdir(first) or not any(f.startswith(args.subset + ".") and f.endswith(".idx")
                                           for f in os.listdir(first)):
        fail(f"no {args.subset} split in {data}: give the data-bin directory that has it with --data DIR")
    os.makedirs(args.work_dir, exist_ok=True)

    # ---- the models ----------------------------------------------------------------------
    variants = []  # (label, kind, path, kept or None)
    all_heads = {p: list(range(heads_per[p])) for p in prefixes}
    try:
        variants.append(("unpruned (stock transformer)", "unpruned", _write(state, args, "unpruned_stock.pt",
                                                                            fmt="stock", kept=all_heads), all_heads))
        variants.append(("gated (transformer_pass)", "gated", args.checkpoint, None))
        none = {p: [] for p in prefixes}
        variants.append(("no attention (all skipped)", "noattn", _write(state, args, "noattn.pt", kept=none), none))
        for k in ks:
            for layout in layouts:
                if layout == "topk":
                    kept = dict(zip(prefixes, select_heads(log_alphas, heads=k)))
                else:
                    kept = dict(zip(prefixes, packed_selection(log_alphas, k)))
                path = _write(state, args, f"pruned_k{k}_{layout}.pt", kept=kept)
                variants.append((f"pruned K={k} {layout}", "pruned", path, kept))
    except PruningError as e:
        fail(str(e))

    from fairseq import checkpoint_utils
    from fairseq.sequence_generator import SequenceGenerator

    from fairseq.dataclass.configs import GenerationConfig

    generation_cfg = argparse.Namespace(generation=GenerationConfig(beam=args.beam))
    loaded = []
    task = None
    for label, kind, path, kept in variants:
        models, _, t = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
        model = models[0].eval().to(device)
        model.prepare_for_inference_(generation_cfg)  # as fairseq-generate does: no unused attention weights
        task = task or t
        loaded.append(dict(label=label, kind=kind, path=path, kept=kept, model=model))
    batches, n_sent = make_batches(task, args.subset, args.sentences, args.batch_size, device)
    if n_sent == 0:
        fail(f"the {args.subset} split is empty")
    timer = Timer(device)

    for entry in loaded:  # a generator decodes with the models it was built with
        entry["generator"] = SequenceGenerator([entry["model"]], task.target_dictionary, beam_size=args.beam,
                                               max_len_a=0, max_len_b=args.out_len, min_len=args.out_len)

    # ---- timing: interleaved, warm-up first ----------------------------------------------
    for entry in loaded:
        entry.update(e2e=[], attn=[], per_module=defaultdict(list), tokens=0)
    for rep in range(args.warmup + args.repeats):
        timed = rep >= args.warmup
        for entry in loaded:
            gen = entry["generator"]
            t0 = timer.now()
            tokens = decode(gen, entry["model"], batches)
            t1 = timer.now()
            clock = AttentionClock(entry["model"], timer)
            decode(gen, entry["model"], batches)
            clock.remove()
            if timed:
                entry["e2e"].append(t1 - t0)
                entry["tokens"] = tokens
                entry["attn"].append(sum(clock.totals.values()))
                for name, secs in clock.totals.items():
                    entry["per_module"][name].append(secs)
        logger.info("repeat %d/%d done", rep + 1, args.warmup + args.repeats)

    # ---- results --------------------------------------------------------------------------
    med = statistics.median
    base = next(e for e in loaded if e["kind"] == "unpruned")
    noattn = next(e for e in loaded if e["kind"] == "noattn")
    t_base, a_base, t_noattn = med(base["e2e"]), med(base["attn"]), med(noattn["e2e"])
    a_base_mod = {name: med(v) for name, v in base["per_module"].items()}
    rows = []
    for e in loaded:
        t, a = med(e["e2e"]), med(e["attn"])
        kept = e["kept"]
        row = {
            "model": e["label"],
            "kept_heads": sum(len(v) for v in kept.values()) if kept is not None else total,
            "skipped_modules": sum(1 for v in kept.values() if not v) if kept is not None else 0,
            "params": param_count(e["model"]),
            "file_MB": round(os.path.getsize(e["path"]) / 2**20, 3),
            "sent_per_s": round(n_sent / t, 1),
            "tok_per_s": round(e["tokens"] / t, 1),
            "speedup": round(t_base / t, 3),
            "attn_speedup": round(a_base / a, 2) if a > 0 else float("inf"),
            "attn_share": round(a / t, 3),
            "ideal_attn_speedup": "",
            "ideal_speedup": "",
            "time_over_ideal": "",
        }
        if e["kind"] == "pruned":
            ideal_attn = sum(a_base_mod.get(p, 0.0) * len(kept[p]) / heads_per[p] for p in prefixes)
            ideal = t_noattn + ideal_attn
            row["ideal_attn_speedup"] = round(a_base / ideal_attn, 2)
            row["ideal_speedup"] = round(t_base / ideal, 3)
            row["time_over_ideal"] = round(t / ideal, 3)
        rows.append(row)

    settings = (f"device {device.type}, threads {torch.get_num_threads()}, {n_sent} sentences, batch {args.batch_size},"
                f" beam {args.beam}, {args.out_len}-token outputs, warm-up {args.warmup}, median of {args.repeats}"
                f" interleaved repeats; unpruned attention share {a_base / t_base:.3f};"
                f" T_noattn / T_unpruned {t_noattn / t_base:.3f}")
    markdown = to_markdown(rows, settings)
    print(markdown)
    md_path = args.markdown or os.path.join(args.work_dir, "bench.md")
    csv_path = args.csv or os.path.join(args.work_dir, "bench.csv")
    with open(md_path, "w") as f:
        f.write(markdown + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 0


COLUMNS = [
    ("model", "model"), ("kept_heads", "heads"), ("skipped_modules", "skipped modules"), ("params", "params"),
    ("file_MB", "file MB"), ("sent_per_s", "sent/s"), ("tok_per_s", "tok/s"), ("speedup", "speed-up"),
    ("attn_speedup", "attention speed-up"), ("attn_share", "attention share"),
    ("ideal_attn_speedup", "ideal attention speed-up"), ("ideal_speedup", "ideal speed-up"),
    ("time_over_ideal", "time / ideal"),
]


def to_markdown(rows, settings: str) -> str:
    out = io.StringIO()
    out.write(f"Settings: {settings}. Speed-ups are against the unpruned stock model (higher is faster);"
              " ideal = T_noattn + per-module unpruned attention time x kept/heads.\n\n")
    out.write("| " + " | ".join(title for _, title in COLUMNS) + " |\n")
    out.write("|" + "|".join("---" for _ in COLUMNS) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |\n")
    return out.getvalue().rstrip("\n")


def _cfg_get(part, key):
    return getattr(part, key, None) if not isinstance(part, dict) else part.get(key)


def _write(state, args, name, fmt="pruned", kept=None) -> str:
    path = os.path.join(args.work_dir, name)
    save_atomic(convert(state, fmt=fmt, kept=kept), path)
    return path
