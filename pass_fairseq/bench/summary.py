"""The inference benchmark's table rows from its timings: pure arithmetic, no torch.

Every time is the median over the timed repeats. T is a model's end-to-end decoding time,
A its attention time (every attention module's forward plus its beam reordering of its
key/value cache), T_noattn the time of the model whose attention modules are all skipped.

* speed-up = T_unpruned / T; attention speed-up = A_unpruned / A; attention share = A / T;
* per-module ideal of a pruned model: T_noattn + sum_m A_unpruned[m] * kept[m] / num_heads[m];
  its attention part alone, sum_m A_unpruned[m] * kept[m] / num_heads[m], is the ideal
  attention time (what the mask allows: a decoder head costs more than an encoder head);
* ideal attention speed-up = A_unpruned / ideal attention time; ideal speed-up =
  T_unpruned / ideal; time / ideal = T / ideal (1 is ideal; above 1, the overhead left);
* time / gated ideal: the same with the gated model's per-module attention times in place
  of the stock model's: the ideal of the plugin's own attention path with heads removed,
  so a gain of that path over stock fairseq's (the encoder attention's one copy per
  sentence under beam search) cannot hide the per-call overhead of small modules;
* repeat spread = (max - min) / median of a model's end-to-end times over the repeats: how
  far single repeats of the same model scatter on this machine, the scale below which
  differences between rows are noise.

The table reports ratios (speed-ups, time over ideal) and throughputs; never single
absolute times, except in the cost model (:func:`cost_model`): per module kind, the
per-call attention time of the pruned models' modules fitted as fixed + per_head x kept
heads (least squares over every active module of every pruned model in the run).
"""
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Dict, List, NamedTuple, Optional

from pass_fairseq.gate_report import MODULE_KINDS, module_kind

#: (row key, column title) of the markdown table, in order
COLUMNS = [
    ("model", "model"), ("kept_heads", "heads"), ("skipped_modules", "skipped modules"), ("params", "params"),
    ("file_MB", "file MB"), ("sent_per_s", "sent/s"), ("tok_per_s", "tok/s"), ("speedup", "speed-up"),
    ("attn_speedup", "attention speed-up"), ("attn_share", "attention share"),
    ("ideal_attn_speedup", "ideal attention speed-up"), ("ideal_speedup", "ideal speed-up"),
    ("time_over_ideal", "time / ideal"), ("time_over_gated_ideal", "time / gated ideal"),
    ("spread", "repeat spread"),
]


@dataclass
class ModelTiming:
    """One model's measurements, one entry per timed repeat.

    ``kind`` is ``unpruned``, ``gated``, ``noattn`` or ``pruned`` (the ideal columns are
    filled for pruned models only); ``kept`` maps each attention module to its number of
    kept heads (None: every head)."""

    label: str
    kind: str
    e2e: List[float]
    attn: List[float]
    per_module: Dict[str, List[float]]
    tokens: int
    kept: Optional[Dict[str, int]]
    params: int
    file_bytes: int
    #: attention module -> forward calls in one decoding pass
    calls: Dict[str, int] = field(default_factory=dict)


class Summary(NamedTuple):
    rows: List[dict]
    #: A_unpruned / T_unpruned
    base_attn_share: float
    #: T_noattn / T_unpruned
    noattn_over_base: float


def summarize(timings: List[ModelTiming], num_heads: Dict[str, int], sentences: int) -> Summary:
    """Table rows (keys of :data:`COLUMNS`) from ``timings``, which hold one ``unpruned``
    and one ``noattn`` model (and the ``gated`` one for the gated ideal); ``num_heads`` maps
    every attention module to its head count."""
    base = next(t for t in timings if t.kind == "unpruned")
    noattn = next(t for t in timings if t.kind == "noattn")
    gated = next((t for t in timings if t.kind == "gated"), None)
    t_base, a_base, t_noattn = median(base.e2e), median(base.attn), median(noattn.e2e)
    a_base_mod = {name: median(v) for name, v in base.per_module.items()}
    a_gated_mod = {name: median(v) for name, v in gated.per_module.items()} if gated else None
    rows = []
    for timing in timings:
        t, a = median(timing.e2e), median(timing.attn)
        kept = timing.kept
        row = {
            "model": timing.label,
            "kept_heads": sum(kept.values()) if kept is not None else sum(num_heads.values()),
            "skipped_modules": sum(1 for n in kept.values() if not n) if kept is not None else 0,
            "params": timing.params,
            "file_MB": round(timing.file_bytes / 2**20, 3),
            "sent_per_s": round(sentences / t, 1),
            "tok_per_s": round(timing.tokens / t, 1),
            "speedup": round(t_base / t, 3),
            "attn_speedup": round(a_base / a, 2) if a > 0 else float("inf"),
            "attn_share": round(a / t, 3),
            "ideal_attn_speedup": "",
            "ideal_speedup": "",
            "time_over_ideal": "",
            "time_over_gated_ideal": "",
            "spread": repeat_spread(timing.e2e),
        }
        if timing.kind == "pruned":
            ideal_attn = _ideal_attention(a_base_mod, kept, num_heads)
            ideal = t_noattn + ideal_attn
            row["ideal_attn_speedup"] = round(a_base / ideal_attn, 2)
            row["ideal_speedup"] = round(t_base / ideal, 3)
            row["time_over_ideal"] = round(t / ideal, 3)
            if a_gated_mod is not None:
                row["time_over_gated_ideal"] = round(t / (t_noattn + _ideal_attention(a_gated_mod, kept, num_heads)), 3)
        rows.append(row)
    return Summary(rows, a_base / t_base, t_noattn / t_base)


