"""The comparison sweep: pruning methods x K x seeds, each fine-tuned from one cached base
with the same shards, updates and learning rate, then pruned, scored and timed.

A sweep is a JSON config (``results/deb-de-en/sweep.json``)::

    {"corpus": "data/deb-de-en", "workdir": "data/sweep", "results": "results/deb-de-en",
     "base": {"dir": "data/sweep/base", "updates": 5000},
     "finetune": {"shards": 8, "epochs": 8, "lr": 5e-4, "warmup": 50, "max_tokens": 4096},
     "bench": {"sentences": 192, "repeats": 5, "threads": 1},
     "runs": [{"method": "pass", "heads": [8, 16, 32], "seeds": [1],
               "flags": ["--pass-target-heads", "{K}", ...], "select": "best", "prune": "heads"}, ...]}

Optional: ``"model": {"embed_dim": 512, "ffn_embed_dim": 1024}`` sets the width of the base
and of every fine-tune (:func:`width_flags`; default the demo's 128 / 512), and ``"bench":
false`` scores the runs without timing them (a machine whose timings would mean nothing, or
too little time).

Every run writes ``RESULTS/runs/<method>-k<K>-s<seed>.json`` when it has finished; a run with
that file is skipped, and an interrupted fine-tune resumes from its ``checkpoint_last.pt``
(fairseq's own resume), so the sweep can be stopped and started again across sessions.
``{K}`` and ``{seed}`` in a run's flags are replaced by its head count and seed; ``seeds``
(default [1]) can be overridden per K with ``seeds_at`` ({"16": [1, 2, 3]}). Runs go in
rounds: every method's first K, then every method's second K, and so on.

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

Tuning (:mod:`pass_fairseq.sweep_tuning`): an entry's ``tries`` ({"name": [extra flags], ...})
are its tuning tries. Each try is a run of its own at the entry's first K and first seed
(``<method>.<try>-k<K>-s<seed>``, marked ``tuning``), run just before the entry's first run. Its own
runs then use the chosen try: ``"choose": "valid"`` (default) the best valid sacreBLEU, for every
K; ``"own_count"`` (Voita, whose penalty sets how many heads it keeps) per K, the try whose own
kept count (z > 0.5) is the smallest at or above K. ``"tries_from": "<method>"`` takes another
entry's tries and choice (an ablation uses the settings its method was tuned to). A run whose
flags do not depend on K (no ``{K}``, no ``prepare``) shares one fine-tune across the K's.
``"score_own_mask": true`` (Voita) also scores each tuning run pruned to its own kept heads.

``"strongest_baseline": {"among": ["dsp", ...], "heads": 16, "seeds": [2, 3]}``: once every
listed method's first-seed run at that K has finished, the one with the best valid sacreBLEU
is run again with those of ``seeds`` that its entry does not list already (:meth:`Sweep.all_runs`;
a running sweep picks them up).
"""
import csv
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

from pass_fairseq import evaluation
from pass_fairseq.bench.variants import CHECKPOINT_NAME, CHECKPOINT_NAME_RULE, pruned_label
from pass_fairseq.checkpoints import load_checkpoint
from pass_fairseq.commands import JobError, atomic_write, check, run, tool, write_json
from pass_fairseq.gate_report import gate_report
from pass_fairseq.gates import KEPT_THRESHOLD
from pass_fairseq.sweep_tuning import CHOICES, choose_try, strongest
from pass_fairseq.train_logs import train_curve, valid_curve

def width_flags(embed_dim: int = 128, ffn_embed_dim: int = 512) -> List[str]:
    """The base model's topology: transformer_iwslt_de_en (6+6 layers, 4 heads, so 18
    attention modules and 72 heads at any width), pre-norm (much faster to train than
    post-norm at this scale, ../shared/docs/cpu-budget.md), at this width (a sweep config's
    ``"model"``; the demo's and the default: 128 / ffn 512; the stock architecture's own: 512 /
    ffn 1024)."""
    return ["--encoder-embed-dim", str(embed_dim), "--decoder-embed-dim", str(embed_dim),
            "--encoder-ffn-embed-dim", str(ffn_embed_dim), "--decoder-ffn-embed-dim", str(ffn_embed_dim),
            "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings"]


