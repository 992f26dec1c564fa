"""Running the comparison sweep (its config: :mod:`.sweep_config`): every run fine-tuned from one
cached base, then pruned, scored and timed, each result written as it finishes.

Per run:

1. ``prepare`` (optional): ``random`` or ``michel`` writes a gated checkpoint holding a
   binary mask of K heads (``pass-michel-prune``, once per kind and seed), which
   the fine-tune starts from instead of the base, with the mask fixed (``--pass-method
   fixed``); with ``"train": false`` the mask itself is scored, not fine-tuned (Michel "as
   is");
2. fine-tune: ``fairseq-train`` on the shards (one shard an epoch), from the base (or the
   prepared mask) with ``--finetune-from-model``;
3. select ``checkpoint_best.pt`` (on target: ``--best-checkpoint-metric pass_loss``) when
   ``select`` is ``best`` and it exists, else ``checkpoint_last.pt`` (then ``on_target`` says
   whether its gates are binary with exactly K open);
4. prune with ``pass-prune-checkpoint`` (``prune``: ``heads``, the K largest log_alpha, or
   ``gates``, the checkpoint's own kept heads); no pruning for the unpruned controls;
5. score valid and test (beam 5, detokenized sacreBLEU, per origin) and time the pruned
   model against the unpruned one with ``pass-bench-inference`` (ratios from one run);
   ``--rebench`` (:func:`rebench`) times every run at a K again, side by side in one run.
"""
import csv
import glob
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from typing import Dict, List, Optional

from pass_fairseq.bench.variants import pruned_label
from pass_fairseq.checkpoints import load_checkpoint, weights_fingerprint
from pass_fairseq.errors import PassError
from pass_fairseq.experiments import evaluation
from pass_fairseq.experiments.jobs import JobError, check, run, tool
from pass_fairseq.experiments.recipes import HEADS_TOTAL, MODULES_TOTAL
from pass_fairseq.experiments.shards import build_shards
from pass_fairseq.experiments.sweep_config import RunSpec, Sweep
from pass_fairseq.experiments.train_logs import train_curve, valid_curve
from pass_fairseq.experiments.tuning import choose_try
from pass_fairseq.files import atomic_write, write_json
from pass_fairseq.gate_report import gate_report
from pass_fairseq.gates import KEPT_THRESHOLD

#: the bench entry of an unpruned row: the benchmark's reference, so a speed-up of 1
UNPRUNED_BENCH = {"speedup": 1.0}


def shard_data(sweep: Sweep) -> str:
    ft = sweep.finetune
    return build_shards(sweep.data_bin, os.path.join(sweep.workdir, f"shards{ft['shards']}"), ft["shards"],
                        seed=ft.get("shard_seed", 1)).data


def checkpoint_updates(path: str) -> int:
    """The number of updates a fairseq checkpoint was saved after."""
    history = load_checkpoint(path).get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", 0))


def ensure_base(sweep: Sweep) -> None:
    """Train the base once: done when its checkpoint has the configured updates (fairseq
    resumes an interrupted training from it)."""
    if os.path.isfile(sweep.base_checkpoint) and checkpoint_updates(sweep.base_checkpoint) >= sweep.base["updates"]:
        return
    log = os.path.join(sweep.base["dir"], "train.log")
    os.makedirs(sweep.base["dir"], exist_ok=True)
    check(run(sweep.base_command(), log, append=True), "base training (fairseq-train)", log)


