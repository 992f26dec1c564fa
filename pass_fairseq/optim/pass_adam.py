"""``pass_adam``: fairseq's Adam with the gates in their own parameter group.

Under Adam a parameter moves about ``lr`` per update, so with the main learning rate
(1e-3, decaying) log_alpha could not travel to the clip bounds in a short run. Gate
parameters (tagged ``param_group = "pass_gate"`` by :class:`HardConcrete`; fairseq's fp16
optimizer copies the tag onto its fp32 master copies when run with
``--fp16-no-flatten-grads``) get ``--pass-gate-lr``, constant unless
``--pass-gate-lr-follows-schedule``, and ``--pass-gate-weight-decay``.

The reference does the same (its gate group's lr 0.2 stays constant: its FairseqAdam's
``set_lr`` skips the last parameter group), but its gates get the main weight decay
(the group sets none of its own), which ``--pass-preset reference`` reproduces.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from omegaconf import II

from pass_fairseq.errors import exit_on_error
from pass_fairseq.flag_checks import NON_NEGATIVE, POSITIVE, check_flags
from pass_fairseq.gates import GATE_PARAM_GROUP
from pass_fairseq.presets import preset_value


@dataclass
class PassAdamConfig(FairseqAdamConfig):
    pass_gate_lr: float = field(
        default=0.2,
        metadata={"help": "learning rate of the gates' log_alpha (the reference used 0.5 for BERT,"
                          " DSP 0.2 for its logits)"},
    )
    pass_gate_lr_follows_schedule: bool = field(
        default=False,
        metadata={"help": "scale the gate learning rate by the main schedule (lr / peak lr)"
                          " instead of keeping it constant"},
    )
    pass_gate_weight_decay: Optional[float] = field(
        default=None,
        metadata={"help": "weight decay of the gates' log_alpha (default: 0 with --pass-preset plugin;"
                          " the main --weight-decay with reference, as the reference code runs)"},
    )
    pass_preset: Optional[str] = II("oc.select:task.pass_preset,plugin")


def gate_weight_decay(cfg: PassAdamConfig) -> float:
    """``--pass-gate-weight-decay``, or the preset's (under a task without presets: plugin)."""
    decay = preset_value(cfg.pass_preset, "gate_weight_decay", cfg.pass_gate_weight_decay)
    return float(cfg.weight_decay if decay == "main" else decay)


def is_gate_param(p: torch.Tensor) -> bool:
    return getattr(p, "param_group", None) == GATE_PARAM_GROUP


@register_optimizer("pass_adam", dataclass=PassAdamConfig)
class PassAdam(FairseqAdam):
    """Adam (fairseq's AdamW-style weight decay); group 0 holds the ordinary parameters,
    group 1 the gates."""

    def __init__(self, cfg: PassAdamConfig, params):
        with exit_on_error():
            check_flags({"--pass-gate-lr": (cfg.pass_gate_lr, POSITIVE),
                         "--pass-gate-weight-decay": (cfg.pass_gate_weight_decay, NON_NEGATIVE)})
        params = list(params)
        groups = [{"params": [p for p in params if not is_gate_param(p)]}]
        gates = [p for p in params if is_gate_param(p)]
        if gates:
            groups.append({"params": gates, "lr": cfg.pass_gate_lr, "weight_decay": gate_weight_decay(cfg),
                           "pass_gate": True})
        super().__init__(cfg, groups)

    @property
    def supports_flat_params(self):
        """A flat fp32 master tensor cannot hold two learning rates: with --fp16 fairseq
        then asks for --fp16-no-flatten-grads."""
        return False

    def set_lr(self, lr):
        peak = self.cfg.lr[0] if self.cfg.lr else lr
        for group in self.param_groups:
            if group.get("pass_gate"):
                scale = lr / peak if (self.cfg.pass_gate_lr_follows_schedule and peak > 0) else 1.0
                group["lr"] = self.cfg.pass_gate_lr * scale
            else:
                group["lr"] = lr


def master_copies(optimizer, params: List[torch.Tensor]) -> List[torch.Tensor]:
    """The tensors ``optimizer`` actually updates for each model parameter in ``params``.

    In fp32 (and with fairseq's memory-efficient fp16 or AMP) these are the parameters
    themselves; fairseq's ``FP16Optimizer`` steps fp32 master copies instead and copies
    them into the model after each step, so a change made only to the model's parameter
    would be undone: clamp and reopen the master copy. Works for both its list of copies
    (``--fp16-no-flatten-grads``) and its flat buffer (one view per parameter).
    """
    fp16_params = getattr(optimizer, "fp16_params", None)
    fp32_params = getattr(optimizer, "fp32_params", None)
    if fp16_params is None or fp32_params is None:
        return list(params)
    if isinstance(fp32_params, list):
        index = {id(p): i for i, p in enumerate(fp16_params)}
        return [fp32_params[index[id(p)]] for p in params]
    if len(fp32_params) != 1:
        raise ValueError("gate clamping supports one flat fp32 buffer per process")
    flat = next(iter(fp32_params.values())).data
    views, offset = {}, 0
    for p in fp16_params:
        views[id(p)] = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return [views[id(p)] for p in params]