#: the demo's width
WIDTH = width_flags()
HEADS_TOTAL, MODULES_TOTAL = 72, 18
#: the bench entry of an unpruned row: the benchmark's reference, so a speed-up of 1
UNPRUNED_BENCH = {"speedup": 1.0}
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class RunSpec:
    """One fine-tune of the sweep."""

    method: str
    heads: int
    seed: int
    flags: List[str]
    arch: str = "gated"  #: gated (transformer_pass_iwslt) or stock (transformer_iwslt_de_en)
    prepare: Optional[str] = None  #: random | michel: start from a mask of K heads
    select: str = "best"  #: best | last
    prune: Optional[str] = "heads"  #: heads | gates | None (unpruned)
    label: str = ""
    train: bool = True  #: False: score the base (the unpruned row), or the prepared mask, without a fine-tune
    tries: Dict[str, List[str]] = field(default_factory=dict)  #: try name -> extra flags
    choose: str = "valid"  #: valid | own_count: how the try is chosen (sweep_tuning.choose_try)
    tries_from: Optional[str] = None  #: the method whose tuning runs choose this run's try
    try_name: Optional[str] = None  #: the try this run uses (None: not chosen yet, or no tries)
    tuning: bool = False  #: a tuning run: one try at the first K and seed
    shared_finetune: bool = False  #: the fine-tune does not depend on K: one serves every K
    score_own_mask: bool = False  #: tuning runs also score the model pruned to its own kept heads

    @property
    def name(self) -> str:
        if self.tuning:
            return f"{self.method}.{self.try_name}-k{self.heads}-s{self.seed}"
        return f"{self.method}-k{self.heads}-s{self.seed}"

    @property
    def finetune_name(self) -> str:
        """The fine-tune's folder name: runs that differ only in K share it when
        ``shared_finetune``."""
        tried = f".{self.try_name}" if self.try_name else ""
        k = "" if self.shared_finetune else f"-k{self.heads}"
        return f"{self.method}{tried}{k}-s{self.seed}"

    @property
    def tuning_method(self) -> str:
        return self.tries_from or self.method

    @property
    def all_flags(self) -> List[str]:
        """The entry's flags and its chosen try's."""
        return self.flags + self.tries.get(self.try_name, [])


def _fill(flags: List[str], heads: int, seed: int) -> List[str]:
    return [f.replace("{K}", str(heads)).replace("{seed}", str(seed)) for f in flags]


def _run_spec(entry: Dict, heads: int, seed: int, **extra) -> RunSpec:
    """A config entry's run at ``heads`` and ``seed`` ({K} and {seed} filled in its flags)."""
    spec = {key: v for key, v in entry.items() if key not in ("heads", "seeds", "seeds_at")}
    templates = [entry.get("flags", [])] + list(entry.get("tries", {}).values())
    shared = entry.get("prepare") is None and not any("{K}" in f for t in templates for f in t)
    tries = {name: _fill(f, heads, seed) for name, f in entry.get("tries", {}).items()}
    return RunSpec(**dict(spec, flags=_fill(entry.get("flags", []), heads, seed), tries=tries),
                   heads=heads, seed=seed, shared_finetune=shared, **extra)


