#!/usr/bin/env python
"""The main job (`make demo`): PASS head pruning end to end on the offline de-en corpus.

Stages (each prints its wall time; a failed stage stops the demo with one line):

  1. corpus      bash scripts/prepare_deb_de_en.sh data/deb-de-en          (cached)
  2. base        fairseq-train: unpruned 6+6-layer, 4-head (72 heads) pre-norm
                 Transformer, width 128 / ffn 512, 2,400 updates          (cached)
  3. base eval   fairseq-generate, beam 5, test set, detokenized sacreBLEU  (cached)
  4. PASS        fine-tune the base with the PASS regulariser to exactly K heads
  5. PASS eval   prune the heads physically (scripts/prune_checkpoint.py) and score
                 the pruned model like the base
  6. gates       scripts/inspect_gates.py --plot: the heat map of kept heads
  7. report      printed and written to WORKDIR/report.md (and report.json)

    python scripts/demo.py [--heads K] [--concentrator] [--epochs E] [--workdir DIR]

The PASS stage always starts afresh from the cached base (its folder is wiped), so a
rerun measures the pruning itself. See the PASS_SCHEDULE comment for the schedule.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

#: the base model's topology: transformer_iwslt_de_en (6+6 layers, 4 heads, so 18
#: attention modules and 72 heads) at width 128 / ffn 512, pre-norm (much faster to
#: train than post-norm at this scale, ../shared/docs/cpu-budget.md)
WIDTH = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
         "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
         "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings"]
HEADS_TOTAL = 72

# PASS_SCHEDULE. The reference trains 30 epochs from scratch: lambda starts at 0.1 and
# doubles at each epoch start while the gates are off target, R is added once per update
# to the summed loss (weight lambda / tokens-per-update relative to the per-token loss),
# closed gates reopen at epoch starts, log_alpha is clipped to [-5, 5]. The CPU budget
# buys about one pass over the corpus (~540 updates in shards, ~11 min) for the fine-tune, so
# (measured on the 2,400-update base at K = 24):
# * --pass-reg-scaling token: R weighs lambda times one token's loss, so lambda 0.1
#   already moves the gates in the first updates (with "update" scaling, 1/3000 of that,
#   they would barely move in one pass);
# * short epochs: the training set is split into --shards 8 shards and fairseq reads one
#   shard per epoch, so an epoch is ~68 updates and the epoch-start schedule (lambda x2
#   while off target) runs 7 times in one pass instead of never;
# * --clip 10 (the plugin's default) instead of the reference's 5: a clipped gate has
#   q0 (or q1) = sigmoid(clip - 0.79), 0.985 at 5, so 48 closed gates leave
#   |N-K - sum q0| a deficit of 0.7 which one gate fills by sitting at log_alpha ~ -1.5
#   (deterministic z ~ 0.2): a stable kink of the regulariser that no lambda removes
#   (seen: 23 open + 1 non-binary from lambda 0.1 to 6.4). At 10 the deficit (0.005)
#   is filled only by a gate deep in the open or closed zone, so the gates end binary
#   with exactly K open;
# * gates start open (log_alpha 3, --pass-missing-gate-init: the base model unchanged)
#   and move ~--pass-gate-lr (0.2) per update under Adam: on target within 3 epochs
#   (~200 updates); the rest retrains the kept heads at the base's final learning rate
#   (~4.6e-4, fixed, 50 warm-up updates for the fresh Adam state);
# * no reopening (--reopen-until-epoch to enable it): in a fine-tune this short a
#   reopened gate costs more recovery than it brings;
# * --concentrator (PASSCONC) is on for epochs 3-5 only (--conc-epochs), as the reference
#   switches it on late: on from the first update (all gates open, its weight at the cap
#   500) it closed 60 of 72 gates within 50 updates, left 3 full modules (12 heads) and
#   no module could reopen against it (K = 16 never reached in 8 epochs). From epoch 3
#   it starts at the target and ends with epochs to settle (K = 16: 6 of 18 modules);
# * --best-checkpoint-metric pass_loss: checkpoint_best.pt is the on-target checkpoint
#   (binary gates, exactly K open) with the best validation loss, never an off-target one.
PASS_DEFAULTS = dict(lambda_init=0.1, lambda_factor=2.0, gate_lr=0.2, shards=8, epochs=8, reopen_until_epoch=0,
                     clip=10.0, lr=5e-4, warmup=50, conc_epochs="3-5")

STAGES = ("corpus", "base", "base eval", "PASS fine-tune", "PASS eval", "gates", "report")


class StageError(Exception):
    pass


# ---- running commands -----------------------------------------------------------------

#: console noise (the full output still goes to the log): Python warnings, hydra's
#: deprecation notes, fairseq's one-line config dump and the model printout
_NOISE = re.compile(r"Warning:|^See https://hydra|^The version_base|^Please specify a compat|^Will assume default"
                    r"|^'config' is validated|^This behavior is deprecated|^The strict flag|^DEBUG:hydra"
                    r"|tensorboardX|\{'_name': |can_reuse_epoch_itr|reuse_dataloader = |rebuild_batches = |^\)$")


def run(cmd, log_path=None, append=False, show=True):
    """Run ``cmd`` from the repository root, echo its output (without Python warnings,
    long lines cut) and copy all of it to ``log_path``. Returns the exit status."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    log = open(log_path, "a" if append else "w", encoding="utf-8") if log_path else None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env, errors="replace")
    except OSError as e:
        if log:
            log.close()
        raise StageError(f"cannot start {cmd[0]}: {e}")
    tail = []
    for line in proc.stdout:
        if log:
            log.write(line)
        text = line.rstrip("\n")
        tail = (tail + [text])[-15:]
        if show and text.strip() and not text[0].isspace() and not _NOISE.search(text):
            print(text if len(text) <= 240 else text[:237] + "...", flush=True)
    rc = proc.wait()
    if log:
        log.close()
    if rc != 0:
        print("\n".join("  | " + t for t in tail[-10:]), file=sys.stderr)
    return rc


