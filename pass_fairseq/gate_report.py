"""Which heads a gated checkpoint keeps: pure functions over its state dict (no fairseq).

A head is *open* when its deterministic gate z == 1, *closed* when z == 0, *non-binary*
otherwise, and *kept* when z > 0.5 (method.md, "Test time").
"""
from collections import OrderedDict
from typing import Dict

import torch

from pass_fairseq.gates import deterministic_gates
from pass_fairseq.pruning import GATE_KEY, gated_modules

#: the three kinds of attention module, as they end in state-dict prefixes
MODULE_KINDS = (("encoder", "self_attn", "encoder self"), ("decoder", "self_attn", "decoder self"),
                ("decoder", "encoder_attn", "decoder cross"))


def gate_log_alphas(state_dict: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """{module prefix: log_alpha} in state-dict order."""
    return OrderedDict((prefix, state_dict[prefix + GATE_KEY]) for prefix in gated_modules(state_dict))


def gate_report(state_dict: Dict[str, torch.Tensor], gamma: float = -0.1, zeta: float = 1.1) -> dict:
    """Totals and per-module gates; raises ValueError when the state dict has no gates."""
    alphas = gate_log_alphas(state_dict)
    if not alphas:
        raise ValueError("no gates in this checkpoint (was it trained with a transformer_pass architecture?)")
    modules, opened, closed, total, active = [], 0, 0, 0, 0
    for name, log_alpha in alphas.items():
        z = deterministic_gates(log_alpha, gamma, zeta)
        opened += int((z == 1).sum())
        closed += int((z == 0).sum())
        total += z.numel()
        active += int(bool((z > 0).any()))
        modules.append({
            "name": name,
            "kept": [i for i, v in enumerate(z.tolist()) if v > 0.5],
            "gates": [round(float(v), 6) for v in z.tolist()],
            "log_alpha": [round(float(v), 4) for v in log_alpha.float().tolist()],
        })
    return {"heads_total": total, "open": opened, "closed": closed, "nonbinary": total - opened - closed,
            "kept": sum(len(m["kept"]) for m in modules), "modules_active": active,
            "modules_total": len(modules), "modules": modules}


def layer_grid(report: dict):
    """Kept-head counts as {kind label: [count per layer]} for the three module kinds."""
    grid = {}
    for side, attn, label in MODULE_KINDS:
        rows = {}
        for m in report["modules"]:
            parts = m["name"].split(".")
            if len(parts) == 4 and parts[0] == side and parts[1] == "layers" and parts[3] == attn:
                rows[int(parts[2])] = len(m["kept"])
        if rows:
            grid[label] = [rows.get(i, 0) for i in range(max(rows) + 1)]
    return grid
