"""The comparison sweep's config: pruning methods x K x seeds, each fine-tuned from one cached
base with the same shards, updates and learning rate (:mod:`.sweep` runs them).

A sweep is a JSON config (``results/deb-de-en/sweep.json``)::

    {"corpus": "data/deb-de-en", "workdir": "data/sweep", "results": "results/deb-de-en",
     "base": {"dir": "data/sweep/base", "updates": 5000},
     "finetune": {"shards": 8, "epochs": 8, "lr": 5e-4, "warmup": 50, "max_tokens": 4096},
     "bench": {"sentences": 192, "repeats": 5, "threads": 1},
     "runs": [{"method": "pass", "heads": [8, 16, 32], "seeds": [1],
               "flags": ["--pass-target-heads", "{K}", ...], "select": "best", "prune": "heads"}, ...]}

Optional: ``"model": {"embed_dim": 512, "ffn_embed_dim": 1024}`` sets the width of the base
and of every fine-tune (:func:`.recipes.width_flags`; default the demo's 128 / 512), and ``"bench":
false`` scores the runs without timing them (a machine whose timings would mean nothing, or
too little time).

Every run writes ``RESULTS/runs/<method>-k<K>-s<seed>.json`` when it has finished; a run with
that file is skipped, and an interrupted fine-tune resumes from its ``checkpoint_last.pt``
(fairseq's own resume), so the sweep can be stopped and started again across sessions.
``{K}``, ``{seed}`` and ``{base}`` in a run's flags are replaced by its head count, its seed and
the base's checkpoint (the teacher of ``--kd-teacher {base}``); ``"epochs"`` in an entry gives
its fine-tunes more (or fewer) epochs over the same shards than ``finetune`` (a 2x budget); ``seeds``
(default [1]) can be overridden per K with ``seeds_at`` ({"16": [1, 2, 3]}). Runs go in
rounds: every method's first K, then every method's second K, and so on.

Tuning (:mod:`.tuning`): an entry's ``tries`` ({"name": [extra flags], ...})
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
a running sweep picks them up). Optional: ``"also_heads": [8, 32]`` gives it a first-seed run
at those K's too, and ``"also_epochs": [16]`` a run at its K with that many fine-tune epochs
(method ``<method>-<E>ep``, its tries chosen as its own).
"""
import json
import os
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

from pass_fairseq.bench.variants import CHECKPOINT_NAME, CHECKPOINT_NAME_RULE
from pass_fairseq.experiments import recipes
from pass_fairseq.experiments.jobs import JobError
from pass_fairseq.experiments.tuning import CHOICES, strongest


class SweepConfigError(JobError):
    """The config is wrong: the message is one line (the file, what is wrong, how to fix it)."""


REQUIRED_BASE = ("dir", "updates")
REQUIRED_FINETUNE = ("shards", "epochs", "lr", "warmup", "max_tokens")
REQUIRED_RUN = ("method", "heads")
REQUIRED_STRONGEST = ("among", "heads", "seeds")
OPTIONAL_STRONGEST = ("also_heads", "also_epochs")


def _keys(keys) -> str:
    """``{"a", "b"}``: an object's keys, for the messages."""
    return "{" + ", ".join(f'"{k}"' for k in keys) + "}"


#: what a config must hold: key -> what it is (for the message when it is missing)
REQUIRED = {"corpus": "the corpus folder (with data-bin/ and raw/)", "workdir": "the folder for fine-tunes and masks",
            "results": "the folder for run files and tables", "base": f"the base's {_keys(REQUIRED_BASE)}",
            "finetune": f"the fine-tune budget {_keys(REQUIRED_FINETUNE)}", "runs": "the list of methods to run"}
#: the keys of ``"model"``: :func:`.recipes.width_flags`'s arguments
MODEL_KEYS = ("embed_dim", "ffn_embed_dim")


