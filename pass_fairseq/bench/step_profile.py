"""One attention module's call, isolated from the rest of the decoder (``pass-profile-step``).

Per module kind (:data:`~pass_fairseq.gate_report.MODULE_KINDS`) it times stock fairseq's
``MultiheadAttention`` with every head and pruned modules (:class:`PrunedMultiheadAttention`)
keeping 1 ... heads heads, as fairseq's generator calls them in inference:

* encoder self: one call over the source (sentences x source length), with a padding mask
  when the batch has several sentences (the encoder passes one when the batch has padding);
* decoder self and decoder cross: a decoding step for every sentence's beam, the key/value
  cache applied and grown, and before every step but the first the beam reordering the
  generator does (``reorder_incremental_state``), averaged over the steps of one output;
  cross attention gets the encoder output (one copy per hypothesis) and its padding mask,
  with ``need_weights`` off as in every decoder layer but the alignment layer (the last,
  whose cross attention also returns its weights: not profiled here).

The beam size reaches the pruned modules (fairseq's generator gives it to the plugin's
models, :mod:`pass_fairseq.models.beam_sharing`) and not the stock module (the stock
``transformer`` has no ``set_beam_size``), as in a real decode.

The modules are timed side by side (interleaved repeats after warm-up, median), and
torch.profiler counts the aten operators one call runs. Against the stock module, a pruned
module with k of H heads has the ideal share k / H of the stock call (the per-module ideal
of :mod:`pass_fairseq.bench.summary`); ``over ideal share`` is its call over that share: the
fixed cost of a call that no pruning removes. The fit fixed + per_head x k over the pruned
modules is the cost model of the end-to-end benchmark without the decoder around it.
"""
import time
from statistics import median
from typing import Dict, List, NamedTuple

import torch
from fairseq.modules.multihead_attention import MultiheadAttention
from torch.profiler import ProfilerActivity, profile

from pass_fairseq.bench.summary import fit_line, repeat_spread
from pass_fairseq.gate_report import MODULE_KINDS
from pass_fairseq.modules.pruned_attention import PrunedMultiheadAttention

KIND_LABELS = [label for _, _, label in MODULE_KINDS]


class StepSetup(NamedTuple):
    """The shapes of one benchmark configuration (defaults: the demo's model, the inference
    benchmark's decoding)."""

    embed_dim: int = 128
    num_heads: int = 4
    sentences: int = 1
    beam: int = 5
    src_len: int = 20
    steps: int = 20


class Caller:
    """Runs one module kind's calls for one configuration on fixed random inputs."""

    def __init__(self, kind: str, setup: StepSetup, seed: int = 1):
        gen = torch.Generator().manual_seed(seed)
        rows = setup.sentences * setup.beam
        self.kind, self.setup = kind, setup
        self.source = torch.randn(setup.src_len, setup.sentences, setup.embed_dim, generator=gen)
        # the generator repeats every sentence's encoder output once per beam entry
        self.encoder_out = self.source.repeat_interleave(setup.beam, dim=1)
        self.padding = torch.zeros(rows, setup.src_len, dtype=torch.bool)
        self.source_padding = None if setup.sentences == 1 else self.padding[:setup.sentences]
        self.queries = torch.randn(setup.steps, 1, rows, setup.embed_dim, generator=gen)
        offsets = torch.randint(setup.beam, (setup.steps, rows), generator=gen)
        starts = (torch.arange(setup.sentences) * setup.beam).repeat_interleave(setup.beam)
        self.orders = starts + offsets  #: per step, the beam entries each row continues

    @property
    def calls(self) -> int:
        """Calls of one :meth:`run` (the unit of the per-call time)."""
        return 1 if self.kind == "encoder self" else self.setup.steps

    def run(self, module) -> None:
        if self.kind == "encoder self":
            module(self.source, self.source, self.source, key_padding_mask=self.source_padding, need_weights=False)
            return
        state: Dict = {}
        for step in range(self.setup.steps):
            if step:
                module.reorder_incremental_state(state, self.orders[step])
            x = self.queries[step]
            if self.kind == "decoder self":
                module(x, x, x, incremental_state=state, need_weights=False)
            else:
                module(x, self.encoder_out, self.encoder_out, key_padding_mask=self.padding,
                       incremental_state=state, static_kv=True, need_weights=False)