def check(rc, what, log_path=None):
    if rc != 0:
        where = f"; full log: {rel(log_path)}" if log_path else ""
        raise StageError(f"{what} failed (exit status {rc}){where}")


def tool(name):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        raise StageError(f"{name} not found next to {sys.executable}: run 'make demo' (it installs .venv)")
    return path


# ---- stages ---------------------------------------------------------------------------

def stage_corpus(args, info):
    corpus = args.corpus
    env_ok = os.path.isfile(os.path.join(corpus, ".complete"))
    cmd = ["bash", "scripts/prepare_deb_de_en.sh", corpus]
    os.environ.setdefault("PYTHON", sys.executable)
    os.environ.setdefault("FAIRSEQ_PREPROCESS", os.path.join(BIN, "fairseq-preprocess"))
    check(run(cmd), "building the corpus (scripts/prepare_deb_de_en.sh)")
    info["cached"] = env_ok
    with open(os.path.join(corpus, "counts.json"), encoding="utf-8") as f:
        counts = json.load(f)
    info["counts"] = {split: counts["splits"][split]["total"] for split in ("train", "valid", "test")}


def base_command(args):
    return [tool("fairseq-train"), os.path.join(args.corpus, "data-bin"), "--user-dir", "pass_fairseq",
            "--task", "translation_pass", "--arch", "transformer_iwslt_de_en", *WIDTH,
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-3",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "500", "--max-tokens", "4096",
            "--max-update", str(args.base_updates), "--dropout", "0.1", "--save-dir", args.base_dir,
            "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50", "--seed", "1",
            "--num-workers", "0"]


def _command_key(cmd):
    """The command without the interpreter-dependent path of fairseq-train."""
    return [os.path.basename(cmd[0])] + cmd[1:]


_DONE = re.compile(r"done training in ([0-9.]+) seconds")