def _missing(part, keys) -> List[str]:
    """The ``keys`` that the config object ``part`` lacks, quoted (all of them when it is no object)."""
    return [repr(k) for k in keys if not isinstance(part, dict) or k not in part]


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_config(raw, path: str) -> None:
    """A :class:`SweepConfigError` naming the first missing key or misshapen value."""
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: a sweep config is a JSON object (see pass_fairseq/experiments/sweep_config.py)")
    for key, what in REQUIRED.items():
        if key not in raw:
            raise SweepConfigError(f"{path}: missing key \"{key}\" ({what})")
    for part, keys in (("base", REQUIRED_BASE), ("finetune", REQUIRED_FINETUNE)):
        if not isinstance(raw[part], dict):
            raise SweepConfigError(f"{path}: \"{part}\" must be an object with {', '.join(keys)}")
        missing = _missing(raw[part], keys)
        if missing:
            raise SweepConfigError(f"{path}: \"{part}\" is missing {', '.join(missing)}")
    if not isinstance(raw["runs"], list) or not raw["runs"]:
        raise SweepConfigError(f"{path}: \"runs\" must be a non-empty list of methods")
    for i, entry in enumerate(raw["runs"]):
        if not isinstance(entry, dict):
            raise SweepConfigError(f"{path}: runs[{i}] must be an object with {', '.join(REQUIRED_RUN)}")
        missing = _missing(entry, REQUIRED_RUN)
        if missing:
            raise SweepConfigError(f"{path}: runs[{i}] ({entry.get('method', 'no method')}) is missing"
                                   f" {', '.join(missing)}")
        if not isinstance(entry["heads"], list) or not entry["heads"] or \
                not all(isinstance(k, int) and k >= 1 for k in entry["heads"]):
            raise SweepConfigError(f"{path}: {entry['method']}: \"heads\" must be a list of head counts K >= 1")
        epochs = entry.get("epochs")
        if epochs is not None and not _positive_int(epochs):
            raise SweepConfigError(f"{path}: {entry['method']}: \"epochs\" must be a number of epochs >= 1")
        unknown = sorted(set(entry) - set(RUN_KEYS))
        if unknown:
            raise SweepConfigError(f"{path}: {entry['method']}: unknown key {', '.join(unknown)}"
                                   f" (a run takes {', '.join(RUN_KEYS)})")
    best = raw.get("strongest_baseline")
    if best is not None:
        missing = _missing(best, REQUIRED_STRONGEST)
        if missing:
            raise SweepConfigError(f"{path}: \"strongest_baseline\" is missing {', '.join(missing)}"
                                   " ({\"among\": [methods], \"heads\": K, \"seeds\": [extra seeds]})")
        unknown = sorted(set(best) - set(REQUIRED_STRONGEST) - set(OPTIONAL_STRONGEST))
        if unknown:
            raise SweepConfigError(f"{path}: \"strongest_baseline\" takes"
                                   f" {', '.join(REQUIRED_STRONGEST + OPTIONAL_STRONGEST)}, not {', '.join(unknown)}")
        for key in ("seeds",) + OPTIONAL_STRONGEST:
            values = best.get(key, [])
            if not isinstance(values, list) or not all(_positive_int(v) for v in values):
                raise SweepConfigError(f"{path}: strongest_baseline: \"{key}\" must be a list of numbers >= 1")


@dataclass
class RunSpec:
    """One fine-tune of the sweep."""

    method: str
    target_heads: int  #: K (the config's "heads")
    seed: int
    flags: List[str]
    arch: str = "gated"  #: gated (transformer_pass_iwslt) or stock (transformer_iwslt_de_en)
    prepare: Optional[str] = None  #: random | michel: start from a mask of K heads
    select: str = "best"  #: best | last
    prune: Optional[str] = "heads"  #: heads | gates | None (unpruned)
    label: str = ""
    train: bool = True  #: False: score the base (the unpruned row), or the prepared mask, without a fine-tune
    tries: Dict[str, List[str]] = field(default_factory=dict)  #: try name -> extra flags
    choose: str = "valid"  #: valid | own_count: how the try is chosen (.tuning.choose_try)
    tries_from: Optional[str] = None  #: the method whose tuning runs choose this run's try
    try_name: Optional[str] = None  #: the try this run uses (None: not chosen yet, or no tries)
    tuning: bool = False  #: a tuning run: one try at the first K and seed
    shared_finetune: bool = False  #: the fine-tune does not depend on K: one serves every K
    score_own_mask: bool = False  #: tuning runs also score the model pruned to its own kept heads
    epochs: Optional[int] = None  #: the fine-tune's epochs, when not the config's ``finetune`` epochs

    @property
    def name(self) -> str:
        if self.tuning:
            return f"{self.method}.{self.try_name}-k{self.target_heads}-s{self.seed}"
        return f"{self.method}-k{self.target_heads}-s{self.seed}"

    @property
    def finetune_name(self) -> str:
        """The fine-tune's folder name: runs that differ only in K share it when
        ``shared_finetune``."""
        tried = f".{self.try_name}" if self.try_name else ""
        k = "" if self.shared_finetune else f"-k{self.target_heads}"
        return f"{self.method}{tried}{k}-s{self.seed}"

    @property
    def tuning_method(self) -> str:
        return self.tries_from or self.method

    @property
    def all_flags(self) -> List[str]:
        """The entry's flags and its chosen try's."""
        return self.flags + self.tries.get(self.try_name, [])


