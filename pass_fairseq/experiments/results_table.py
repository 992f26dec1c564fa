"""The sweep's table and plots, built only from the runs' own result files
(``RESULTS/runs/*.json``, written by :mod:`pass_fairseq.experiments.sweep`): no number is typed in.

* ``table.csv``: one row per run (method, K, seed, heads kept, modules active, on target,
  valid and test sacreBLEU with the per-origin halves, decoding speed-up and time over the
  per-module ideal, fine-tune wall time and updates);
* ``table.md``: one row per method and K, the mean over seeds with their spread
  (min-max) where there are several (tuning runs are not in it);
* ``tuning.md``: every tuning try (valid sacreBLEU at the first K) and where its method used it;
* ``comparison.md``: per K, every method against PASS and against the equal-budget control
  (differences of mean sacreBLEU, with their range over every pairing of seeds), and where
  its heads sit per module kind; a method fine-tuned for E epochs instead of the config's
  (named ``<method>-<E>ep``) is measured against ``pass-<E>ep`` and ``control-<E>ep``;
* ``bleu_vs_k.png`` (test BLEU against K per method, the unpruned base and the equal-budget
  control as lines), ``bleu_vs_speedup.png`` (the trade-off a user chooses on) and
  ``gates_k16.png`` (kept heads per module kind and layer of every method at K = 16);
  ``base_valid.png``: the base's validation perplexity over its updates (``base_curve.csv``,
  which the sweep writes from the base's training log); ``finetune_k16.png``: open heads and
  training NLL over the fine-tune's updates of every method at K = 16 and of the control
  (``finetune_curves.csv``, from the fine-tunes' training logs).
"""
import csv
import glob
import json
import math
import os
import re
import statistics
from collections import defaultdict
from typing import Dict, List, Optional

from pass_fairseq.files import atomic_write

#: the rows drawn as horizontal lines (no pruning) rather than as a curve over K: the base, and
#: every method or label starting with "control" (the equal-budget controls: with KD, 2x updates)
CONTROLS = ("base", "control")
#: what comparison.md measures every method against: PASS, and the equal-budget control
COMPARED_WITH = ("pass", "control")
_BUDGET = re.compile(r"-\d+ep$")


def is_control(name: str) -> bool:
    """Whether the method or label ``name`` is an unpruned row (:data:`CONTROLS`)."""
    return name == CONTROLS[0] or name.startswith(CONTROLS[1])


def budget_suffix(method: str) -> str:
    """``-16ep`` for a method fine-tuned for 16 epochs instead of the config's, else ''."""
    match = _BUDGET.search(method)
    return match.group(0) if match else ""


CSV_FIELDS = ["method", "label", "try", "tuning", "heads", "seed", "kept_heads", "modules_active", "on_target", "own_kept",
              "valid_bleu", "test_bleu", "test_ding", "test_libreoffice", "speedup", "time_over_ideal",
              "finetune_seconds", "updates", "selected"]