def stage_base(args, info):
    cmd = base_command(args)
    marker = os.path.join(args.base_dir, "demo-done.json")
    ckpt = os.path.join(args.base_dir, "checkpoint_last.pt")
    log_path = os.path.join(args.base_dir, "train.log")
    info["checkpoint"] = ckpt
    info["log"] = log_path
    if os.path.isfile(ckpt) and os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("command") == _command_key(cmd):
            info.update(cached=True, train_seconds=done.get("seconds"))
            print(f"base model cached at {ckpt} (trained in {fmt_time(done.get('seconds'))})")
            return
        print("base training settings changed: resuming/extending it with the new command")
    elif os.path.isfile(ckpt) and os.path.isfile(log_path):
        # A base trained with this exact command outside the demo: adopt it if it finished.
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = _DONE.findall(text)
        if found and f"'max_update': {args.base_updates}," in text:
            write_json(marker, {"command": _command_key(cmd), "seconds": float(found[-1])})
            info.update(cached=True, train_seconds=float(found[-1]))
            print(f"base model cached at {ckpt} (trained in {fmt_time(float(found[-1]))})")
            return
        age = time.time() - os.path.getmtime(log_path)
        if age < 180:
            raise StageError(f"a base training seems to be running already ({log_path} written {age:.0f} s"
                             f" ago, no 'done training' yet): wait for it to finish, then rerun")
        print(f"resuming the interrupted base training from {ckpt}")
    os.makedirs(args.base_dir, exist_ok=True)
    start = time.time()
    check(run(cmd, log_path, append=True), "base training (fairseq-train)", log_path)
    if not os.path.isfile(ckpt):
        raise StageError(f"base training wrote no {ckpt}")
    write_json(marker, {"command": _command_key(cmd), "seconds": time.time() - start})
    info.update(cached=False, train_seconds=time.time() - start)