#: the keys of a config's run entry: RunSpec's fields a config sets, and the K's and seeds
RUN_KEYS = ("method", "heads", "seeds", "seeds_at", "flags", "arch", "prepare", "select", "prune", "label", "train",
            "tries", "choose", "tries_from", "score_own_mask", "epochs")


def _fill(flags: List[str], target_heads: int, seed: int, base: str) -> List[str]:
    return [f.replace("{K}", str(target_heads)).replace("{seed}", str(seed)).replace("{base}", base) for f in flags]


def base_checkpoint(base: Dict) -> str:
    """The base's checkpoint, in the config's ``"base"`` folder."""
    return os.path.join(base["dir"], "checkpoint_last.pt")


def _run_spec(entry: Dict, target_heads: int, seed: int, base: str, **extra) -> RunSpec:
    """A config entry's run at K = ``target_heads`` and ``seed`` ({K}, {seed} and {base}, the
    base's checkpoint, filled in its flags)."""
    spec = {key: v for key, v in entry.items() if key not in ("heads", "seeds", "seeds_at")}
    templates = [entry.get("flags", [])] + list(entry.get("tries", {}).values())
    shared = entry.get("prepare") is None and not any("{K}" in f for t in templates for f in t)
    tries = {name: _fill(f, target_heads, seed, base) for name, f in entry.get("tries", {}).items()}
    return RunSpec(**dict(spec, flags=_fill(entry.get("flags", []), target_heads, seed, base), tries=tries),
                   target_heads=target_heads, seed=seed, shared_finetune=shared, **extra)


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
        """The sweep that the JSON config ``path`` describes; a :class:`SweepConfigError` naming
        what is wrong (a missing key, a value of the wrong kind) otherwise."""
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as e:
            raise SweepConfigError(f"{path}: cannot read it ({e.strerror or e})")
        except ValueError as e:
            raise SweepConfigError(f"{path}: not JSON ({e})")
        _check_config(raw, path)
        runs = []
        base = base_checkpoint(raw["base"])
        entries = [dict(e) for e in raw["runs"]]
        by_method = {e["method"]: e for e in entries}
        for entry in entries:
            source = entry.get("tries_from")
            if source:
                if source not in by_method or not by_method[source].get("tries"):
                    raise SweepConfigError(f"{path}: {entry['method']}: tries_from {source}: no such method with tries")
                entry["tries"], entry["choose"] = by_method[source]["tries"], by_method[source].get("choose", "valid")
        for entry in entries:
            if entry.get("choose", "valid") not in CHOICES:
                raise SweepConfigError(f"{path}: {entry['method']}: choose must be one of {', '.join(CHOICES)}")
        seeds_of = [lambda target_heads, e=e: e.get("seeds_at", {}).get(str(target_heads), e.get("seeds", [1]))
                    for e in entries]
        rounds = max(len(e["heads"]) for e in entries)
        for i in range(rounds):  # every method's first K (first seeds first), then every second K, ...
            batch = [(e, e["heads"][i], seeds(e["heads"][i])) for e, seeds in zip(entries, seeds_of)
                     if i < len(e["heads"])]
            for j in range(max(len(seeds) for _, _, seeds in batch)):
                for entry, target_heads, seeds in batch:
                    if i == j == 0 and entry.get("tries") and not entry.get("tries_from"):  # its tuning runs
                        runs += [_run_spec(entry, target_heads, seeds[0], base, try_name=t, tuning=True)
                                 for t in entry["tries"]]
                    if j < len(seeds):
                        runs.append(_run_spec(entry, target_heads, seeds[j], base))
        names = [r.name for r in runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SweepConfigError(f"{path}: runs listed twice: {', '.join(duplicates)}")
        odd = sorted({n for n in names if not CHECKPOINT_NAME.fullmatch(n)})
        if odd:
            raise SweepConfigError(f"{path}: run names name files and benchmark rows: give methods and tries names of"
                                   f" {CHECKPOINT_NAME_RULE} ({', '.join(odd)})")
        best = raw.get("strongest_baseline")
        if best:
            target_heads = best["heads"]
            missing = [m for m in best["among"] if target_heads not in by_method.get(m, {}).get("heads", [])]
            if missing:
                raise SweepConfigError(f"{path}: strongest_baseline: no run of {', '.join(missing)} at K = {target_heads}")
        bench = raw.get("bench", {})
        if bench is not False and not isinstance(bench, dict):
            raise SweepConfigError(f"{path}: \"bench\" must be pass-bench-inference's settings ({{}} for the defaults)"
                                   f" or false, not {bench!r}")
        model = raw.get("model", {})
        unknown = sorted(set(model) - set(MODEL_KEYS))
        if unknown:
            raise SweepConfigError(f"{path}: \"model\" takes {' and '.join(MODEL_KEYS)}, not {', '.join(unknown)}")
        return cls(raw["corpus"], raw["workdir"], raw["results"], raw["base"], raw["finetune"],
                   None if bench is False else bench, runs, best, by_method, model)

    def strongest_baseline(self) -> Optional[str]:
        """Among ``strongest_baseline``'s methods, the one whose first-seed run at its K has the
        best valid sacreBLEU; None until all of those runs have finished (or none is configured)."""
        if not self.strongest:
            return None
        firsts = [next(r for r in self.runs if r.method == m and r.target_heads == self.strongest["heads"] and not r.tuning)
                  for m in self.strongest["among"]]
        results = self.finished_results(firsts)
        return None if results is None else strongest({r.method: res for r, res in zip(firsts, results)})

    def all_runs(self) -> List[RunSpec]:
        """``runs`` and, once it is decided, the strongest baseline's runs with more seeds (those
        its entry does not list already)."""
        method = self.strongest_baseline()
        if method is None:
            return list(self.runs)
        k, listed, base = self.strongest["heads"], {r.name for r in self.runs}, self.base_checkpoint
        entry = self.entries[method]
        first_seed = entry.get("seeds", [1])[0]
        extra = [_run_spec(entry, k, seed, base) for seed in self.strongest["seeds"]]
        extra += [_run_spec(entry, other, first_seed, base) for other in self.strongest.get("also_heads", [])]
        for epochs in self.strongest.get("also_epochs", []):
            longer = dict(entry, method=f"{method}-{epochs}ep", epochs=epochs,
                          label=f"{entry.get('label') or method}, {epochs} epochs",
                          tries_from=entry.get("tries_from") or (method if entry.get("tries") else None))
            extra.append(_run_spec(longer, k, first_seed, base))
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
        """The width flags of the base and of every fine-tune (:func:`.recipes.width_flags`)."""
        return recipes.width_flags(**self.model)

    @property
    def budget(self) -> recipes.Finetune:
        """Every fine-tune's budget (the config's ``finetune``)."""
        ft = self.finetune
        return recipes.Finetune(lr=ft["lr"], warmup=ft["warmup"], max_tokens=ft["max_tokens"], epochs=ft["epochs"],
                                max_update=ft.get("max_update"))

    # ---- paths ----------------------------------------------------------------------
    @property
    def data_bin(self) -> str:
        return os.path.join(self.corpus, "data-bin")

    @property
    def base_checkpoint(self) -> str:
        return base_checkpoint(self.base)

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

    # ---- commands (:mod:`.recipes`, the demo's too) -------------------------------------
    def base_command(self) -> List[str]:
        """The unpruned base at this sweep's width, for its updates."""
        return recipes.base_command(self.data_bin, self.base["dir"], self.base["updates"], self.width)

    def finetune_command(self, spec: RunSpec, data: str, init: str, save_dir: str) -> List[str]:
        """The same fine-tune for every method (shards, epochs, learning rate, batch size; the
        entry's own ``"epochs"`` for a larger budget), then the run's method flags."""
        budget = self.budget if spec.epochs is None else replace(self.budget, epochs=spec.epochs)
        return recipes.finetune_command(data, init, save_dir, budget, spec.seed, gated=spec.arch == "gated",
                                        method_flags=spec.all_flags, width=self.width)