def _ideal_attention(module_times: Dict[str, float], kept: Dict[str, int], num_heads: Dict[str, int]) -> float:
    """sum_m A[m] * kept[m] / num_heads[m]: the attention time a mask allows, from an unpruned
    model's per-module times ``module_times``."""
    return sum(module_times.get(m, 0.0) * kept[m] / n for m, n in num_heads.items())


def repeat_spread(times: List[float]) -> float:
    """(max - min) / median of one model's times over the repeats, rounded to 3 places."""
    return round((max(times) - min(times)) / median(times), 3)


#: (row key, column title) of the cost-model table
COST_COLUMNS = [("kind", "module kind"), ("calls", "calls per pass"), ("fixed_us", "fixed us per call"),
                ("per_head_us", "us per head per call"), ("fit_full_us", "fit at all heads"),
                ("stock_us", "stock module, all heads"), ("gated_us", "gated module, all heads"),
                ("skipped_us", "skipped module"), ("points", "points")]


def per_call_us(timing: ModelTiming, module: str) -> Optional[float]:
    """Median attention time of one forward call of ``module`` in ``timing`` (microseconds,
    its beam reordering included)."""
    calls = timing.calls.get(module)
    times = timing.per_module.get(module)
    return median(times) / calls * 1e6 if calls and times else None


def fit_line(points: List[tuple]) -> Optional[tuple]:
    """Least-squares (intercept, slope) of y on x; None with fewer than two distinct x."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx, my = mean(xs), mean(y for _, y in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def cost_model(timings: List[ModelTiming], num_heads: Dict[str, int]) -> List[dict]:
    """Per module kind (:data:`MODULE_KINDS`): the fitted fixed and per-head cost of one
    call of a pruned module, what the fit gives at all heads, the stock (unpruned) and the
    gated module's measured cost at all heads and a skipped module's (every time in
    microseconds)."""
    kept_points, stock, gated, skipped, calls = (defaultdict(list), defaultdict(list), defaultdict(list),
                                                 defaultdict(list), {})
    for timing in timings:
        for module, n_heads in num_heads.items():
            kind = module_kind(module)
            us = per_call_us(timing, module)
            if kind is None or us is None:
                continue
            calls[kind[0]] = timing.calls[module]
            if timing.kind == "unpruned":
                stock[kind[0]].append(us)
            elif timing.kind == "gated":
                gated[kind[0]].append(us)
            elif timing.kind == "pruned" and timing.kept[module]:
                kept_points[kind[0]].append((timing.kept[module], us))
            elif timing.kind == "pruned":
                skipped[kind[0]].append(us)
    rows = []
    for _, _, label in MODULE_KINDS:
        if label not in calls:
            continue
        fit = fit_line(kept_points[label])
        full = max((n for m, n in num_heads.items() if (module_kind(m) or ("",))[0] == label), default=0)
        rows.append({
            "kind": label, "calls": calls[label],
            "fixed_us": round(fit[0], 1) if fit else "", "per_head_us": round(fit[1], 1) if fit else "",
            "fit_full_us": round(fit[0] + fit[1] * full, 1) if fit else "",
            "stock_us": round(mean(stock[label]), 1) if stock[label] else "",
            "gated_us": round(mean(gated[label]), 1) if gated[label] else "",
            "skipped_us": round(mean(skipped[label]), 1) if skipped[label] else "",
            "points": len(kept_points[label]),
        })
    return rows