def check_base(sweep: Sweep) -> str:
    """``RESULTS/base.json``: the fingerprint of the base every finished run was fine-tuned
    from. The base lives outside the checkout, so another machine or session trains it again
    from the same command: written the first time, compared every other time, so that no table
    mixes bases (a JobError when the base here is not that one)."""
    fingerprint = weights_fingerprint(load_checkpoint(sweep.base_checkpoint)["model"])
    path = os.path.join(sweep.results, "base.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)["weights_sha256"]
        if recorded != fingerprint:
            raise JobError(f"the base at {sweep.base_checkpoint} is not the one the finished runs in"
                           f" {sweep.results}/runs were fine-tuned from (weights {fingerprint[:12]}, recorded"
                           f" {recorded[:12]} in {path}): train it again on a machine that reproduces it, or start a"
                           " new results folder")
        return fingerprint
    finished = glob.glob(os.path.join(sweep.results, "runs", "*.json"))
    if finished:
        raise JobError(f"{path} is missing, but {len(finished)} finished runs in {sweep.results}/runs were"
                       " fine-tuned from a base whose fingerprint was not recorded: start a new results folder,"
                       " or --redo those runs")
    write_json(path, {"weights_sha256": fingerprint, "updates": checkpoint_updates(sweep.base_checkpoint),
                      "command": " ".join(os.path.basename(c) if i == 0 else c
                                          for i, c in enumerate(sweep.base_command()))}, indent=1)
    return fingerprint


def write_base_curve(sweep: Sweep) -> str:
    """``RESULTS/base_curve.csv``: the base's validation loss and perplexity at every epoch end,
    from its training log."""
    with open(os.path.join(sweep.base["dir"], "train.log"), encoding="utf-8", errors="replace") as f:
        curve = valid_curve(f.read())
    path = os.path.join(sweep.results, "base_curve.csv")
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["updates", "valid_loss", "valid_nll_loss", "valid_ppl"])
        writer.writerows(curve)
    return path


#: the training-log means that ``finetune_curves.csv`` holds (the gate counts: gated runs only;
#: the scheduled target: runs whose logs have it)
CURVE_KEYS = ("nll_loss", "pass_open", "pass_nonbinary", "pass_target")
#: the columns of ``finetune_curves.csv``: the run, then one train_inner line's means
FINETUNE_CURVE_FIELDS = ["run", "method", "label", "heads", "seed", "updates", *CURVE_KEYS]


def write_finetune_curves(sweep: Sweep) -> str:
    """``RESULTS/finetune_curves.csv``: every finished fine-tune's training NLL and (gated
    runs) its open and non-binary gate counts at each ``--log-interval``, from its training
    log. A finished run whose log is not on this machine keeps the rows it had (a clean
    checkout rebuilding the table does not lose them); rows of runs that are no longer
    finished (``--redo``) or no longer in the config are dropped."""
    path = os.path.join(sweep.results, "finetune_curves.csv")
    finished = [s for s in sweep.all_runs()
                if not s.tuning and s.train and os.path.isfile(sweep.result_path(s))]
    rows: Dict[str, List[dict]] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["run"], []).append(row)
    rows = {s.name: rows[s.name] for s in finished if s.name in rows}
    for spec in finished:
        log = os.path.join(sweep.finished_finetune_dir(sweep.result(spec)), "train.log")
        if not os.path.isfile(log):
            continue
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        curve = []
        for present in (len(CURVE_KEYS), len(CURVE_KEYS) - 1, 1):  # all; no target (older logs); stock: the NLL
            missing = {key: "" for key in CURVE_KEYS[present:]}
            curve = [(n, dict(v, **missing)) for n, v in train_curve(text, CURVE_KEYS[:present])]
            if curve:
                break
        rows[spec.name] = [dict(values, run=spec.name, method=spec.method, label=spec.label or spec.method,
                                heads=spec.target_heads, seed=spec.seed, updates=n) for n, values in curve]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FINETUNE_CURVE_FIELDS)
        writer.writeheader()
        for name in sorted(rows):
            writer.writerows(rows[name])
    return path


def gate_summary(checkpoint: str, target_heads: Optional[int]) -> dict:
    """Counts of the selected (gated) checkpoint and whether it is on target."""
    report = gate_report(load_checkpoint(checkpoint)["model"])
    on_target = report["nonbinary"] == 0 and (target_heads is None or report["open"] == target_heads)
    keys = ("open", "closed", "nonbinary", "kept", "modules_active", "modules_total")
    return dict({k: report[k] for k in keys}, on_target=on_target, modules=report["modules"])