@dataclass
class Sweep:
    corpus: str
    workdir: str
    results: str
    base: Dict
    finetune: Dict
    #: pass-bench-inference's settings, or None (``"bench": false``): pruned runs are not timed
    bench: Optional[Dict]
    runs: List[RunSpec] = field(default_factory=list)
    #: {"among": [methods], "heads": K, "seeds": [extra seeds]} or None
    strongest: Optional[Dict] = None
    #: method -> its config entry
    entries: Dict[str, Dict] = field(default_factory=dict)
    #: width_flags' arguments ({"embed_dim": 512, "ffn_embed_dim": 1024}); {}: the demo's width
    model: Dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "Sweep":
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        runs = []
        entries = [dict(e) for e in raw["runs"]]
        by_method = {e["method"]: e for e in entries}
        for entry in entries:
            source = entry.get("tries_from")
            if source:
                if source not in by_method or not by_method[source].get("tries"):
                    raise JobError(f"{path}: {entry['method']}: tries_from {source}: no such method with tries")
                entry["tries"], entry["choose"] = by_method[source]["tries"], by_method[source].get("choose", "valid")
        for entry in entries:
            if entry.get("choose", "valid") not in CHOICES:
                raise JobError(f"{path}: {entry['method']}: choose must be one of {', '.join(CHOICES)}")
        seeds_of = [lambda k, e=e: e.get("seeds_at", {}).get(str(k), e.get("seeds", [1])) for e in entries]
        rounds = max(len(e["heads"]) for e in entries)
        for i in range(rounds):  # every method's first K (first seeds first), then every second K, ...
            batch = [(e, e["heads"][i], seeds(e["heads"][i])) for e, seeds in zip(entries, seeds_of)
                     if i < len(e["heads"])]
            for j in range(max(len(seeds) for _, _, seeds in batch)):
                for entry, k, seeds in batch:
                    if i == j == 0 and entry.get("tries") and not entry.get("tries_from"):  # its tuning runs
                        runs += [_run_spec(entry, k, seeds[0], try_name=t, tuning=True) for t in entry["tries"]]
                    if j < len(seeds):
                        runs.append(_run_spec(entry, k, seeds[j]))
        names = [r.name for r in runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise JobError(f"{path}: runs listed twice: {', '.join(duplicates)}")
        odd = sorted({n for n in names if not CHECKPOINT_NAME.fullmatch(n)})
        if odd:
            raise JobError(f"{path}: run names name files and benchmark rows: give methods and tries names of"
                           f" {CHECKPOINT_NAME_RULE} ({', '.join(odd)})")
        best = raw.get("strongest_baseline")
        if best:
            k = best["heads"]
            missing = [m for m in best["among"] if k not in by_method.get(m, {}).get("heads", [])]
            if missing:
                raise JobError(f"{path}: strongest_baseline: no run of {', '.join(missing)} at K = {k}")
        bench = raw.get("bench", {})
        if bench is not False and not isinstance(bench, dict):
            raise JobError(f"{path}: \"bench\" must be pass-bench-inference's settings ({{}} for the defaults)"
                           f" or false, not {bench!r}")
        model = raw.get("model", {})
        width_flags(**model)  # a key it does not take is a TypeError now, not at the first command
        return cls(raw["corpus"], raw["workdir"], raw["results"], raw["base"], raw["finetune"],
                   None if bench is False else bench, runs, best, by_method, model)

    def strongest_baseline(self) -> Optional[str]:
        """Among ``strongest_baseline``'s methods, the one whose first-seed run at its K has the
        best valid sacreBLEU; None until all of those runs have finished (or none is configured)."""
        if not self.strongest:
            return None
        firsts = [next(r for r in self.runs if r.method == m and r.heads == self.strongest["heads"] and not r.tuning)
                  for m in self.strongest["among"]]
        results = self.finished_results(firsts)
        return None if results is None else strongest({r.method: res for r, res in zip(firsts, results)})

    def all_runs(self) -> List[RunSpec]:
        """``runs`` and, once it is decided, the strongest baseline's runs with more seeds (those
        its entry does not list already)."""
        method = self.strongest_baseline()
        if method is None:
            return list(self.runs)
        k, listed = self.strongest["heads"], {r.name for r in self.runs}
        extra = [_run_spec(self.entries[method], k, seed) for seed in self.strongest["seeds"]]
        return self.runs + [r for r in extra if r.name not in listed]

    def independent_methods(self) -> List[str]:
        """The config's methods, ``base`` first, when each can run in a process of its own once
        the first has run (``scripts/gpu_sweep.sh``); a JobError naming what links them otherwise:
        tuning tries (a method's runs wait for its tries, ``tries_from`` for another method's),
        a mask kind that several methods prepare (one shared ``pass-michel-prune`` call), or
        ``strongest_baseline`` (its runs wait for every listed method)."""
        methods = list(self.entries)
        kinds = [e["prepare"] for e in self.entries.values() if e.get("prepare")]
        links = [f"{m} takes {e['tries_from']}'s tuning tries" if e.get("tries_from") else f"{m} has tuning tries"
                 for m, e in self.entries.items() if e.get("tries")]
        links += [f"several methods prepare {k} masks" for k in sorted(set(kinds)) if kinds.count(k) > 1]
        links += ["strongest_baseline adds runs"] if self.strongest else []
        if links:
            raise JobError(f"its methods depend on each other ({'; '.join(links)}): run them in one pass-sweep")
        return sorted(methods, key=lambda m: m != "base")

    @property
    def width(self) -> List[str]:
        """The width flags of the base and of every fine-tune (:func:`width_flags`)."""
        return width_flags(**self.model)

    # ---- paths ----------------------------------------------------------------------
    @property
    def data_bin(self) -> str:
        return os.path.join(self.corpus, "data-bin")

    @property
    def base_checkpoint(self) -> str:
        return os.path.join(self.base["dir"], "checkpoint_last.pt")

    def result_path(self, spec: RunSpec) -> str:
        return os.path.join(self.results, "runs", spec.name + ".json")

    def run_dir(self, spec: RunSpec) -> str:
        return os.path.join(self.workdir, "runs", spec.name)

    def finetune_dir(self, spec: RunSpec) -> str:
        return os.path.join(self.workdir, "finetunes", spec.finetune_name)

    def finished_finetune_dir(self, result: dict) -> str:
        """The folder of the fine-tune a finished run used (a reused tuning run's, or the one
        its other K's share), as its result file names it."""
        return os.path.join(self.workdir, "finetunes", result["finetune"])

    def tuning_results(self, spec: RunSpec) -> Optional[Dict[str, dict]]:
        """The finished tuning runs that choose ``spec``'s try (try name -> result), or None
        while one of them has not finished."""
        tuning = [r for r in self.runs if r.tuning and r.method == spec.tuning_method]
        results = self.finished_results(tuning)
        return None if results is None else {r.try_name: res for r, res in zip(tuning, results)}

    def finished_results(self, specs: List[RunSpec]) -> Optional[List[dict]]:
        """The result files of ``specs``, in order, or None while one of them has not finished."""
        if not all(os.path.isfile(self.result_path(r)) for r in specs):
            return None
        return [self.result(r) for r in specs]

    def result(self, spec: RunSpec) -> dict:
        """A finished run's result file."""
        with open(self.result_path(spec), encoding="utf-8") as f:
            return json.load(f)

    # ---- commands -------------------------------------------------------------------
    def base_command(self) -> List[str]:
        """The unpruned base, stock fairseq's task, model and criterion: the demo's base settings
        with this sweep's updates. The plugin is loaded only so that an interrupted base can
        resume (it allows torch's weights-only load of fairseq checkpoints)."""
        return [tool("fairseq-train"), self.data_bin, "--user-dir", PLUGIN_DIR, "--task", "translation",
                "--arch", "transformer_iwslt_de_en", *self.width,
                "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-3",
                "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "500", "--max-tokens", "4096",
                "--max-update", str(self.base["updates"]), "--dropout", "0.1", "--save-dir", self.base["dir"],
                "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50", "--seed", "1",
                "--num-workers", "0"]

    def finetune_command(self, spec: RunSpec, data: str, init: str, save_dir: str) -> List[str]:
        """The same fine-tune for every method: shards, epochs, learning rate, batch size."""
        ft = self.finetune
        common = [tool("fairseq-train"), data, "--user-dir", PLUGIN_DIR, "--task", "translation_pass",
                  *self.width, "--finetune-from-model", init, "--label-smoothing", "0.1",
                  "--adam-betas", "(0.9,0.98)",
                  "--lr", str(ft["lr"]), "--lr-scheduler", "fixed", "--warmup-updates", str(ft["warmup"]),
                  "--max-tokens", str(ft["max_tokens"]), "--max-epoch", str(ft["epochs"]), "--dropout", "0.1",
                  "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
                  "--log-interval", "25", "--seed", str(spec.seed), "--num-workers", "0"]
        if ft.get("max_update"):
            common += ["--max-update", str(ft["max_update"])]
        if spec.arch == "stock":
            model = ["--arch", "transformer_iwslt_de_en", "--criterion", "label_smoothed_cross_entropy",
                     "--optimizer", "adam"]
        else:
            model = ["--arch", "transformer_pass_iwslt", "--criterion", "pass_label_smoothed_cross_entropy",
                     "--optimizer", "pass_adam"]
        return common + model + spec.all_flags


def shard_data(sweep: Sweep) -> str:
    from pass_fairseq.shards import build_shards

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


#: the training-log means that ``finetune_curves.csv`` holds (the gate counts: gated runs only)
CURVE_KEYS = ("nll_loss", "pass_open", "pass_nonbinary")
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
        stock = {key: "" for key in CURVE_KEYS[1:]}  # a stock run's log has no gate counts
        curve = train_curve(text, CURVE_KEYS) or [(n, dict(v, **stock)) for n, v in train_curve(text, CURVE_KEYS[:1])]
        rows[spec.name] = [dict(values, run=spec.name, method=spec.method, label=spec.label or spec.method,
                                heads=spec.heads, seed=spec.seed, updates=n) for n, values in curve]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FINETUNE_CURVE_FIELDS)
        writer.writeheader()
        for name in sorted(rows):
            writer.writerows(rows[name])
    return path


