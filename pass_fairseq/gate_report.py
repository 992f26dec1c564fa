"""Which heads a gated checkpoint keeps: pure functions over its state dict (no fairseq).

Open, closed, non-binary and kept are defined once, by :func:`pass_fairseq.gates.count_gates`
(docs/method.md, "Test time").
"""
from typing import Dict, List, Optional, Tuple

import torch

from pass_fairseq.gates import GAMMA, KEPT_THRESHOLD, ZETA, count_gates
from pass_fairseq.pruning import PruningError, state_dict_gates

#: the three kinds of attention module, as they end in state-dict prefixes
MODULE_KINDS = (("encoder", "self_attn", "encoder self"), ("decoder", "self_attn", "decoder self"),
                ("decoder", "encoder_attn", "decoder cross"))


def gate_report(state_dict: Dict[str, torch.Tensor], gamma: float = GAMMA, zeta: float = ZETA) -> dict:
    """Totals and per-module gates (``subset_k``: K of subset gates, None for Hard Concrete
    gates); raises PruningError when the state dict has no gates or
    inconsistent ones."""
    names, log_alphas, target_heads = state_dict_gates(state_dict)
    if not names:
        raise PruningError("no gates in this checkpoint (was it trained with a transformer_pass architecture?)")
    counts = count_gates([la.cpu() for la in log_alphas], target_heads, gamma, zeta)
    modules = [{
        "name": name,
        "kept": [i for i, v in enumerate(z.tolist()) if v > KEPT_THRESHOLD],
        "gates": [round(float(v), 6) for v in z.tolist()],
        "log_alpha": [round(float(v), 4) for v in log_alpha.float().tolist()],
    } for name, log_alpha, z in zip(names, log_alphas, counts.gates)]
    totals = counts.as_ints()
    return {"heads_total": totals["total"], "open": totals["open"], "closed": totals["closed"],
            "nonbinary": totals["nonbinary"], "kept": totals["kept"], "modules_active": totals["modules_active"],
            "modules_total": len(modules), "subset_k": target_heads, "modules": modules}


def module_kind(name: str) -> Optional[Tuple[str, int]]:
    """(kind label, layer) of an attention module's name (``decoder.layers.3.encoder_attn`` ->
    ("decoder cross", 3); roberta's ``encoder.sentence_encoder.layers.3.self_attn`` -> ("encoder
    self", 3)), or None for a name of no known kind."""
    labels = {(side, attn): label for side, attn, label in MODULE_KINDS}
    parts = name.split(".")
    if len(parts) >= 4 and parts[-3] == "layers" and parts[-2].isdigit() and (parts[0], parts[-1]) in labels:
        return labels[parts[0], parts[-1]], int(parts[-2])
    return None


def kept_heads(report: dict) -> Dict[Tuple[str, int], List[int]]:
    """Kept head indices as {(kind label, layer): [head, ...]} for the modules of the three kinds."""
    return {kind: m["kept"] for m in report["modules"] if (kind := module_kind(m["name"])) is not None}


def layer_grid(report: dict):
    """Kept-head counts as {kind label: [count per layer]} for the three module kinds."""
    kept = kept_heads(report)
    grid = {}
    for _, _, label in MODULE_KINDS:
        rows = {layer: len(heads) for (kind, layer), heads in kept.items() if kind == label}
        if rows:
            grid[label] = [rows.get(i, 0) for i in range(max(rows) + 1)]
    return grid