def build_modules(kind: str, setup: StepSetup, seed: int = 1) -> Dict[str, torch.nn.Module]:
    """``stock`` (fairseq's module, every head) and ``k heads`` for k = 1 ... heads (pruned
    modules cut from it), in evaluation mode; the pruned modules know the beam size."""
    cross = kind == "decoder cross"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        stock = MultiheadAttention(setup.embed_dim, setup.num_heads, self_attention=not cross,
                                   encoder_decoder_attention=cross)
    modules = {"stock": stock.eval()}
    for k in range(1, setup.num_heads + 1):
        pruned = PrunedMultiheadAttention.from_attention(stock, list(range(k))).eval()
        pruned.set_beam_size(setup.beam)
        rows = slice(0, k * stock.head_dim)
        with torch.no_grad():
            for name in ("q_proj", "k_proj", "v_proj"):
                getattr(pruned, name).weight.copy_(getattr(stock, name).weight[rows])
                getattr(pruned, name).bias.copy_(getattr(stock, name).bias[rows])
            pruned.out_proj.weight.copy_(stock.out_proj.weight[:, rows])
            pruned.out_proj.bias.copy_(stock.out_proj.bias)
        modules[f"{k} heads"] = pruned
    return modules


def aten_ops_per_call(caller: Caller, module) -> float:
    """aten operators (nested ones included) that one call runs, from torch.profiler."""
    with torch.inference_mode():
        caller.run(module)  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            caller.run(module)
    return sum(1 for e in prof.events() if e.name.startswith("aten::")) / caller.calls


def profile_kind(kind: str, setup: StepSetup, warmup: int = 2, repeats: int = 7) -> List[dict]:
    """One row per module of :func:`build_modules`: microseconds per call (median over
    interleaved repeats), its repeat spread, aten operators per call, and for the pruned
    modules the ideal share of the stock call and the call over it."""
    caller = Caller(kind, setup)
    modules = build_modules(kind, setup)
    times: Dict[str, List[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for rep in range(warmup + repeats):
            for name, module in modules.items():
                start = time.perf_counter()
                caller.run(module)
                elapsed = time.perf_counter() - start
                if rep >= warmup:
                    times[name].append(elapsed / caller.calls * 1e6)
    stock_us = median(times["stock"])
    rows = []
    for name, module in modules.items():
        us = median(times[name])
        kept = setup.num_heads if name == "stock" else module.num_heads
        row = {"kind": kind, "module": name, "heads": kept, "us_per_call": round(us, 1),
               "spread": round(repeat_spread(times[name]), 3),
               "aten_ops": round(aten_ops_per_call(caller, module), 1), "ideal_us": "", "over_ideal": ""}
        if name != "stock":
            ideal = stock_us * kept / setup.num_heads
            row.update(ideal_us=round(ideal, 1), over_ideal=round(us / ideal, 2))
        rows.append(row)
    return rows


def fit_rows(rows: List[dict]) -> List[dict]:
    """Per module kind: fixed + per_head x heads fitted over its pruned modules (us)."""
    fits = []
    for kind in KIND_LABELS:
        points = [(r["heads"], r["us_per_call"]) for r in rows if r["kind"] == kind and r["module"] != "stock"]
        fit = fit_line(points)
        if fit:
            stock = next(r["us_per_call"] for r in rows if r["kind"] == kind and r["module"] == "stock")
            fits.append({"kind": kind, "fixed_us": round(fit[0], 1), "per_head_us": round(fit[1], 1),
                         "stock_us": stock})
    return fits
