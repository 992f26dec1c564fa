"""``pass_label_smoothed_cross_entropy``: label-smoothed cross-entropy plus the PASS
regulariser (and optionally the concentrator), or Voita et al.'s L0 penalty.

    L = label-smoothed CE + R_pass + R_conc                                   (method.md)
    R_pass = lambda * (sum_i pnb_i + |sN - sum_i q0_i| + |(1-s)N - sum_i q1_i|)
    R_conc = lambda * lambda_c * sum_l (1 - prod_{i in H_l} q0_i)
    R_voita = l0_penalty * sum_i (1 - q0_i)

lambda = pass_lambda_init * pass_lambda_factor ** k, where k counts the epoch starts at
which the deterministic gates were off target (binary with exactly K open); k is a model
buffer so it survives resume. The tensor logic is in :mod:`pass_fairseq.losses`.

Scaling: the reference adds R once to a batch's summed loss, and fairseq divides
gradients by the update's sample size. A regulariser added per micro-batch would count
``update_freq x workers`` times, so with ``--pass-reg-scaling update`` (default) each
micro-batch adds R / (update_freq x workers): R once per update, as in the reference.
``--pass-reg-scaling token`` multiplies R by the micro-batch's sample size instead, so
its weight relative to the per-token loss no longer depends on the batch size.

The logged ``loss`` (train and valid) is the translation loss alone; ``pass_loss`` is the
valid loss when the gates are on target and +inf otherwise (checkpoint selection).
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from omegaconf import II

from pass_fairseq import losses
from pass_fairseq.errors import fail
from pass_fairseq.models.transformer_pass import gated_attentions, schedule_state

logger = logging.getLogger(__name__)

PASS_METHODS = ChoiceEnum(["pass", "voita"])
REG_SCALINGS = ChoiceEnum(["update", "token"])
#: averaged per forward pass and logged as fairseq metrics
LOGGED = ("pass_open", "pass_closed", "pass_nonbinary", "pass_modules_active", "pass_expected_open",
          "pass_lambda", "pass_reg", "pass_nb_term", "pass_closed_gap", "pass_open_gap", "pass_conc",
          "pass_conc_weight", "pass_on_target")


@dataclass
class PassLabelSmoothedCrossEntropyCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    pass_method: PASS_METHODS = field(
        default="pass", metadata={"help": "pass: exact target K (PASS); voita: Voita et al.'s L0 penalty"})
    pass_target_heads: Optional[int] = field(
        default=None, metadata={"help": "K, the number of heads to keep (required for --pass-method pass)"})
    pass_lambda_init: float = field(
        default=0.1, metadata={"help": "initial PASS weight lambda (the reference's 0.1)"})
    pass_lambda_factor: float = field(
        default=2.0, metadata={"help": "lambda is multiplied by this at each epoch start while the"
                                       " deterministic gates are off target (the reference doubles)"})
    pass_l0_penalty: float = field(
        default=0.01, metadata={"help": "weight of Voita et al.'s expected-L0 penalty (--pass-method voita)"})
    pass_concentrator: bool = field(
        default=False, metadata={"help": "add the concentrator R_conc (PASSCONC): pack kept heads into few modules"})
    pass_conc_weight: Optional[float] = field(
        default=None, metadata={"help": "lambda_c; default: the reference's lower bound, recomputed every step"})
    pass_conc_weight_cap: float = field(
        default=500.0, metadata={"help": "cap of the lower-bound lambda_c (the reference's 500)"})
    pass_conc_start_epoch: int = field(
        default=1, metadata={"help": "first epoch with the concentrator on; in a short fine-tune without"
                                     " reopening start it after PASS alone reaches the target (with all gates"
                                     " open it can close whole modules for good; see the README's demo)"})
    pass_conc_end_epoch: Optional[int] = field(
        default=None, metadata={"help": "last epoch with the concentrator on (default: half of --max-epoch,"
                                        " so PASS alone settles the count afterwards; to the end without"
                                        " --max-epoch)"})
    pass_reg_scaling: REG_SCALINGS = field(
        default="update", metadata={"help": "update: R counts once per update, as in the reference;"
                                            " token: R is multiplied by the micro-batch's sample size"})
    update_freq: List[int] = II("optimization.update_freq")
    distributed_world_size: int = II("distributed_training.distributed_world_size")
    max_epoch: int = II("optimization.max_epoch")


@register_criterion("pass_label_smoothed_cross_entropy", dataclass=PassLabelSmoothedCrossEntropyCriterionConfig)
class PassLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 pass_method="pass", pass_target_heads=None, pass_lambda_init=0.1, pass_lambda_factor=2.0,
                 pass_l0_penalty=0.01, pass_concentrator=False, pass_conc_weight=None,
                 pass_conc_weight_cap=500.0, pass_conc_start_epoch=1, pass_conc_end_epoch=None,
                 pass_reg_scaling="update", update_freq=(1,), distributed_world_size=1, max_epoch=0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        from pass_fairseq.tasks.translation_pass import TranslationPassTask

        if not isinstance(task, TranslationPassTask):
            fail(f"--criterion pass_label_smoothed_cross_entropy needs --task translation_pass "
                 f"(got {type(task).__name__}): only that task runs the gate schedule")
        if pass_method == "pass" and pass_target_heads is None:
            fail("--pass-target-heads K is required with --pass-method pass")
        if pass_target_heads is not None and pass_target_heads < 1:
            fail(f"--pass-target-heads must be at least 1, got {pass_target_heads}")
        self.method = str(pass_method)
        self.target_heads = pass_target_heads
        self.lambda_init, self.lambda_factor = pass_lambda_init, pass_lambda_factor
        self.l0_penalty = pass_l0_penalty
        self.concentrator = pass_concentrator
        self.conc_weight, self.conc_weight_cap = pass_conc_weight, pass_conc_weight_cap
        self.conc_start = pass_conc_start_epoch
        self.conc_end = pass_conc_end_epoch
        if self.conc_end is None:
            self.conc_end = max_epoch // 2 if max_epoch else math.inf
        self.reg_scaling = str(pass_reg_scaling)
        self.update_freq = list(update_freq)
        self.world_size = max(1, distributed_world_size)

    def check_model(self, num_heads: Optional[int]) -> None:
        """Called by the task once the model exists."""
        if not num_heads:
            fail("the PASS criterion needs a gated model: use --arch transformer_pass_iwslt or transformer_pass")
        if self.target_heads is not None and self.target_heads > num_heads:
            fail(f"--pass-target-heads {self.target_heads} is larger than the model's {num_heads} heads")

    # ---- schedule ------------------------------------------------------------------
    def current_lambda(self, model) -> float:
        return self.lambda_init * self.lambda_factor ** int(schedule_state(model).pass_lambda_steps)

    def on_target(self, open_count: int, nonbinary: int) -> bool:
        return nonbinary == 0 and (self.target_heads is None or open_count == self.target_heads)

    def begin_epoch(self, epoch: int, model) -> None:
        """Multiply lambda while the deterministic gates are off target (from epoch 2)."""
        if self.method != "pass" or epoch < 2:
            return
        z = torch.cat([m.gate.deterministic().detach().float() for _, m in gated_attentions(model)])
        opened, closed = int((z == 1).sum()), int((z == 0).sum())
        if not self.on_target(opened, z.numel() - opened - closed):
            schedule_state(model).pass_lambda_steps += 1
        logger.info(f"pass: epoch {epoch}: {opened} open, {closed} closed, "
                    f"{z.numel() - opened - closed} non-binary; lambda {self.current_lambda(model):g}")

    def concentrator_on(self, epoch: int) -> bool:
        return self.concentrator and self.conc_start <= epoch <= self.conc_end

    # ---- loss ----------------------------------------------------------------------
    def regularizer(self, model):
        """R for the current gates and a dict of plain floats to log."""
        gates = [m.gate for _, m in gated_attentions(model)]
        q0s = [g.prob_closed() for g in gates]
        q1s = [g.prob_open() for g in gates]
        q0, q1 = losses.flat(q0s), losses.flat(q1s)
        pnb = 1.0 - q0 - q1
        lam = self.current_lambda(model)
        epoch = max(1, int(schedule_state(model).pass_epoch))
        zero = q0.new_zeros(())
        nb, closed_gap, open_gap, conc, conc_weight = zero, zero, zero, zero, 0.0
        if self.method == "voita":
            lam = self.l0_penalty
            reg = lam * losses.expected_l0(q0)
        else:
            nb, closed_gap, open_gap = losses.pass_terms(q0, q1, pnb, self.target_heads)
            reg = lam * (nb + closed_gap + open_gap)
            if self.concentrator_on(epoch):
                conc = losses.concentrator(q0s)
                conc_weight = self.conc_weight
                if conc_weight is None:
                    conc_weight = losses.concentrator_weight_lower_bound(
                        q0s, q1s, [~g.is_clipped_closed() for g in gates], self.conc_weight_cap)
                reg = reg + lam * conc_weight * conc
        with torch.no_grad():
            zs = [g.deterministic().float() for g in gates]
            z = torch.cat(zs)
            active = torch.stack([(zm > 0).any() for zm in zs]).sum()
            values = torch.stack([(z == 1).sum().float(), (z == 0).sum().float(), (1.0 - q0).sum(), reg.detach(),
                                  nb.detach(), closed_gap.detach(), open_gap.detach(), conc.detach(),
                                  active.float()]).tolist()
        active = int(values[8])
        opened, closed = int(values[0]), int(values[1])
        log = {
            "pass_open": opened, "pass_closed": closed, "pass_nonbinary": z.numel() - opened - closed,
            "pass_modules_active": active, "pass_expected_open": values[2], "pass_lambda": float(lam),
            "pass_reg": values[3], "pass_nb_term": values[4], "pass_closed_gap": values[5],
            "pass_open_gap": values[6], "pass_conc": values[7], "pass_conc_weight": float(conc_weight),
            "pass_on_target": float(self.on_target(opened, z.numel() - opened - closed)),
        }
        return reg, log

    def reg_scale(self, sample_size, epoch: int) -> float:
        if self.reg_scaling == "token":
            return float(sample_size)
        update_freq = self.update_freq[min(epoch, len(self.update_freq)) - 1]
        return 1.0 / (update_freq * self.world_size)

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        reg, log = self.regularizer(model)
        if model.training:
            epoch = max(1, int(schedule_state(model).pass_epoch))
            loss = loss + self.reg_scale(sample_size, epoch) * reg
        logging_output.update(log)
        logging_output["pass_n"] = 1
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        n = sum(log.get("pass_n", 0) for log in logging_outputs)
        if n == 0:
            return
        for key in LOGGED:
            metrics.log_scalar(key, sum(float(log.get(key, 0)) for log in logging_outputs) / n, n, round=3)
        metrics.log_derived(
            "pass_loss",
            lambda meters: round(float(meters["loss"].avg), 3)
            if meters["pass_on_target"].avg >= 1.0 - 1e-9 else math.inf,
        )