def load_runs(results_dir: str) -> List[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    return runs


def flat_row(run: dict) -> dict:
    """One CSV row of a run's result."""
    test, bench = run.get("test", {}), run.get("bench", {})
    return {
        "method": run["method"], "label": run.get("label", run["method"]), "try": run.get("try") or "",
        "tuning": bool(run.get("tuning")), "heads": run["heads"],
        "seed": run["seed"], "kept_heads": run.get("kept_heads"), "modules_active": run.get("modules_active"),
        "on_target": run.get("on_target", ""), "own_kept": run.get("own_kept", ""),
        "valid_bleu": run.get("valid", {}).get("sacrebleu"), "test_bleu": test.get("sacrebleu"),
        "test_ding": test.get("by_origin", {}).get("ding_sentences"),
        "test_libreoffice": test.get("by_origin", {}).get("libreoffice"),
        "speedup": bench.get("speedup", ""),
        "time_over_ideal": bench.get("time_over_ideal", ""), "finetune_seconds": run.get("finetune_seconds"),
        "updates": run.get("updates"), "selected": run.get("selected", ""),
    }


def _mean_spread(values: List[float]) -> str:
    values = [v for v in values if v not in (None, "")]
    if not values:
        return ""
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def summary_rows(rows: List[dict]) -> List[dict]:
    """One row per (label, K): means over seeds, with min-max spread."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["heads"])].append(r)
    out = []
    for (label, target_heads), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append({
            "method": label, "K": target_heads, "seeds": len(rs),
            "heads kept": "/".join(sorted({str(r["kept_heads"]) for r in rs})),
            "modules active": "/".join(sorted({str(r["modules_active"]) for r in rs})),
            "on target": "/".join(sorted({str(r["on_target"]) for r in rs if r["on_target"] != ""})) or "-",
            "valid BLEU": _mean_spread([r["valid_bleu"] for r in rs]),
            "test BLEU": _mean_spread([r["test_bleu"] for r in rs]),
            "Ding": _mean_spread([r["test_ding"] for r in rs]),
            "LibreOffice": _mean_spread([r["test_libreoffice"] for r in rs]),
            "speed-up": _mean_spread([r["speedup"] for r in rs]),
            "time / ideal": _mean_spread([r["time_over_ideal"] for r in rs]),
            "fine-tune min": _mean_spread([r["finetune_seconds"] / 60 for r in rs if r["finetune_seconds"]]),
        })
    return out


def markdown(summary: List[dict]) -> str:
    if not summary:
        return "No finished runs yet.\n"
    keys = list(summary[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in summary]
    return "\n".join(lines) + "\n"


def seed_difference(values: List[float], others: List[float]) -> str:
    """``mean(values) - mean(others)``, and where either has several seeds the range of the
    difference over every pairing of their seeds (``min - max`` to ``max - min``)."""
    if not values or not others:
        return "-"
    diff = f"{statistics.mean(values) - statistics.mean(others):+.2f}"
    if len(values) * len(others) == 1:
        return diff
    return f"{diff} ({min(values) - max(others):+.2f} to {max(values) - min(others):+.2f})"


def deployed_modules(run: dict) -> Optional[List[dict]]:
    """``[{"name": module, "kept": [heads]}]`` of the pruned model a run scored: its
    ``pruned_heads`` (from the pruned checkpoint), or for a result written before the sweep
    recorded them its gates' own kept heads when they are as many as the pruned model kept
    (then they are the same heads); None when neither is known."""
    if run.get("pruned_heads") is not None:
        return [{"name": name, "kept": kept} for name, kept in run["pruned_heads"].items()]
    modules = run.get("gates", {}).get("modules")
    if modules and sum(len(m["kept"]) for m in modules) == run.get("kept_heads"):
        return [{"name": m["name"], "kept": m["kept"]} for m in modules]
    return None


def heads_per_kind(modules: List[dict]) -> Dict[str, int]:
    """Kept heads per module kind (encoder self, decoder self, decoder cross, in
    ``gate_report.MODULE_KINDS`` order; 0 where a kind kept none) of ``deployed_modules``."""
    from pass_fairseq.gate_report import MODULE_KINDS, layer_grid

    grid = layer_grid({"modules": modules})
    return {label: sum(grid.get(label, [])) for _, _, label in MODULE_KINDS}


def first_seeds(items: List[dict]) -> Dict[tuple, int]:
    """(method, K) -> the lowest seed among ``items`` (runs or curve rows): the run a plot of
    one seed per method shows."""
    seeds: Dict[tuple, int] = {}
    for r in items:
        key = (r["method"], int(r["heads"]))
        seeds[key] = min(int(r["seed"]), seeds.get(key, int(r["seed"])))
    return seeds


def comparison_rows(runs: List[dict]) -> List[dict]:
    """Per K (ascending; best mean test BLEU first within a K), each method's test and valid
    differences from PASS, its test difference from the equal-budget control, and the heads of
    its pruned models per module kind (mean over seeds). Tuning runs and the unpruned rows are
    left out."""
    from pass_fairseq.gate_report import MODULE_KINDS

    kind_labels = [label for _, _, label in MODULE_KINDS]
    scores: Dict[tuple, Dict[str, List[float]]] = defaultdict(lambda: {"test": [], "valid": []})
    kinds: Dict[tuple, List[Dict[str, int]]] = defaultdict(list)
    labels: Dict[str, str] = {}
    for r in (r for r in runs if not r.get("tuning")):
        key = (r["method"], r["heads"])
        labels[r["method"]] = r.get("label", r["method"])
        for split in ("test", "valid"):
            if r.get(split, {}).get("sacrebleu") is not None:
                scores[key][split].append(r[split]["sacrebleu"])
        modules = deployed_modules(r)
        if modules:
            kinds[key].append(heads_per_kind(modules))
    reference, control = COMPARED_WITH
    controls = {method: v for (method, _), v in scores.items() if method.startswith(control)}
    out = []
    for target_heads in sorted({k for (method, k) in scores if not is_control(method)}):
        methods = sorted((m for (m, k) in scores if k == target_heads and not is_control(m)),
                         key=lambda m: -statistics.mean(scores[m, target_heads]["test"] or [-math.inf]))
        for method in methods:
            own, per_kind = scores[method, target_heads], kinds.get((method, target_heads))
            pass_scores = scores.get((reference + budget_suffix(method), target_heads))
            control_scores = controls.get(control + budget_suffix(method))
            versus_pass = method != reference + budget_suffix(method) and pass_scores
            out.append({
                "K": target_heads, "method": labels[method], "seeds": len(own["test"]), "test BLEU": _mean_spread(own["test"]),
                "test - pass": seed_difference(own["test"], pass_scores["test"]) if versus_pass else "-",
                "valid - pass": seed_difference(own["valid"], pass_scores["valid"]) if versus_pass else "-",
                "test - control": seed_difference(own["test"], control_scores["test"]) if control_scores else "-",
                "heads: " + " / ".join(kind_labels): " / ".join(
                    f"{statistics.mean(k[kind] for k in per_kind):.3g}" for kind in kind_labels) if per_kind else "-",
            })
    return out


def tuning_rows(runs: List[dict]) -> List[dict]:
    """One row per tuning try: its valid score and own count, and the runs of its method
    that used it (K/seed)."""
    out = []
    for t in (r for r in runs if r.get("tuning")):
        out.append({"method": t["method"], "try": t["try"], "chosen by": t.get("choose") or "",
                    "K": t["heads"], "valid BLEU": t.get("valid", {}).get("sacrebleu"),
                    "own kept": t.get("own_kept", ""), "on target": t.get("on_target", ""),
                    "own mask: valid / test BLEU": (f"{t['own']['valid']['sacrebleu']} / {t['own']['test']['sacrebleu']}"
                                                    if t.get("own") else "-"),
                    "used by": ", ".join(f"{m} K={k} s{s}" for m, k, s in _users(runs, t)) or "-",
                    "flags": " ".join(t.get("try_flags", []))})
    return out


def _users(runs: List[dict], tuning_run: dict) -> List[tuple]:
    """(method, K, seed) of the non-tuning runs that used ``tuning_run``'s try of its method."""
    return sorted((r["method"], r["heads"], r["seed"]) for r in runs
                  if not r.get("tuning") and r.get("try") == tuning_run["try"]
                  and r.get("tuning_method", r["method"]) == tuning_run["method"])


def write_table(results_dir: str) -> List[dict]:
    """Write table.csv (every run), table.md (without the tuning runs), tuning.md (when
    there are tuning runs) and comparison.md from the run files; returns the CSV rows."""
    runs = load_runs(results_dir)
    rows = [flat_row(r) for r in runs]
    with atomic_write(os.path.join(results_dir, "table.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(os.path.join(results_dir, "table.md")) as f:
        f.write(markdown(summary_rows([r for r in rows if not r["tuning"]])))
    tuning = os.path.join(results_dir, "tuning.md")
    if any(r.get("tuning") for r in runs):
        with atomic_write(tuning) as f:
            f.write(markdown(tuning_rows(runs)))
    elif os.path.isfile(tuning):  # a config without tries has no tuning table
        os.remove(tuning)
    with atomic_write(os.path.join(results_dir, "comparison.md")) as f:
        f.write(markdown(comparison_rows(runs)))
    return rows


def plot(results_dir: str, rows: Optional[List[dict]] = None) -> List[str]:
    """The three plots (PNG) from the run files; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in load_runs(results_dir) if not r.get("tuning")]
    rows = [r for r in (rows if rows is not None else [flat_row(r) for r in runs]) if not r["tuning"]]
    written = []
    by_label: Dict[str, Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["test_bleu"] is not None:
            by_label[r["label"]][r["heads"]].append(r["test_bleu"])
    styles = method_styles(plt, by_label)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(by_label.items()):
        targets = sorted(points)
        means = [statistics.mean(points[k]) for k in targets]
        if is_control(label):
            ax.axhline(means[0], label=label, **styles[label])
            continue
        ax.plot(targets, means, label=label, **styles[label])
    written.append(_finish(plt, fig, ax, "heads kept (K)", "test BLEU against K",
                           os.path.join(results_dir, "bleu_vs_k.png")))

    timed = {label: [(r["speedup"], r["test_bleu"]) for r in rows if r["label"] == label
                     and r["speedup"] not in ("", None) and r["test_bleu"] is not None] for label in sorted(by_label)}
    if any(timed.values()):  # a sweep with "bench": false has no speed-ups
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, pts in timed.items():
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, color=styles[label]["color"],
                           marker=styles[label].get("marker", "o"))
        written.append(_finish(plt, fig, ax, "decoding speed-up over the unpruned model", "quality against measured"
                               " decoding speed", os.path.join(results_dir, "bleu_vs_speedup.png")))

    seeds = first_seeds(runs)
    shown = [(r, deployed_modules(r)) for r in runs if r["heads"] == 16 and r["seed"] == seeds[r["method"], 16]]
    grids = [(r.get("label", r["method"]), modules, max(len(m["gates"]) for m in r["gates"]["modules"]))
             for r, modules in shown if modules]
    if grids:
        written.append(_gate_maps(plt, grids, os.path.join(results_dir, "gates_k16.png")))
    curve = os.path.join(results_dir, "base_curve.csv")
    if os.path.isfile(curve):
        written.append(_base_curve(plt, curve, os.path.join(results_dir, "base_valid.png")))
    curves = os.path.join(results_dir, "finetune_curves.csv")
    if os.path.isfile(curves):
        written.append(_finetune_curves(plt, curves, os.path.join(results_dir, "finetune_k16.png"), styles))
    return written


def method_styles(plt, labels) -> Dict[str, dict]:
    """One look per method label, the same in every plot: the controls dashed (the base gray,
    the control black), every other label its own colour, dash and marker."""
    palette = plt.get_cmap("tab20").colors
    styles = {"base": {"color": "gray", "linestyle": "--"}, "control": {"color": "black", "linestyle": "--"}}
    for i, label in enumerate(sorted(set(labels) - set(CONTROLS))):
        styles[label] = {"color": palette[2 * i % 20 + i // 10 % 2], "linestyle": ("-", "--", "-.", ":")[i % 4],
                         "marker": "osD^vP"[i % 6]}
    return styles


def _finetune_curves(plt, csv_path: str, path: str, styles: Dict[str, dict], target_heads: int = 16) -> str:
    """Over the fine-tune's updates, for the first seed of every method at ``target_heads`` (and the
    control): the open heads of the methods whose count moves (left; the others hold exactly
    K throughout), with the target of a scheduled one (``--pass-target-schedule``), and the
    training NLL (right); ``styles``: :func:`method_styles`."""
    curves: Dict[tuple, List[dict]] = defaultdict(list)  # (label, run) -> its rows
    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seeds = first_seeds(rows)
    for r in rows:
        if (int(r["heads"]) == target_heads or is_control(r["method"])) and \
                int(r["seed"]) == seeds[r["method"], int(r["heads"])]:
            curves[r["label"], r["run"]].append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, _), points in sorted(curves.items()):
        updates = [int(p["updates"]) for p in points]
        opened = [float(p["pass_open"]) for p in points if p["pass_open"] != ""]
        # the label's look from the other plots, without markers (one every 25 updates clutters)
        style = {k: v for k, v in styles.get(label, {}).items() if k != "marker"}
        if opened and len(set(opened)) > 1:
            left.plot(updates, opened, label=label, **style)
        target = [(n, float(p["pass_target"])) for n, p in zip(updates, points) if p.get("pass_target")]
        if target and len({t for _, t in target}) > 1:  # a scheduled target: thin, in the method's colour
            left.plot(*zip(*target), color=style.get("color"), linewidth=0.8, linestyle=":",
                      label=f"{label}: scheduled target")
        right.plot(updates, [float(p["nll_loss"]) for p in points], label=label, **style)
    left.axhline(target_heads, color="gray", linewidth=0.8)
    left.set_ylabel("open heads (mean over the log interval)")
    left.set_title(f"open heads while fine-tuning to K = {target_heads}", fontsize=9)
    right.set_ylabel("training NLL (mean over the log interval)")
    right.set_title(f"training NLL at K = {target_heads}, and the equal-budget control", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("fine-tune updates")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def _base_curve(plt, csv_path: str, path: str) -> str:
    """The base's validation perplexity against its updates (from ``base_curve.csv``)."""
    with open(csv_path, encoding="utf-8") as f:
        points = [(int(r["updates"]), float(r["valid_ppl"])) for r in csv.DictReader(f)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("updates")
    ax.set_ylabel("valid perplexity")
    ax.set_yscale("log")
    ax.set_title("the sweep's base: validation perplexity")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def _finish(plt, fig, ax, xlabel: str, title: str, path: str) -> str:
    """Label a test-BLEU plot, save it as PNG and close it; returns ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test sacreBLEU")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def _gate_maps(plt, grids, path: str, columns: int = 4) -> str:
    """Kept heads per attention module of each pruned model (rows: module kind, columns:
    layer), one panel per method (``grids``: (label, ``deployed_modules``, heads per module)),
    ``columns`` panels a row."""
    from pass_fairseq.gate_report import layer_grid

    rows = math.ceil(len(grids) / columns)
    cols = min(columns, len(grids))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(grids):]:
        ax.axis("off")
    for ax, (label, modules, per_module) in zip(axes.flat, grids):
        grid = layer_grid({"modules": modules})
        data = list(grid.values())
        ax.imshow(data, cmap="Blues", vmin=0, vmax=per_module, aspect="auto")
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > per_module / 2 else "black")
        ax.set_yticks(range(len(grid)), list(grid), fontsize=7)
        ax.set_xticks(range(len(data[0])), [str(i) for i in range(len(data[0]))], fontsize=7)
        ax.set_xlabel("layer", fontsize=7)
        kept = [len(m["kept"]) for m in modules]
        ax.set_title(f"{label}: {sum(kept)} heads, {sum(1 for k in kept if k)} modules", fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path