def bench_ratios(sweep: Sweep, checkpoints: Dict[str, str], target_heads: int, work: str,
                 tables: Optional[str] = None) -> Dict[str, dict]:
    """Run name -> speed-up over the unpruned model, time over the per-module ideal and the
    repeat spread of its K-head model (each gated checkpoint with its own top-K mask), from
    one ``pass-bench-inference`` run that times them all side by side (``--also``). The
    unpruned model is the first checkpoint's (every checkpoint has the same shapes). The
    benchmark's tables go to ``TABLES.md`` and ``.csv`` (default ``WORK/bench``)."""
    b = sweep.bench
    tables = tables or os.path.join(work, "bench")
    (first, gated), *others = checkpoints.items()
    cmd = [tool("pass-bench-inference"), gated, "--name", first, *[f"--also={n}={c}" for n, c in others],
           "--data", sweep.data_bin, "--heads", str(target_heads), "--layouts", "topk",
           "--sentences", str(b.get("sentences", 192)), "--repeats", str(b.get("repeats", 3)),
           "--threads", str(b.get("threads", 1)), "--work-dir", work,
           "--markdown", f"{tables}.md", "--csv", f"{tables}.csv"]
    log = os.path.join(work, "bench.log")
    os.makedirs(work, exist_ok=True)
    check(run(cmd, log, show=False), f"pass-bench-inference on {', '.join(checkpoints)}", log)
    with open(f"{tables}.csv", encoding="utf-8") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    ratios = {}
    for name in checkpoints:
        row = rows.get(pruned_label(target_heads, "topk", name))
        if row is None:
            raise JobError(f"{tables}.csv has no row {pruned_label(target_heads, 'topk', name)!r}; see {log}")
        ratios[name] = {key: float(row[key]) for key in ("speedup", "time_over_ideal", "attn_speedup", "spread")}
    return ratios


def prepare_mask(sweep: Sweep, spec: RunSpec) -> str:
    """The gated checkpoint holding the binary mask of K heads that ``spec.prepare`` chooses
    (``michel`` or ``random``, by ``pass-michel-prune``), shared by every run that prepares that
    kind with that seed (fine-tuned or scored as is). One call per kind and seed makes the
    masks of every K that any run of the kind asks for, at any seed: Michel's iterative
    pruning stops at each of them on its way down, so every seed takes the same steps. An
    existing mask folder without this K is an error (it would be remade and change the masks
    that finished runs started from)."""
    out_dir = os.path.join(sweep.workdir, "masks", f"{spec.prepare}-s{spec.seed}")
    path = os.path.join(out_dir, f"{spec.prepare}_k{spec.target_heads}.pt")
    if not os.path.isfile(path):
        if os.path.isdir(out_dir) and os.listdir(out_dir):
            raise JobError(f"{spec.name}: {out_dir} holds masks made without K = {spec.target_heads}; move it away to make "
                           f"them all again (the runs that started from them then need --redo)")
        targets = sorted({r.target_heads for r in sweep.all_runs() if r.prepare == spec.prepare}, reverse=True)
        os.makedirs(out_dir, exist_ok=True)
        cmd = [tool("pass-michel-prune"), sweep.data_bin, sweep.base_checkpoint, "--heads", ",".join(map(str, targets)),
               "--save-dir", out_dir, "--seed", str(spec.seed),
               "--max-batches", str(sweep.finetune.get("michel_batches", 100))]
        if spec.prepare == "random":
            cmd.append("--random")
        log = os.path.join(out_dir, "masks.log")
        check(run(cmd, log), f"{spec.name}: {spec.prepare} head masks (pass-michel-prune)", log)
    return path


def starting_checkpoint(sweep: Sweep, spec: RunSpec) -> str:
    """What a run starts from: its prepared mask (``prepare``), else the base."""
    return prepare_mask(sweep, spec) if spec.prepare else sweep.base_checkpoint