def generate(args, ckpt, out_dir, name):
    """Beam-5 fairseq-generate on the test set; returns the detokenized hypotheses in
    test-set order and the seconds it took."""
    os.makedirs(out_dir, exist_ok=True)
    # --required-batch-size-multiple 1: with fairseq's default 8, a fixed --batch-size larger
    # than the set drops the remainder (100 sentences at batch size 128 gave 96 hypotheses).
    # --max-len-a/b cap runaway hypotheses (the whole test set takes ~30 s at width 128).
    cmd = [tool("fairseq-generate"), os.path.join(args.corpus, "data-bin"), "--user-dir", "pass_fairseq",
           "--path", ckpt, "--gen-subset", "test", "--beam", "5", "--remove-bpe", "sentencepiece",
           "--batch-size", str(args.eval_batch_size), "--required-batch-size-multiple", "1",
           "--max-len-a", "1.2", "--max-len-b", "10", "--results-path", out_dir, "--num-workers", "0",
           "--log-format", "simple", "--log-interval", "4"]
    log_path = os.path.join(out_dir, f"generate-{name}.log")
    start = time.time()
    check(run(cmd, log_path), f"fairseq-generate on {rel(ckpt)}", log_path)
    seconds = time.time() - start
    hyps = {}
    with open(os.path.join(out_dir, "generate-test.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("D-"):
                parts = line.rstrip("\n").split("\t")
                hyps[int(parts[0][2:])] = parts[2] if len(parts) > 2 else ""
    return hyps, seconds


def score(args, hyps, out_dir):
    """Detokenized sacreBLEU against the raw references, overall and per source."""
    import sacrebleu

    raw = os.path.join(args.corpus, "raw")
    with open(os.path.join(raw, "test.en"), encoding="utf-8") as f:
        refs = [line.rstrip("\n") for line in f]
    origins = None
    if os.path.isfile(os.path.join(raw, "test.origin")):
        with open(os.path.join(raw, "test.origin"), encoding="utf-8") as f:
            origins = [line.strip() for line in f]
    if len(hyps) != len(refs) or sorted(hyps) != list(range(len(refs))):
        raise StageError(f"fairseq-generate gave {len(hyps)} hypotheses for {len(refs)} test references")
    ordered = [hyps[i] for i in range(len(refs))]
    with open(os.path.join(out_dir, "hyp.test.en"), "w", encoding="utf-8") as f:
        f.writelines(h + "\n" for h in ordered)
    bleu = sacrebleu.BLEU()
    result = {"sacrebleu": round(bleu.corpus_score(ordered, [refs]).score, 2),
              "signature": str(bleu.get_signature()), "sentences": len(refs), "by_origin": {}}
    if origins and len(origins) == len(refs):
        for origin in sorted(set(origins)):
            idx = [i for i, o in enumerate(origins) if o == origin]
            result["by_origin"][origin] = round(
                sacrebleu.corpus_bleu([ordered[i] for i in idx], [[refs[i] for i in idx]]).score, 2)
    return result


def stage_base_eval(args, info, base):
    ckpt = base["checkpoint"]
    out_dir = os.path.join(args.base_dir, "eval")
    cache = os.path.join(out_dir, "result.json")
    st = os.stat(ckpt)
    stamp = {"checkpoint": ckpt, "size": st.st_size, "mtime": st.st_mtime, "eval_batch_size": args.eval_batch_size}
    if os.path.isfile(cache):
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("stamp") == stamp:
            info.update(cached["result"], cached=True, generate_seconds=cached.get("generate_seconds"))
            print(f"base evaluation cached: sacreBLEU {cached['result']['sacrebleu']}")
            return
    hyps, seconds = generate(args, ckpt, out_dir, "base")
    result = score(args, hyps, out_dir)
    write_json(cache, {"stamp": stamp, "result": result, "generate_seconds": seconds})
    info.update(result, cached=False, generate_seconds=seconds)
    print(f"base: test sacreBLEU {result['sacrebleu']} ({fmt_by_origin(result)})")


def build_shards(args):
    """Split the training set into ``args.shards`` random shards (WORKDIR/shardsN/shardI,
    cached) so that one fairseq epoch of the PASS fine-tune is one shard: fairseq reads
    the training data of epoch e from the ((e - 1) mod N)-th of the colon-separated data
    folders, and valid data and dictionaries from the first. Returns the data argument."""
    src = os.path.join(args.corpus, "data-bin")
    out = os.path.join(args.workdir, f"shards{args.shards}")
    if args.shards == 1:
        return src
    dirs = [os.path.join(out, f"shard{i}") for i in range(args.shards)]
    data_arg = ":".join(dirs)
    files = sorted(f for f in os.listdir(src) if f.startswith(("train.", "valid.", "dict.")))
    stamp = {f: os.path.getsize(os.path.join(src, f)) for f in files}
    marker = os.path.join(out, "demo-shards.json")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            if json.load(f) == stamp:
                return data_arg
    import numpy as np
    from fairseq.data import indexed_dataset

    start = time.time()
    if os.path.isdir(out):
        shutil.rmtree(out)
    for d in dirs:
        os.makedirs(d)
        for f in files:
            if not f.startswith("train."):
                shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
    prefixes = sorted({f.rsplit(".", 1)[0] for f in files if f.startswith("train.")})  # train.de-en.de, ...
    assign = None
    for prefix in prefixes:
        data = indexed_dataset.MMapIndexedDataset(os.path.join(src, prefix))
        if assign is None:
            order = np.random.RandomState(args.seed).permutation(len(data))
            assign = np.empty(len(data), dtype=np.int64)
            assign[order] = np.arange(len(data)) % args.shards
        with open(os.path.join(src, "dict." + prefix.rsplit(".", 1)[1] + ".txt"), encoding="utf-8") as f:
            vocab = sum(1 for _ in f) + 4
        for i, d in enumerate(dirs):
            target = os.path.join(d, prefix)
            builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(target), "mmap", vocab_size=vocab)
            for idx in np.nonzero(assign == i)[0]:
                builder.add_item(data[int(idx)])
            builder.finalize(indexed_dataset.index_file_path(target))
    write_json(marker, stamp)
    print(f"training set split into {args.shards} shards of about {len(assign) // args.shards} pairs"
          f" in {rel(out)} ({time.time() - start:.1f} s)")
    return data_arg


def pass_command(args, base_ckpt):
    cmd = [tool("fairseq-train"), build_shards(args), "--user-dir", "pass_fairseq",
           "--task", "translation_pass", "--arch", "transformer_pass_iwslt", *WIDTH,
           "--finetune-from-model", base_ckpt,
           "--criterion", "pass_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
           "--pass-target-heads", str(args.heads), "--pass-reg-scaling", "token",
           "--pass-lambda-init", str(args.lambda_init),
           "--optimizer", "pass_adam", "--adam-betas", "(0.9,0.98)", "--pass-gate-lr", str(args.gate_lr),
           "--lr", str(args.lr), "--lr-scheduler", "fixed", "--warmup-updates", str(args.warmup),
           "--max-tokens", "4096", "--max-epoch", str(args.epochs), "--dropout", "0.1",
           "--pass-lambda-factor", str(args.lambda_factor),
           "--pass-clip-min", str(-args.clip), "--pass-clip-max", str(args.clip),
           "--best-checkpoint-metric", "pass_loss",
           "--save-dir", args.pass_dir, "--no-epoch-checkpoints",
           "--log-format", "simple", "--log-interval", "25", "--seed", str(args.seed), "--num-workers", "0"]
    if args.reopen_until_epoch >= 2:
        cmd += ["--pass-reopen-until-epoch", str(args.reopen_until_epoch)]
    else:
        cmd += ["--pass-no-reopen"]
    if args.max_update:
        cmd += ["--max-update", str(args.max_update)]
    if args.concentrator:
        first, last = args.conc_epochs
        cmd += ["--pass-concentrator", "--pass-conc-start-epoch", str(first), "--pass-conc-end-epoch", str(last)]
    return cmd


def stage_pass(args, info, base):
    if os.path.isdir(args.pass_dir):
        shutil.rmtree(args.pass_dir)
    os.makedirs(args.pass_dir)
    log_path = os.path.join(args.pass_dir, "train.log")
    cmd = pass_command(args, base["checkpoint"])
    start = time.time()
    check(run(cmd, log_path), "PASS fine-tune (fairseq-train)", log_path)
    info.update(train_seconds=time.time() - start, log=log_path)
    best = os.path.join(args.pass_dir, "checkpoint_best.pt")
    if not os.path.isfile(best):
        raise StageError(f"the PASS fine-tune never validated with exactly {args.heads} binary gates (no "
                         f"{rel(best)}): train longer (--epochs) or raise --lambda-init;"
                         f" log: {rel(log_path)}")
    info["checkpoint"] = best
    with open(log_path, encoding="utf-8", errors="replace") as f:
        info["updates"] = max([int(m) for m in re.findall(r"num_updates (\d+)", f.read())] or [0])


def stage_pass_eval(args, info, pruned):
    pruned_ckpt = os.path.join(args.pass_dir, "pruned.pt")
    start = time.time()
    check(run([sys.executable, "scripts/prune_checkpoint.py", pruned["checkpoint"], pruned_ckpt,
               "--heads", str(args.heads)]), "removing the pruned heads (scripts/prune_checkpoint.py)")
    info["convert_seconds"] = time.time() - start
    info["checkpoint"] = pruned_ckpt
    out_dir = os.path.join(args.pass_dir, "eval")
    hyps, seconds = generate(args, pruned_ckpt, out_dir, "pruned")
    result = score(args, hyps, out_dir)
    write_json(os.path.join(out_dir, "result.json"), {"result": result, "generate_seconds": seconds})
    info.update(result, generate_seconds=seconds)
    print(f"pruned: test sacreBLEU {result['sacrebleu']} ({fmt_by_origin(result)})")


def stage_gates(args, info, tuned):
    png = os.path.join(args.pass_dir, "gates.png")
    cmd = [sys.executable, "scripts/inspect_gates.py", tuned["checkpoint"], "--json", "--plot", png]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise StageError(f"scripts/inspect_gates.py failed: {last}")
    report = json.loads(proc.stdout)
    write_json(os.path.join(args.pass_dir, "gates.json"), report)
    info.update(report=report, picture=png)
    print(f"gates: {report['kept']} of {report['heads_total']} heads kept ({report['open']} open,"
          f" {report['closed']} closed, {report['nonbinary']} non-binary), {report['modules_active']}"
          f" of {report['modules_total']} attention modules active; picture: {rel(png)}")
    if report["kept"] != args.heads or report["nonbinary"]:
        raise StageError(f"the selected checkpoint keeps {report['kept']} heads with {report['nonbinary']}"
                         f" non-binary gates, not exactly {args.heads}")


# ---- report ---------------------------------------------------------------------------

def rel(path):
    """``path`` relative to the repository root when it is inside it."""
    r = os.path.relpath(os.path.abspath(path), ROOT)
    return os.path.abspath(path) if r.startswith("..") else r


def fmt_time(seconds):
    if seconds is None:
        return "?"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def fmt_by_origin(result):
    return ", ".join(f"{k} {v}" for k, v in result.get("by_origin", {}).items()) or "no per-source split"


def write_json(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def placement_table(report):
    """Markdown table: kept head indices per module kind (rows) and layer (columns)."""
    kinds = (("encoder", "self_attn", "encoder self"), ("decoder", "self_attn", "decoder self"),
             ("decoder", "encoder_attn", "decoder cross"))
    cells, layers = {}, 0
    for m in report["modules"]:
        parts = m["name"].split(".")
        if len(parts) == 4:
            cells[(parts[0], parts[3], int(parts[2]))] = m["kept"]
            layers = max(layers, int(parts[2]) + 1)
    lines = ["| module | " + " | ".join(f"layer {i}" for i in range(layers)) + " | kept |",
             "|---" * (layers + 2) + "|"]
    for side, attn, label in kinds:
        row = [cells.get((side, attn, i)) for i in range(layers)]
        shown = [(",".join(map(str, r)) if r else "-") if r is not None else "" for r in row]
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {sum(len(r or []) for r in row)} |")
    return lines


def build_report(args, stages, times, total):
    corpus, base, base_eval = stages["corpus"], stages["base"], stages["base eval"]
    tune, pruned, gates = stages["PASS fine-tune"], stages["PASS eval"], stages["gates"]
    report = gates["report"]
    method = "PASSCONC" if args.concentrator else "PASS"
    c = corpus.get("counts", {})
    lines = [
        f"# PASS demo: {method}, K = {args.heads} of {HEADS_TOTAL} heads",
        "",
        f"Corpus: offline Debian de-en ({c.get('train', '?')} train / {c.get('valid', '?')} valid /"
        f" {c.get('test', '?')} test pairs). Model: transformer_iwslt_de_en topology (6+6 layers,"
        f" 4 heads), width 128 / ffn 512, pre-norm; base {args.base_updates} updates; {method} fine-tune"
        f" {tune.get('updates', '?')} updates ({args.epochs} epochs of 1/{args.shards} of the corpus, lambda"
        f" {args.lambda_init} x{args.lambda_factor:g} per off-target epoch, token scaling, gate lr {args.gate_lr},"
        f" clip {args.clip:g}).",
        "",
        "| model | heads | test sacreBLEU | " + " | ".join(base_eval.get("by_origin", {})) + " |",
        "|---|---|---|" + "---|" * len(base_eval.get("by_origin", {})),
        f"| base | {HEADS_TOTAL} | {base_eval['sacrebleu']} | "
        + " | ".join(str(v) for v in base_eval.get("by_origin", {}).values()) + " |",
        f"| pruned | {report['kept']} | {pruned['sacrebleu']} | "
        + " | ".join(str(pruned.get("by_origin", {}).get(k, "")) for k in base_eval.get("by_origin", {})) + " |",
        "",
        f"BLEU change: {pruned['sacrebleu'] - base_eval['sacrebleu']:+.2f} "
        f"(beam 5, detokenized sacreBLEU `{base_eval.get('signature', '')}`).",
        "",
        f"Kept heads: {report['kept']} of {report['heads_total']} (open {report['open']}, closed"
        f" {report['closed']}, non-binary {report['nonbinary']}); attention modules active"
        f" {report['modules_active']} of {report['modules_total']}. Kept head indices per module:",
        "",
        *placement_table(report),
        "",
        "| stage | wall time | note |",
        "|---|---|---|",
    ]
    notes = {
        "corpus": "cached" if corpus.get("cached") else "built",
        "base": ("cached, trained in " + fmt_time(base.get("train_seconds"))) if base.get("cached") else "trained",
        "base eval": ("cached, generated in " + fmt_time(base_eval.get("generate_seconds")))
        if base_eval.get("cached") else f"fairseq-generate {fmt_time(base_eval.get('generate_seconds'))}",
        "PASS fine-tune": f"{tune.get('updates', '?')} updates",
        "PASS eval": f"conversion {fmt_time(pruned.get('convert_seconds'))}, fairseq-generate"
                     f" {fmt_time(pruned.get('generate_seconds'))}",
        "gates": "",
    }
    for name in STAGES[:-1]:
        lines.append(f"| {name} | {fmt_time(times.get(name))} | {notes.get(name, '')} |")
    lines += [
        f"| total | {fmt_time(total)} | |",
        "",
        "Files:",
        f"- base checkpoint: `{rel(base['checkpoint'])}`, log `{rel(base['log'])}`",
        f"- PASS checkpoint (best on-target): `{rel(tune['checkpoint'])}`, log `{rel(tune['log'])}`",
        f"- pruned checkpoint (heads removed): `{rel(pruned['checkpoint'])}`",
        f"- translations: `{rel(os.path.join(args.base_dir, 'eval', 'hyp.test.en'))}`,"
        f" `{rel(os.path.join(args.pass_dir, 'eval', 'hyp.test.en'))}`",
        f"- gate picture: `{rel(gates['picture'])}`, gates `{rel(os.path.join(args.pass_dir, 'gates.json'))}`",
    ]
    return "\n".join(lines) + "\n"


# ---- main -----------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heads", type=int, default=24, metavar="K", help="heads to keep, of 72 (default 24)")
    p.add_argument("--concentrator", action="store_true", help="PASSCONC: pack the kept heads into few modules")
    p.add_argument("--conc-epochs", default=PASS_DEFAULTS["conc_epochs"], metavar="A-B",
                   help="with --concentrator: the epochs it is on, first-last (default %(default)s: after PASS"
                        " alone has reached the target, with epochs left to settle)")
    p.add_argument("--shards", type=int, default=PASS_DEFAULTS["shards"],
                   help="the PASS fine-tune splits the training set into this many shards; one epoch is"
                        " one shard (default %(default)s: ~68 updates an epoch)")
    p.add_argument("--epochs", type=int, default=PASS_DEFAULTS["epochs"],
                   help="epochs (shards) of the PASS fine-tune (default %(default)s)")
    p.add_argument("--max-update", type=int, default=0, metavar="N",
                   help="also stop the PASS fine-tune after N updates")
    p.add_argument("--lambda-init", type=float, default=PASS_DEFAULTS["lambda_init"],
                   help="initial PASS weight lambda (token scaling; default %(default)s)")
    p.add_argument("--lambda-factor", type=float, default=PASS_DEFAULTS["lambda_factor"],
                   help="lambda is multiplied by this at each epoch start while off target (default %(default)s)")
    p.add_argument("--reopen-until-epoch", type=int, default=PASS_DEFAULTS["reopen_until_epoch"], metavar="E",
                   help="reopen closed gates at the starts of epochs 2..E (default %(default)s: never)")
    p.add_argument("--clip", type=float, default=PASS_DEFAULTS["clip"],
                   help="log_alpha is clamped to [-C, C] after every update (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fine-tune and of the shards (default 1)")
    p.add_argument("--gate-lr", type=float, default=PASS_DEFAULTS["gate_lr"],
                   help="Adam learning rate of the gates (default %(default)s)")
    p.add_argument("--lr", type=float, default=PASS_DEFAULTS["lr"],
                   help="learning rate of the other weights during the fine-tune (default %(default)s)")
    p.add_argument("--warmup", type=int, default=PASS_DEFAULTS["warmup"],
                   help="warm-up updates of the fine-tune (default %(default)s)")
    p.add_argument("--workdir", default="data/demo", help="checkpoints, logs and report (default data/demo)")
    p.add_argument("--corpus", default="data/deb-de-en", help="the offline corpus (default data/deb-de-en)")
    p.add_argument("--base-updates", type=int, default=2400, help="updates of the base training (default 2400)")
    p.add_argument("--eval-batch-size", type=int, default=128, help="fairseq-generate --batch-size (default 128)")
    args = p.parse_args(argv)
    if not 1 <= args.heads <= HEADS_TOTAL:
        p.error(f"--heads must be between 1 and {HEADS_TOTAL}")
    if args.epochs < 1 or args.shards < 1:
        p.error("--epochs and --shards must be at least 1")
    text = args.conc_epochs
    try:
        args.conc_epochs = tuple(int(e) for e in text.split("-"))
        if len(args.conc_epochs) != 2 or not 1 <= args.conc_epochs[0] <= args.conc_epochs[1]:
            raise ValueError
    except ValueError:
        p.error(f"--conc-epochs {text}: give two epochs FIRST-LAST with FIRST <= LAST, e.g. 3-5")
    args.base_dir = os.path.join(args.workdir, "base")
    args.pass_dir = os.path.join(args.workdir, f"pass{'conc' if args.concentrator else ''}-k{args.heads}")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    os.makedirs(args.workdir, exist_ok=True)
    stages, times = {name: {} for name in STAGES}, {}
    steps = [
        ("corpus", lambda: stage_corpus(args, stages["corpus"])),
        ("base", lambda: stage_base(args, stages["base"])),
        ("base eval", lambda: stage_base_eval(args, stages["base eval"], stages["base"])),
        ("PASS fine-tune", lambda: stage_pass(args, stages["PASS fine-tune"], stages["base"])),
        ("PASS eval", lambda: stage_pass_eval(args, stages["PASS eval"], stages["PASS fine-tune"])),
        ("gates", lambda: stage_gates(args, stages["gates"], stages["PASS fine-tune"])),
    ]
    t0 = time.time()
    for number, (name, fn) in enumerate(steps, 1):
        print(f"\n=== demo stage {number}/{len(STAGES)}: {name} ===", flush=True)
        start = time.time()
        try:
            fn()
        except StageError as e:
            print(f"\ndemo: error: stage {number} ({name}): {e}", file=sys.stderr, flush=True)
            return 1
        except Exception as e:  # a bug or an unexpected file: the traceback, then one line
            import traceback

            traceback.print_exc()
            print(f"\ndemo: error: stage {number} ({name}): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print(f"\ndemo: interrupted in stage {number} ({name})", file=sys.stderr, flush=True)
            return 130
        times[name] = time.time() - start
        print(f"=== {name}: {fmt_time(times[name])} ===", flush=True)
    print(f"\n=== demo stage {len(STAGES)}/{len(STAGES)}: report ===", flush=True)
    text = build_report(args, stages, times, time.time() - t0)
    path = os.path.join(args.workdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    write_json(os.path.join(args.workdir, "report.json"),
               {"args": {k: v for k, v in vars(args).items()}, "times": times, "stages": stages})
    print("\n" + text)
    print(f"report written to {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