def gate_summary(checkpoint: str, heads: Optional[int]) -> dict:
    """Counts of the selected (gated) checkpoint and whether it is on target."""
    report = gate_report(load_checkpoint(checkpoint)["model"])
    on_target = report["nonbinary"] == 0 and (heads is None or report["open"] == heads)
    keys = ("open", "closed", "nonbinary", "kept", "modules_active", "modules_total")
    return dict({k: report[k] for k in keys}, on_target=on_target, modules=report["modules"])


def bench_ratios(sweep: Sweep, checkpoints: Dict[str, str], heads: int, work: str,
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
           "--data", sweep.data_bin, "--heads", str(heads), "--layouts", "topk",
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
        row = rows.get(pruned_label(heads, "topk", name))
        if row is None:
            raise JobError(f"{tables}.csv has no row {pruned_label(heads, 'topk', name)!r}; see {log}")
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
    path = os.path.join(out_dir, f"{spec.prepare}_k{spec.heads}.pt")
    if not os.path.isfile(path):
        if os.path.isdir(out_dir) and os.listdir(out_dir):
            raise JobError(f"{spec.name}: {out_dir} holds masks made without K = {spec.heads}; move it away to make "
                           f"them all again (the runs that started from them then need --redo)")
        ks = sorted({r.heads for r in sweep.all_runs() if r.prepare == spec.prepare}, reverse=True)
        os.makedirs(out_dir, exist_ok=True)
        cmd = [tool("pass-michel-prune"), sweep.data_bin, sweep.base_checkpoint, "--heads", ",".join(map(str, ks)),
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
    result = {"method": spec.method, "label": spec.label or spec.method, "heads": spec.heads, "seed": spec.seed,
              "try": spec.try_name, "tuning": spec.tuning, "tuning_method": spec.tuning_method,
              "choose": spec.choose if spec.tries else None, "try_flags": spec.tries.get(spec.try_name, [])}
    if spec.train:
        selected = fine_tune(sweep, spec, data, work, result)
    else:
        selected = starting_checkpoint(sweep, spec)
        result.update(selected=os.path.basename(selected) if spec.prepare else "base",
                      updates=checkpoint_updates(selected), finetune_seconds=0.0)
    if spec.arch == "gated":
        gates = gate_summary(selected, spec.heads)
        result["gates"] = gates
        result["on_target"] = gates["on_target"]
        result["own_kept"] = gates["kept"]  # what the method keeps by itself (z > 0.5)
    timed = sweep.bench is not None
    if spec.prune:
        result.update(prune_and_score(sweep, spec, selected, spec.prune, work))
        result["bench"] = bench_ratios(sweep, {spec.name: selected}, spec.heads, os.path.join(work, "bench"))[
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
    which = ["--heads", str(spec.heads)] if how == "heads" else ["--threshold", str(KEPT_THRESHOLD)]
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
    except JobError as e:
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
    for k in sorted({s.heads for s in chosen if s.prune}):
        runs = [s for s in finished if s.prune and s.heads == k]
        checkpoints = {s.name: scored_checkpoint(sweep, s, sweep.result(s)) for s in runs}
        print(f"sweep: timing {len(runs)} runs at K = {k} side by side ({', '.join(checkpoints)})", flush=True)
        work, tables = os.path.join(sweep.workdir, "rebench", f"k{k}"), os.path.join(sweep.results, f"speed_k{k}")
        ratios = bench_ratios(sweep, checkpoints, k, work, tables)
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
    chosen = choose_try(results, spec.choose, spec.heads)
    print(f"sweep: {spec.name} uses {spec.tuning_method}'s try {chosen!r} (choice by {spec.choose})", flush=True)
    return replace(spec, try_name=chosen)


def reuse_tuning_run(sweep: Sweep, spec: RunSpec) -> Optional[dict]:
    """The result of the tuning run that is this very run (same method, try, K and seed), as
    the method's own row; None when there is none."""
    for r in sweep.runs:
        if (r.tuning and r.method == spec.method and r.try_name == spec.try_name
                and (r.heads, r.seed) == (spec.heads, spec.seed) and os.path.isfile(sweep.result_path(r))):
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