def fine_tune(sweep: Sweep, spec: RunSpec, data: str, work: str, result: dict) -> str:
    """Run (or resume) the fine-tune; returns the selected checkpoint and fills ``result``."""
    train_dir = sweep.finetune_dir(spec)
    os.makedirs(train_dir, exist_ok=True)
    init = starting_checkpoint(sweep, spec)
    log = os.path.join(train_dir, "train.log")
    cmd = sweep.finetune_command(spec, data, init, train_dir)
    done = os.path.join(train_dir, "finished.json")  # a fine-tune shared across K's runs once
    if not os.path.isfile(done):
        start = time.time()
        check(run(cmd, log, append=True, show=False), f"{spec.name}: fine-tune (fairseq-train)", log)
        write_json(done, {"seconds": round(time.time() - start, 1)})
    with open(done, encoding="utf-8") as f:
        seconds = json.load(f)["seconds"]
    best, last = (os.path.join(train_dir, f"checkpoint_{n}.pt") for n in ("best", "last"))
    selected = best if spec.select == "best" and os.path.isfile(best) else last
    result.update(selected=os.path.basename(selected), finetune_seconds=seconds, finetune=spec.finetune_name,
                  updates=checkpoint_updates(last), command=" ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)))
    return selected


def run_one(sweep: Sweep, spec: RunSpec, data: str) -> dict:
    """Fine-tune, select, prune, score and time one run; returns its result (also written)."""
    work = sweep.run_dir(spec)
    result = {"method": spec.method, "label": spec.label or spec.method, "heads": spec.target_heads, "seed": spec.seed,
              "try": spec.try_name, "tuning": spec.tuning, "tuning_method": spec.tuning_method,
              "choose": spec.choose if spec.tries else None, "try_flags": spec.tries.get(spec.try_name, [])}
    if spec.train:
        selected = fine_tune(sweep, spec, data, work, result)
    else:
        selected = starting_checkpoint(sweep, spec)
        result.update(selected=os.path.basename(selected) if spec.prepare else "base",
                      updates=checkpoint_updates(selected), finetune_seconds=0.0)
    if spec.arch == "gated":
        gates = gate_summary(selected, spec.target_heads)
        result["gates"] = gates
        result["on_target"] = gates["on_target"]
        result["own_kept"] = gates["kept"]  # what the method keeps by itself (z > 0.5)
    timed = sweep.bench is not None
    if spec.prune:
        result.update(prune_and_score(sweep, spec, selected, spec.prune, work))
        result["bench"] = bench_ratios(sweep, {spec.name: selected}, spec.target_heads, os.path.join(work, "bench"))[
            spec.name] if timed else {}
    else:
        result.update(score(sweep, selected, work), kept_heads=HEADS_TOTAL, modules_active=MODULES_TOTAL)
        result["bench"] = dict(UNPRUNED_BENCH) if timed else {}
    if spec.score_own_mask and spec.tuning:  # what the method deploys by itself, without a K
        result["own"] = prune_and_score(sweep, spec, selected, "gates", os.path.join(work, "own"))
    return result


def prune_and_score(sweep: Sweep, spec: RunSpec, selected: str, how: str, work: str) -> dict:
    """Prune ``selected`` with ``pass-prune-checkpoint`` (``how``: ``heads``, the K largest
    log_alpha, or ``gates``, its own kept heads: z > 0.5, as the gate report counts them, so
    that non-binary gates are allowed) and score the pruned model."""
    os.makedirs(work, exist_ok=True)
    pruned = os.path.join(work, "pruned.pt")
    which = ["--heads", str(spec.target_heads)] if how == "heads" else ["--threshold", str(KEPT_THRESHOLD)]
    cmd = [tool("pass-prune-checkpoint"), selected, pruned, *which]
    check(run(cmd, show=False), f"{spec.name}: pass-prune-checkpoint")
    kept = load_checkpoint(pruned)["pass_pruned_heads"]
    return dict(score(sweep, pruned, work), kept_heads=sum(len(v) for v in kept.values()),
                modules_active=sum(1 for v in kept.values() if v), pruned_heads=kept)


def score(sweep: Sweep, checkpoint: str, work: str) -> dict:
    """Valid and test sacreBLEU (beam 5, detokenized, per origin) of ``checkpoint``."""
    raw, out = os.path.join(sweep.corpus, "raw"), os.path.join(work, "eval")
    result = {}
    for split in ("valid", "test"):
        hyps, _ = evaluation.generate(sweep.data_bin, checkpoint, out, 128, split=split)
        result[split] = evaluation.score(hyps, raw, out, split=split)
    return result


def run_sweep(sweep: Sweep, only: Optional[List[str]] = None) -> int:
    """Run every unfinished run (or those whose method or run name is in ``only``), each once,
    in the order ``only`` names them and, within a method, the config's; runs that finished
    runs add (the strongest baseline's seeds) included. Returns how many failed."""
    attempted = set()

    def pending() -> List[RunSpec]:
        todo = [s for s in sweep.all_runs() if s.name not in attempted and not os.path.isfile(sweep.result_path(s))]
        return selected_runs(todo, only)

    todo = pending()
    runs = sweep.all_runs()
    finished = sum(os.path.isfile(sweep.result_path(s)) for s in runs)
    print(f"sweep: {len(runs)} runs, {finished} finished, {len(todo)} to do"
          + (f" now (--only {','.join(only)})" if only else ""), flush=True)
    if sweep.strongest and sweep.strongest_baseline() is None:
        print(f"sweep: the strongest of {', '.join(sweep.strongest['among'])} at K = {sweep.strongest['heads']} "
              f"gets seeds {sweep.strongest['seeds']} once their runs there have finished", flush=True)
    if not todo:
        return 0
    ensure_base(sweep)
    check_base(sweep)
    write_base_curve(sweep)
    data = shard_data(sweep)
    failed = 0
    while todo:
        spec = todo[0]
        attempted.add(spec.name)
        print(f"\n=== sweep run {len(attempted)} ({len(todo) - 1} more to do): {spec.name} ===", flush=True)
        failed += not _run_and_record(sweep, spec, data)
        todo = pending()
    return failed


def _run_and_record(sweep: Sweep, spec: RunSpec, data: str) -> bool:
    """Run ``spec`` (its try chosen first) and write its result file; False when it failed or
    waits for its tuning runs (said on stderr)."""
    try:
        if spec.tries and not spec.tuning:
            spec = resolve_try(sweep, spec)
            if spec is None:
                return False
        result = reuse_tuning_run(sweep, spec) or run_one(sweep, spec, data)
    except (JobError, PassError) as e:
        print(f"sweep: {spec.name} failed: {e}", file=sys.stderr, flush=True)
        return False
    write_json(sweep.result_path(spec), result, indent=1)
    print(f"sweep: {spec.name}: test sacreBLEU {result['test']['sacrebleu']}, {result['kept_heads']} heads",
          flush=True)
    return True


def selected_runs(specs: List[RunSpec], only: Optional[List[str]]) -> List[RunSpec]:
    """The runs of ``specs`` that ``only`` names (by run name or method), in the order it names
    them (a method's runs in ``specs``'s order); all of ``specs`` when ``only`` is empty."""
    if not only:
        return list(specs)
    rank = {name: i for i, name in enumerate(only)}
    chosen = [s for s in specs if s.name in rank or s.method in rank]
    return sorted(chosen, key=lambda s: rank.get(s.name, rank.get(s.method)))


def rebench(sweep: Sweep, only: Optional[List[str]] = None) -> int:
    """Time every finished pruned run again, keeping its scores: all the runs at one K side
    by side in one ``pass-bench-inference`` run (:func:`bench_ratios`), so that their speed
    ratios come from one machine state and one version of the decoding code (runs timed one
    at a time, as the sweep finishes them, differ by more than the methods do). That run's
    table is kept as ``RESULTS/speed_k<K>.md`` and ``.csv``. ``only`` (method and run names)
    chooses K's: every finished pruned run at the K of a run it names is timed, since a K's
    runs are timed together. A K's results are rewritten when its run has finished, so an
    interrupted rebench goes on with ``only`` naming a run of each K still to do. The
    unpruned rows, the benchmark's reference, get their speed-up of 1 (a sweep first run
    with ``"bench": false``). Returns how many runs were timed."""
    finished = [s for s in sweep.all_runs() if os.path.isfile(sweep.result_path(s))]
    chosen = selected_runs(finished, only)
    for spec in (s for s in chosen if not s.prune):
        result = sweep.result(spec)
        if not result.get("bench"):
            write_json(sweep.result_path(spec), dict(result, bench=dict(UNPRUNED_BENCH)), indent=1)
    timed = 0
    for target_heads in sorted({s.target_heads for s in chosen if s.prune}):
        runs = [s for s in finished if s.prune and s.target_heads == target_heads]
        checkpoints = {s.name: scored_checkpoint(sweep, s, sweep.result(s)) for s in runs}
        print(f"sweep: timing {len(runs)} runs at K = {target_heads} side by side ({', '.join(checkpoints)})", flush=True)
        work, tables = os.path.join(sweep.workdir, "rebench", f"k{target_heads}"), os.path.join(sweep.results, f"speed_k{target_heads}")
        ratios = bench_ratios(sweep, checkpoints, target_heads, work, tables)
        for spec in runs:
            write_json(sweep.result_path(spec), dict(sweep.result(spec), bench=ratios[spec.name]), indent=1)
        timed += len(runs)
    return timed


def scored_checkpoint(sweep: Sweep, spec: RunSpec, result: dict) -> str:
    """The gated checkpoint a finished run pruned and scored: its fine-tune's selected
    checkpoint, or its prepared mask when it had no fine-tune."""
    if spec.train:
        return os.path.join(sweep.finished_finetune_dir(result), result["selected"])
    return starting_checkpoint(sweep, spec)


def resolve_try(sweep: Sweep, spec: RunSpec) -> Optional[RunSpec]:
    """``spec`` with its chosen try, or None (said on stderr) while its tuning runs are
    unfinished."""
    results = sweep.tuning_results(spec)
    if results is None:
        print(f"sweep: {spec.name} waits for the tuning runs of {spec.tuning_method}", file=sys.stderr, flush=True)
        return None
    chosen = choose_try(results, spec.choose, spec.target_heads)
    print(f"sweep: {spec.name} uses {spec.tuning_method}'s try {chosen!r} (choice by {spec.choose})", flush=True)
    return replace(spec, try_name=chosen)


def reuse_tuning_run(sweep: Sweep, spec: RunSpec) -> Optional[dict]:
    """The result of the tuning run that is this very run (same method, try, K and seed), as
    the method's own row; None when there is none."""
    for r in sweep.runs:
        if (r.tuning and r.method == spec.method and r.try_name == spec.try_name
                and (r.target_heads, r.seed) == (spec.target_heads, spec.seed) and os.path.isfile(sweep.result_path(r))):
            return dict(sweep.result(r), tuning=False, reused=r.name)
    return None


def forget_run(sweep: Sweep, spec: RunSpec) -> None:
    """Drop a run's result, work folder and fine-tune (shared with the run's other K's when
    the fine-tune does not depend on K), so that the next sweep does it again."""
    if os.path.isfile(sweep.result_path(spec)):
        os.remove(sweep.result_path(spec))
    shutil.rmtree(sweep.run_dir(spec), ignore_errors=True)
    if spec.tries and not spec.tuning:
        spec = resolve_try(sweep, spec)
    if spec is not None and spec.train:
        shutil.rmtree(sweep.finetune_dir(spec), ignore_errors=True)
