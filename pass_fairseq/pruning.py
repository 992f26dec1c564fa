"""Head selection and physical head removal on bare state dicts (docs/method.md, "Test time").

Pure torch, no fairseq: everything here works on ``{name: tensor}`` dicts, so it can be
tested alone and reused by the checkpoint converter and the benchmark.

An attention module is named by its state-dict prefix (``decoder.layers.3.encoder_attn``);
it is *gated* when ``<prefix>.gate.log_alpha`` exists, and subset-gated when
``<prefix>.gate.subset_k`` records the model's K too (:func:`state_dict_gates`). Heads are laid out as fairseq lays
them out: head ``h`` owns rows ``h*d:(h+1)*d`` of q/k/v_proj and the same columns of
out_proj, ``d = embed_dim // heads``.

Folding: the gated model multiplies head h's output by its eval gate ``z_h`` right before
out_proj, which is linear, so ``out_proj(z * o) = (W * z_cols) o + b``: scaling head h's
out_proj columns by ``z_h`` gives the same outputs without the gate, exactly, for any z.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from pass_fairseq.errors import PassError
from pass_fairseq.gate_schedule import SCHEDULE_BUFFERS
from pass_fairseq.gates import (GAMMA, GATE_KEY, KEPT_THRESHOLD, REOPEN_KEY, SUBSET_K_KEY, ZETA, count_gates,
                                gate_values, top_k_mask)

#: per-module entries of the gated module that a pruned or stock module does not have
GATE_ONLY_SUFFIXES = (GATE_KEY, REOPEN_KEY, SUBSET_K_KEY, ".conf_mean", ".conf_count")
PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def gate_only(key: str) -> bool:
    """Whether a state-dict entry exists only in a gated model (a gate or a schedule buffer)."""
    return key in SCHEDULE_BUFFERS or any(key.endswith(s) for s in GATE_ONLY_SUFFIXES)


class PruningError(PassError):
    """Bad input for pruning; the message is one line meant for the user."""


def gated_modules(state_dict: Dict[str, Tensor]) -> List[str]:
    """Prefixes of the gated attention modules, in state-dict order."""
    return [k[: -len(GATE_KEY)] for k in state_dict if k.endswith(GATE_KEY)]


def state_dict_gates(state_dict: Dict[str, Tensor]) -> Tuple[List[str], List[Tensor], Optional[int]]:
    """(module prefixes, their log_alpha, K) of a state dict's gates, in state-dict order;
    K is the subset gates' recorded K, None for Hard Concrete gates. Whatever reads a
    checkpoint's gates starts here and turns them into gates with
    :func:`pass_fairseq.gates.gate_values` (through :func:`module_gates` or ``count_gates``)."""
    prefixes = gated_modules(state_dict)
    recorded = [int(state_dict[p + SUBSET_K_KEY]) for p in prefixes if p + SUBSET_K_KEY in state_dict]
    target_heads = None
    if recorded:
        if len(recorded) != len(prefixes) or len(set(recorded)) != 1 or recorded[0] < 1:
            raise PruningError(f"the subset gates record inconsistent K ({sorted(set(recorded))} in {len(recorded)}"
                               f" of {len(prefixes)} modules): give a checkpoint trained with subset gates")
        target_heads = recorded[0]
    return prefixes, [state_dict[p + GATE_KEY] for p in prefixes], target_heads


def module_gates(state_dict: Dict[str, Tensor], gamma: float = GAMMA, zeta: float = ZETA) -> Dict[str, Tensor]:
    """{module prefix: deterministic gates (float32, CPU)} of a gated state dict."""
    prefixes, log_alphas, target_heads = state_dict_gates(state_dict)
    return dict(zip(prefixes, gate_values([la.cpu() for la in log_alphas], target_heads, gamma, zeta)))


def select_heads(
    log_alphas: Sequence[Tensor],
    target_heads: Optional[int] = None,
    threshold: Optional[float] = None,
    subset_target_heads: Optional[int] = None,
    gamma: float = GAMMA,
    zeta: float = ZETA,
) -> List[List[int]]:
    """Kept head indices of each module (sorted), from the modules' ``log_alpha`` (and the
    K that subset gates were trained with, ``subset_target_heads``; None for Hard Concrete).

    * ``target_heads=K``: the K largest log_alpha over all modules (open gates all read z = 1, so
      z cannot rank them); ties go to the earlier module, then the lower head;
    * ``threshold=T``: the heads whose eval gate z > T;
    * neither: the kept heads (z > 0.5, the one definition of "kept", see
      :func:`pass_fairseq.gates.count_gates`; exactly K for subset gates); refused if some
      gate is strictly between 0 and 1, so that pruning leaves the model's outputs exactly
      as they are.
    """
    if target_heads is not None and threshold is not None:
        raise PruningError("--heads and --threshold exclude each other: give at most one")
    if not log_alphas:
        raise PruningError("no gated attention module: give a checkpoint trained with a transformer_pass architecture")
    counts = count_gates([la.cpu() for la in log_alphas], subset_target_heads, gamma, zeta)
    total, zs = counts.total, counts.gates
    if target_heads is not None:
        if not 1 <= target_heads <= total:
            raise PruningError(f"--heads {target_heads} is out of range: the model has {total} heads, give 1..{total}")
        mask = top_k_mask(torch.cat([la.detach().cpu().reshape(-1) for la in log_alphas]), target_heads)
        return [[h for h, v in enumerate(m.tolist()) if v] for m in mask.split([la.numel() for la in log_alphas])]
    if threshold is not None:
        if not 0.0 <= threshold < 1.0:
            raise PruningError(f"--threshold {threshold} is out of range: give 0 <= T < 1 (heads with z > T are kept)")
        return [[h for h, v in enumerate(z.tolist()) if v > threshold] for z in zs]
    nonbinary = int(counts.nonbinary)
    if nonbinary:
        raise PruningError(
            f"{nonbinary} of {total} gates are neither 0 nor 1: say what to keep with --heads K or --threshold T")
    return [[h for h, v in enumerate(z.tolist()) if v > KEPT_THRESHOLD] for z in zs]


def head_columns(kept: Sequence[int], head_dim: int) -> Tensor:
    """Row (q/k/v) or column (out_proj) indices that belong to the ``kept`` heads."""
    if not kept:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in kept])


def module_shape(state_dict: Dict[str, Tensor], prefix: str) -> Tuple[int, int]:
    """(num_heads, head_dim) of a gated module."""
    num_heads = state_dict[prefix + GATE_KEY].numel()
    inner = state_dict[prefix + ".q_proj.weight"].size(0)
    if inner % num_heads:
        raise PruningError(f"{prefix}: q_proj has {inner} rows, not a multiple of its {num_heads} heads")
    return num_heads, inner // num_heads


def fold_module(
    state_dict: Dict[str, Tensor],
    prefix: str,
    kept: Sequence[int],
    physical: bool,
    z: Tensor,
) -> Dict[str, Tensor]:
    """New entries for one gated module with its deterministic gates ``z`` folded into out_proj.

    ``physical``: q/k/v rows and out_proj columns of the dropped heads are removed (the
    result has ``len(kept) * head_dim`` inner channels; zero heads leaves empty q/k/v and
    an ``(embed_dim, 0)`` out_proj weight, whose bias is the module's whole output).
    Otherwise shapes stay and dropped heads' out_proj columns are zeroed (stock format).
    Gate entries are not in the result.
    """
    heads, head_dim = module_shape(state_dict, prefix)
    mask = torch.zeros(heads)
    mask[list(kept)] = 1.0
    scale = (z * mask).repeat_interleave(head_dim)  # one factor per out_proj column
    out = {}
    w = state_dict[prefix + ".out_proj.weight"]
    folded = w * scale.to(w.dtype).to(w.device).unsqueeze(0)
    if physical:
        idx = head_columns(kept, head_dim).to(w.device)
        out[prefix + ".out_proj.weight"] = folded.index_select(1, idx).contiguous()
        for proj in PROJECTIONS:
            for kind in ("weight", "bias"):
                key = f"{prefix}.{proj}.{kind}"
                if key in state_dict:
                    out[key] = state_dict[key].index_select(0, idx).contiguous()
    else:
        out[prefix + ".out_proj.weight"] = folded.contiguous()
        for proj in PROJECTIONS:
            for kind in ("weight", "bias"):
                key = f"{prefix}.{proj}.{kind}"
                if key in state_dict:
                    out[key] = state_dict[key].clone()
    bias = prefix + ".out_proj.bias"
    if bias in state_dict:
        out[bias] = state_dict[bias].clone()
    return out


def prune_state_dict(
    state_dict: Dict[str, Tensor],
    kept: Dict[str, Sequence[int]],
    physical: bool,
    gamma: float = GAMMA,
    zeta: float = ZETA,
) -> Dict[str, Tensor]:
    """The whole model's state dict with every gated module folded (see :func:`fold_module`)
    and every gate-only entry and schedule buffer dropped; other entries are kept as they are."""
    zs = module_gates(state_dict, gamma, zeta)
    if set(zs) != set(kept):
        raise PruningError("the kept-head lists do not name the checkpoint's gated modules")
    replaced: Dict[str, Tensor] = {}
    for prefix, z in zs.items():
        replaced.update(fold_module(state_dict, prefix, kept[prefix], physical, z))
    result = {}
    for key, value in state_dict.items():
        if gate_only(key):
            continue
        result[key] = replaced.get(key, value)
    return result


def removed_parameter_count(state_dict: Dict[str, Tensor], kept: Dict[str, Sequence[int]]) -> int:
    """Parameters that physical pruning removes: the dropped heads' q/k/v rows (weights and
    biases) and out_proj columns."""
    removed = 0
    for prefix, keep in kept.items():
        num_heads, head_dim = module_shape(state_dict, prefix)
        dropped = (num_heads - len(keep)) * head_dim
        for proj in PROJECTIONS:
            removed += dropped * state_dict[f"{prefix}.{proj}.weight"].size(1)
            if f"{prefix}.{proj}.bias" in state_dict:
                removed += dropped
        removed += dropped * state_dict[prefix + ".out_proj.weight"].size(0)
    return removed


def packed_selection(log_alphas: Sequence[Tensor], target_heads: int) -> List[List[int]]:
    """K heads packed into as few modules as possible (what the concentrator aims at):
    modules ranked by their summed log_alpha (ties: earlier module), whole modules kept in
    that order, the last one with its largest-log_alpha heads. Used by the benchmark to
    time a concentrated mask of the same size as a top-K one."""
    total = sum(int(la.numel()) for la in log_alphas)
    if not 1 <= target_heads <= total:
        raise PruningError(f"--heads {target_heads} is out of range: the model has {total} heads, give 1..{total}")
    order = sorted(range(len(log_alphas)), key=lambda m: (-float(log_alphas[m].sum()), m))
    kept: List[List[int]] = [[] for _ in log_alphas]
    left = target_heads
    for m in order:
        if left == 0:
            break
        la = log_alphas[m].detach().cpu().tolist()
        best = sorted(range(len(la)), key=lambda h: (-la[h], h))[:left]
        kept[m] = sorted(best)
        left -= len(best)
    return kept
