"""``translation_pass``: fairseq's translation task plus the PASS gate schedule.

fairseq calls no model, criterion or optimizer hook at an epoch start, only
``task.begin_epoch``, and per update only ``task.optimizer_step``. So this task runs:

* at each epoch start (once per epoch, also after a mid-epoch resume, thanks to the
  model's ``pass_epoch`` buffer): the criterion's lambda schedule, then selective
  reopening of closed gates from all-reduced attention confidences;
* after every update: reopened gates set to ``clip_max`` and every log_alpha clamped to
  ``[clip_min, clip_max]``, on the tensors the optimizer steps (fp16 master copies too).

With ``--best-checkpoint-metric pass_loss`` (logged by the PASS criterion: the validation
loss when the deterministic gates are binary and on target, +inf otherwise),
``checkpoint_best.pt`` is only ever an on-target checkpoint.
"""
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
from fairseq import checkpoint_utils
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from pass_fairseq.errors import fail
from pass_fairseq.gate_schedule import constrain_, reopen_probabilities, sample_reopen
from pass_fairseq.models.transformer_pass import gated_attentions, schedule_state
from pass_fairseq.optim.pass_adam import PassAdam, master_copies

logger = logging.getLogger(__name__)

#: the metric that makes checkpoint_best.pt the best on-target checkpoint
PASS_BEST_METRIC = "pass_loss"


@dataclass
class TranslationPassConfig(TranslationConfig):
    pass_no_reopen: bool = field(
        default=False, metadata={"help": "never reopen closed gates at epoch starts"})
    pass_reopen_decay: float = field(
        default=0.9, metadata={"help": "reopen probability factor decay^(epoch-2) (the reference's 0.9)"})
    pass_reopen_until_epoch: Optional[int] = field(
        default=None, metadata={"help": "last epoch at whose start closed gates may reopen (default: half"
                                        " of --max-epoch, so the run ends on target; every epoch when"
                                        " --max-epoch is not set)"})
    seed: int = II("common.seed")
    max_epoch: int = II("optimization.max_epoch")
    best_checkpoint_metric: str = II("checkpoint.best_checkpoint_metric")
    maximize_best_checkpoint_metric: bool = II("checkpoint.maximize_best_checkpoint_metric")


@register_task("translation_pass", dataclass=TranslationPassConfig)
class TranslationPassTask(TranslationTask):
    """Translation with PASS head pruning (gate schedule, clipping, reopening)."""

    cfg: TranslationPassConfig

    def __init__(self, cfg: TranslationPassConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.criterion = None
        self.num_heads = None
        self._optimizer_checked = False
        if cfg.best_checkpoint_metric == PASS_BEST_METRIC:
            if cfg.maximize_best_checkpoint_metric:
                fail("--best-checkpoint-metric pass_loss is a loss: drop --maximize-best-checkpoint-metric")
            # fairseq saves checkpoint_best.pt at the first validation whatever its value;
            # start from a finite best so that an off-target (+inf) validation never wins.
            if not hasattr(checkpoint_utils.save_checkpoint, "best"):
                checkpoint_utils.save_checkpoint.best = sys.float_info.max

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self.num_heads = sum(m.num_heads for _, m in gated_attentions(model))
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        if hasattr(criterion, "check_model"):
            criterion.check_model(self.num_heads)
        self.criterion = criterion
        return criterion

    # ---- epoch start ---------------------------------------------------------------
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        modules = [m for _, m in gated_attentions(model)]
        if not modules:
            return
        state = schedule_state(model)
        if epoch <= int(state.pass_epoch):
            return
        if hasattr(self.criterion, "begin_epoch"):
            self.criterion.begin_epoch(epoch, model)
        if epoch >= 2 and not self.cfg.pass_no_reopen and epoch <= self.last_reopen_epoch():
            self.reopen_gates(modules, epoch)
        for m in modules:
            m.reset_confidence()
        state.pass_epoch.fill_(epoch)

    def last_reopen_epoch(self) -> float:
        if self.cfg.pass_reopen_until_epoch is not None:
            return self.cfg.pass_reopen_until_epoch
        return self.cfg.max_epoch // 2 if self.cfg.max_epoch else float("inf")

    def reopen_gates(self, modules, epoch):
        """Mark closed gates for reopening with probability proportional to their head's
        attention confidence (all-reduced over workers), decayed per epoch."""
        counts = torch.stack([m.conf_count for m in modules]).float().unsqueeze(-1)
        weighted = torch.stack([m.conf_mean.float() for m in modules]) * counts
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(weighted)
            dist.all_reduce(counts)
        confidence = (weighted / counts.clamp(min=1)).flatten()
        closed = torch.cat([m.gate.is_clipped_closed().cpu() for m in modules])
        probs = reopen_probabilities(confidence.cpu(), closed, epoch, self.cfg.pass_reopen_decay)
        chosen = sample_reopen(probs, self.cfg.seed, epoch)
        for m, pending in zip(modules, chosen.split([m.num_heads for m in modules])):
            m.gate.reopen_pending.copy_(pending.to(m.gate.reopen_pending.device))
        logger.info(f"pass: epoch {epoch}: {int(closed.sum())} gates closed, "
                    f"{int(chosen.sum())} reopened")

    # ---- every update --------------------------------------------------------------
    def optimizer_step(self, optimizer, model, update_num):
        gates = [m.gate for _, m in gated_attentions(model)]
        if gates and not self._optimizer_checked:
            inner = getattr(optimizer, "fp32_optimizer", None) or getattr(optimizer, "wrapped_optimizer", optimizer)
            if not isinstance(inner, PassAdam):
                fail(f"the gated model needs --optimizer pass_adam (the gates' own learning rate, "
                     f"--pass-gate-lr); got {type(inner).__name__}")
            self._optimizer_checked = True
        super().optimizer_step(optimizer, model, update_num)
        with torch.no_grad():
            for gate, master in zip(gates, master_copies(optimizer, [g.log_alpha for g in gates])):
                constrain_(master, gate.reopen_pending, gate.clip_min, gate.clip_max)
                if master is not gate.log_alpha:
                    gate.log_alpha.copy_(master)
                gate.reopen_pending.zero_()
