"""The main job (`make demo`): PASS head pruning end to end on the offline de-en corpus.

Stages (each prints its wall time; a failed stage stops the demo with one line):

  1. corpus      bash scripts/prepare_deb_de_en.sh data/deb-de-en          (cached)
  2. base        fairseq-train: unpruned 6+6-layer, 4-head (72 heads) pre-norm
                 Transformer, width 128 / ffn 512, 2,400 updates          (cached)
  3. base eval   fairseq-generate, beam 5, test set, detokenized sacreBLEU  (cached)
  4. control     the equal-budget control: the base fine-tuned with the very same
                 command (shards, epochs, learning rate, seed) but no gates and no
                 pruning, then scored like the base                          (cached)
  5. PASS        fine-tune the base with the PASS regulariser to exactly K heads
  6. PASS eval   prune the heads physically (pass-prune-checkpoint) and score the
                 pruned model like the base
  7. gates       pass-inspect-gates --plot: the heat map of kept heads
  8. report      printed and written to WORKDIR/report.md (and report.json); the pruned
                 model is compared with the control (what the extra updates alone give)
                 and with the base

    python -m pass_fairseq.experiments.demo [--heads K] [--concentrator] [--epochs E] [--workdir DIR]

The PASS stage always starts afresh from the cached base (its folder is wiped), so a
rerun measures the pruning itself. The control does not depend on K or the concentrator:
it is trained once per fine-tune setting and reused. The commands are
:mod:`pass_fairseq.experiments.recipes`'s (the sweep's too); the schedule and its reasons:
docs/demo.md.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pass_fairseq
from pass_fairseq.experiments.evaluation import generate, score
from pass_fairseq.experiments.jobs import JobError, check, run, tool
from pass_fairseq.experiments.recipes import (HEADS_TOTAL, Finetune, PassSchedule, base_command, finetune_command,
                                               pass_method_flags)
from pass_fairseq.experiments.shards import build_shards
from pass_fairseq.experiments.train_logs import last_update
from pass_fairseq.files import atomic_write, write_json
from pass_fairseq.gate_report import MODULE_KINDS, kept_heads

#: the repository root: scripts/prepare_deb_de_en.sh and the default data/ folders are under it
ROOT = os.path.dirname(pass_fairseq.PLUGIN_DIR)

#: the demo's defaults: the fine-tune budget and PASS schedule of the recipes (the sweep's too),
#: 8 shards (so 8 short epochs), and the concentrator's epochs with --concentrator
BUDGET, SCHEDULE = Finetune(), PassSchedule()
SHARDS, CONC_EPOCHS = 8, "3-5"

STAGES = ("corpus", "base", "base eval", "control", "PASS fine-tune", "PASS eval", "gates", "report")


# ---- stages ---------------------------------------------------------------------------

def stage_corpus(args, info):
    corpus = args.corpus
    env_ok = os.path.isfile(os.path.join(corpus, ".complete"))
    cmd = ["bash", "scripts/prepare_deb_de_en.sh", corpus]
    os.environ.setdefault("PYTHON", sys.executable)
    os.environ.setdefault("FAIRSEQ_PREPROCESS", os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess"))
    check(run(cmd), "building the corpus (scripts/prepare_deb_de_en.sh)")
    info["cached"] = env_ok
    with open(os.path.join(corpus, "counts.json"), encoding="utf-8") as f:
        counts = json.load(f)
    info["counts"] = {split: counts["splits"][split]["total"] for split in ("train", "valid", "test")}


def demo_base_command(args):
    return base_command(os.path.join(args.corpus, "data-bin"), args.base_dir, args.base_updates)


def _command_key(cmd):
    """The command without the interpreter-dependent path of fairseq-train."""
    return [os.path.basename(cmd[0])] + cmd[1:]


_DONE = re.compile(r"done training in ([0-9.]+) seconds")


def stage_base(args, info):
    cmd = demo_base_command(args)
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
            raise JobError(f"a base training seems to be running already ({log_path} written {age:.0f} s"
                           f" ago, no 'done training' yet): wait for it to finish, then rerun")
        print(f"resuming the interrupted base training from {ckpt}")
    os.makedirs(args.base_dir, exist_ok=True)
    start = time.time()
    check(run(cmd, log_path, append=True), "base training (fairseq-train)", log_path)
    if not os.path.isfile(ckpt):
        raise JobError(f"base training wrote no {ckpt}")
    write_json(marker, {"command": _command_key(cmd), "seconds": time.time() - start})
    info.update(cached=False, train_seconds=time.time() - start)


def evaluate(args, ckpt, out_dir):
    """Translate the test set with ``ckpt`` and score it (pass_fairseq.experiments.evaluation); returns
    the result and the seconds fairseq-generate took."""
    hyps, seconds = generate(os.path.join(args.corpus, "data-bin"), ckpt, out_dir, args.eval_batch_size)
    return score(hyps, os.path.join(args.corpus, "raw"), out_dir), seconds


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
    result, seconds = evaluate(args, ckpt, out_dir)
    write_json(cache, {"stamp": stamp, "result": result, "generate_seconds": seconds})
    info.update(result, cached=False, generate_seconds=seconds)
    print(f"base: test sacreBLEU {result['sacrebleu']} ({fmt_by_origin(result)})")


def pass_data(args):
    """The PASS fine-tune's data argument: the training set in ``args.shards`` shards
    (WORKDIR/shardsN, cached), one per fairseq epoch (pass_fairseq.experiments.shards)."""
    out = os.path.join(args.workdir, f"shards{args.shards}")
    start = time.time()
    shards = build_shards(os.path.join(args.corpus, "data-bin"), out, args.shards, args.seed)
    if shards.built:
        print(f"training set split into {args.shards} shards of about {min(shards.sizes)} pairs"
              f" in {rel(out)} ({time.time() - start:.1f} s)")
    return shards.data


def finetune_budget(args):
    """The fine-tune budget the control and PASS share (a sweep config's ``finetune``)."""
    return Finetune(lr=args.lr, warmup=args.warmup, max_tokens=BUDGET.max_tokens, epochs=args.epochs,
                    max_update=args.max_update or None)


def control_command(args, data, base_ckpt):
    """The equal-budget control: the PASS fine-tune's command with the stock model."""
    return finetune_command(data, base_ckpt, args.control_dir, finetune_budget(args), args.seed, gated=False)


def pass_command(args, data, base_ckpt):
    schedule = PassSchedule(lambda_init=args.lambda_init, lambda_factor=args.lambda_factor, gate_lr=args.gate_lr,
                            clip=args.clip, reopen_until_epoch=args.reopen_until_epoch)
    flags = pass_method_flags(args.target_heads, schedule, conc_epochs=args.conc_epochs if args.concentrator else None)
    return finetune_command(data, base_ckpt, args.pass_dir, finetune_budget(args), args.seed, gated=True,
                            method_flags=flags)


def stage_control(args, info, base):
    """Train (or reuse) the equal-budget control and score it like the base."""
    cmd = control_command(args, pass_data(args), base["checkpoint"])
    marker = os.path.join(args.control_dir, "demo-done.json")
    base_stamp = os.path.getmtime(base["checkpoint"])
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("command") == _command_key(cmd) and done.get("base_mtime") == base_stamp:
            info.update(done["info"], cached=True)
            print(f"control cached: test sacreBLEU {info['sacrebleu']} after {info['updates']} updates")
            return
    if os.path.isdir(args.control_dir):
        shutil.rmtree(args.control_dir)
    os.makedirs(args.control_dir)
    log_path = os.path.join(args.control_dir, "train.log")
    start = time.time()
    check(run(cmd, log_path), "control fine-tune (fairseq-train)", log_path)
    ckpt = os.path.join(args.control_dir, "checkpoint_last.pt")
    result, seconds = evaluate(args, ckpt, os.path.join(args.control_dir, "eval"))
    info.update(result, checkpoint=ckpt, log=log_path, train_seconds=time.time() - start - seconds,
                generate_seconds=seconds, updates=_updates(log_path))
    write_json(marker, {"command": _command_key(cmd), "base_mtime": base_stamp, "info": info})
    info["cached"] = False
    print(f"control: test sacreBLEU {result['sacrebleu']} after {info['updates']} updates ({fmt_by_origin(result)})")


def _updates(log_path):
    """The last update number a fairseq-train log mentions."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return last_update(f.read())


def stage_pass(args, info, base):
    if os.path.isdir(args.pass_dir):
        shutil.rmtree(args.pass_dir)
    os.makedirs(args.pass_dir)
    log_path = os.path.join(args.pass_dir, "train.log")
    cmd = pass_command(args, pass_data(args), base["checkpoint"])
    start = time.time()
    check(run(cmd, log_path), "PASS fine-tune (fairseq-train)", log_path)
    info.update(train_seconds=time.time() - start, log=log_path)
    best = os.path.join(args.pass_dir, "checkpoint_best.pt")
    if not os.path.isfile(best):
        raise JobError(f"the PASS fine-tune never validated with exactly {args.target_heads} binary gates (no "
                       f"{rel(best)}): train longer (--epochs) or raise --lambda-init;"
                       f" log: {rel(log_path)}")
    info["checkpoint"] = best
    info["updates"] = _updates(log_path)


def stage_pass_eval(args, info, pruned):
    pruned_ckpt = os.path.join(args.pass_dir, "pruned.pt")
    start = time.time()
    check(run([tool("pass-prune-checkpoint"), pruned["checkpoint"], pruned_ckpt, "--heads", str(args.target_heads)]),
          "removing the pruned heads (pass-prune-checkpoint)")
    info["convert_seconds"] = time.time() - start
    info["checkpoint"] = pruned_ckpt
    out_dir = os.path.join(args.pass_dir, "eval")
    result, seconds = evaluate(args, pruned_ckpt, out_dir)
    write_json(os.path.join(out_dir, "result.json"), {"result": result, "generate_seconds": seconds})
    info.update(result, generate_seconds=seconds)
    print(f"pruned: test sacreBLEU {result['sacrebleu']} ({fmt_by_origin(result)})")


def stage_gates(args, info, tuned):
    png = os.path.join(args.pass_dir, "gates.png")
    cmd = [tool("pass-inspect-gates"), tuned["checkpoint"], "--json", "--plot", png]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise JobError(f"pass-inspect-gates failed: {last}")
    report = json.loads(proc.stdout)
    write_json(os.path.join(args.pass_dir, "gates.json"), report)
    info.update(report=report, picture=png)
    print(f"gates: {report['kept']} of {report['heads_total']} heads kept ({report['open']} open,"
          f" {report['closed']} closed, {report['nonbinary']} non-binary), {report['modules_active']}"
          f" of {report['modules_total']} attention modules active; picture: {rel(png)}")
    if report["kept"] != args.target_heads or report["nonbinary"]:
        raise JobError(f"the selected checkpoint keeps {report['kept']} heads with {report['nonbinary']}"
                       f" non-binary gates, not exactly {args.target_heads}")


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


def placement_table(report):
    """Markdown table: kept head indices per module kind (rows) and layer (columns)."""
    kept = kept_heads(report)
    layers = max((layer + 1 for _, layer in kept), default=0)
    lines = ["| module | " + " | ".join(f"layer {i}" for i in range(layers)) + " | kept |",
             "|---" * (layers + 2) + "|"]
    for _, _, label in MODULE_KINDS:
        row = [kept.get((label, i)) for i in range(layers)]
        shown = [(",".join(map(str, r)) if r else "-") if r is not None else "" for r in row]
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {sum(len(r or []) for r in row)} |")
    return lines


def build_report(args, stages, times, total):
    corpus, base, base_eval, control = stages["corpus"], stages["base"], stages["base eval"], stages["control"]
    tune, pruned, gates = stages["PASS fine-tune"], stages["PASS eval"], stages["gates"]
    report = gates["report"]
    method = "PASSCONC" if args.concentrator else "PASS"
    c = corpus.get("counts", {})
    lines = [
        f"# PASS demo: {method}, K = {args.target_heads} of {HEADS_TOTAL} heads",
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
        f"| equal-budget control ({control['updates']} more updates, no pruning) | {HEADS_TOTAL} |"
        f" {control['sacrebleu']} | "
        + " | ".join(str(control.get("by_origin", {}).get(k, "")) for k in base_eval.get("by_origin", {})) + " |",
        f"| pruned ({tune.get('updates', '?')} more updates) | {report['kept']} | {pruned['sacrebleu']} | "
        + " | ".join(str(pruned.get("by_origin", {}).get(k, "")) for k in base_eval.get("by_origin", {})) + " |",
        "",
        f"**BLEU change from pruning: {pruned['sacrebleu'] - control['sacrebleu']:+.2f} against the equal-budget"
        f" control** (the same fine-tune without gates); {pruned['sacrebleu'] - base_eval['sacrebleu']:+.2f}"
        f" against the base, which includes what the extra updates alone give"
        f" ({control['sacrebleu'] - base_eval['sacrebleu']:+.2f}). Beam 5, detokenized sacreBLEU"
        f" `{base_eval.get('signature', '')}`.",
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
        "control": ("cached" if control.get("cached") else f"{control.get('updates', '?')} updates, trained in"
                    f" {fmt_time(control.get('train_seconds'))}") + f", fairseq-generate"
                   f" {fmt_time(control.get('generate_seconds'))}",
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
        f"- control checkpoint: `{rel(control['checkpoint'])}`, log `{rel(control['log'])}`",
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
    p.add_argument("--heads", type=int, default=24, metavar="K", dest="target_heads",
                   help="heads to keep, of 72 (default 24)")
    p.add_argument("--concentrator", action="store_true", help="PASSCONC: pack the kept heads into few modules")
    p.add_argument("--conc-epochs", default=CONC_EPOCHS, metavar="A-B",
                   help="with --concentrator: the epochs it is on, first-last (default %(default)s: after PASS"
                        " alone has reached the target, with epochs left to settle)")
    p.add_argument("--shards", type=int, default=SHARDS,
                   help="the PASS fine-tune splits the training set into this many shards; one epoch is"
                        " one shard (default %(default)s: ~68 updates an epoch)")
    p.add_argument("--epochs", type=int, default=BUDGET.epochs,
                   help="epochs (shards) of the PASS fine-tune (default %(default)s)")
    p.add_argument("--max-update", type=int, default=0, metavar="N",
                   help="also stop the PASS fine-tune after N updates")
    p.add_argument("--lambda-init", type=float, default=SCHEDULE.lambda_init,
                   help="initial PASS weight lambda (token scaling; default %(default)s)")
    p.add_argument("--lambda-factor", type=float, default=SCHEDULE.lambda_factor,
                   help="lambda is multiplied by this at each epoch start while off target (default %(default)s)")
    p.add_argument("--reopen-until-epoch", type=int, default=SCHEDULE.reopen_until_epoch, metavar="E",
                   help="reopen closed gates at the starts of epochs 2..E (default %(default)s: never)")
    p.add_argument("--clip", type=float, default=SCHEDULE.clip,
                   help="log_alpha is clamped to [-C, C] after every update (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fine-tune and of the shards (default 1)")
    p.add_argument("--gate-lr", type=float, default=SCHEDULE.gate_lr,
                   help="Adam learning rate of the gates (default %(default)s)")
    p.add_argument("--lr", type=float, default=BUDGET.lr,
                   help="learning rate of the other weights during the fine-tune (default %(default)s)")
    p.add_argument("--warmup", type=int, default=BUDGET.warmup,
                   help="warm-up updates of the fine-tune (default %(default)s)")
    p.add_argument("--workdir", default="data/demo", help="checkpoints, logs and report (default data/demo)")
    p.add_argument("--corpus", default="data/deb-de-en", help="the offline corpus (default data/deb-de-en)")
    p.add_argument("--base-updates", type=int, default=2400, help="updates of the base training (default 2400)")
    p.add_argument("--eval-batch-size", type=int, default=128, help="fairseq-generate --batch-size (default 128)")
    args = p.parse_args(argv)
    if not 1 <= args.target_heads <= HEADS_TOTAL:
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
    args.pass_dir = os.path.join(args.workdir, f"pass{'conc' if args.concentrator else ''}-k{args.target_heads}")
    args.control_dir = os.path.join(args.workdir, "control")
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
        ("control", lambda: stage_control(args, stages["control"], stages["base"])),
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
        except JobError as e:
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
    with atomic_write(path) as f:
        f.write(text)
    write_json(os.path.join(args.workdir, "report.json"),
               {"args": {k: v for k, v in vars(args).items()}, "times": times, "stages": stages})
    print("\n" + text)
    print(f"report written to {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
