"""Word-level distillation from a frozen teacher as a piece any label-smoothed fairseq criterion
can carry: :class:`DistillationMixin` (in the criterion's bases before the stock criterion)
and its flags, :class:`DistillationConfig`. ``pass_label_smoothed_cross_entropy`` (every
pruning method) and ``label_smoothed_cross_entropy_kd`` (a stock model: the equal-budget
control) carry it, so that every row of a comparison can get the same distillation.

With ``--kd-teacher CKPT`` the training loss is (1 - alpha) L_stock + alpha L_KD
(:mod:`pass_fairseq.distillation`, alpha ``--kd-weight``, temperature ``--kd-temperature``):
the teacher is the checkpoint being pruned (the base), built with the task's dictionaries, in
eval mode (no dropout), with no gradient, moved to the device and dtype of the student's
weights at the first forward pass. It is held outside the criterion's modules, so fairseq neither trains
it, nor wraps it for DDP, nor saves it in the student's checkpoints. Validation is the stock
loss alone (no teacher pass); the logged ``loss`` is the stock loss in training too, and
``kd_loss`` (bits per token, like ``loss``) is logged beside it.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import checkpoint_utils, models
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from pass_fairseq.distillation import mix, word_kd_loss
from pass_fairseq.errors import exit_on_error, fail
from pass_fairseq.flag_checks import POSITIVE, UNIT_INTERVAL, check_flags

logger = logging.getLogger(__name__)


@dataclass
class DistillationConfig(FairseqDataclass):
    kd_teacher: Optional[str] = field(
        default=None, metadata={"help": "word-level distillation from this checkpoint (e.g. the model being"
                                        " pruned): the training loss becomes (1 - --kd-weight) x the criterion's"
                                        " loss + --kd-weight x T^2 KL(teacher || student) per target token;"
                                        " the teacher is frozen in eval mode (docs/method.md, 'Distillation')"})
    kd_weight: float = field(
        default=0.5, metadata={"help": "alpha in (0, 1], the weight of the distillation loss (with --kd-teacher;"
                                       " 1: distillation alone)"})
    kd_temperature: float = field(
        default=1.0, metadata={"help": "T, the softmax temperature of teacher and student in the distillation"
                                       " loss (with --kd-teacher)"})


def load_teacher(path: str, task) -> torch.nn.Module:
    """The model of checkpoint ``path``, built with ``task``'s dictionaries, frozen in eval mode
    (one line and exit 2 when it cannot be read or does not fit the data)."""
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except FileNotFoundError:
        fail(f"--kd-teacher {path}: no such checkpoint")
    except Exception as e:  # noqa: BLE001  (unpickling errors come in many types)
        fail(f"--kd-teacher {path}: cannot read it as a fairseq checkpoint ({type(e).__name__})")
    if not isinstance(state.get("model"), dict) or state.get("cfg") is None:
        fail(f"--kd-teacher {path} is not a fairseq checkpoint (no model or config)")
    with exit_on_error():
        teacher = models.build_model(state["cfg"].model, task, from_checkpoint=True)
    try:
        teacher.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"].model)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        fail(f"--kd-teacher {path} does not fit this data: {lines[min(1, len(lines) - 1)]} (the teacher must be"
             " trained on the same dictionaries)")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationMixin:
    """A label-smoothed fairseq criterion whose training loss mixes in word-level
    distillation from ``--kd-teacher`` (see the module docstring)."""

    @classmethod
    def build_criterion(cls, cfg, task):
        criterion = super().build_criterion(cfg, task)
        criterion.setup_distillation(cfg, task)
        return criterion

    def setup_distillation(self, cfg, task) -> None:
        with exit_on_error():
            check_flags({"--kd-weight": (cfg.kd_weight, UNIT_INTERVAL),
                         "--kd-temperature": (cfg.kd_temperature, POSITIVE)})
        self.kd_weight, self.kd_temperature = cfg.kd_weight, cfg.kd_temperature
        # a tuple, not an attribute nn.Module would register (see the module docstring)
        self._teacher = (load_teacher(cfg.kd_teacher, task),) if cfg.kd_teacher else ()
        self._kd_parts = None
        if self._teacher:
            logger.info(f"distilling from {cfg.kd_teacher}: weight {self.kd_weight:g}, temperature"
                        f" {self.kd_temperature:g}")

    @property
    def teacher(self) -> Optional[torch.nn.Module]:
        return self._teacher[0] if self._teacher else None

    def teacher_logits(self, sample, student) -> torch.Tensor:
        """The teacher's logits for ``sample``, its weights on the device and in the dtype of the
        ``student``'s (fp16 after ``--fp16``'s ``model.half()``; fp32 under ``--amp``, where
        autocast runs the teacher's forward pass as it runs the student's)."""
        teacher = self.teacher
        first, like = next(teacher.parameters()), next(student.parameters())
        if first.device != like.device or first.dtype != like.dtype:
            teacher.to(device=like.device, dtype=like.dtype)
        teacher.eval()
        with torch.no_grad():
            return teacher(**sample["net_input"])[0]

    def compute_loss(self, model, net_output, sample, reduce=True):
        """The stock loss, mixed with L_KD in training (kept apart for the logs)."""
        loss, nll_loss = super().compute_loss(model, net_output, sample, reduce=reduce)
        if self.teacher is None or not model.training or not reduce:
            return loss, nll_loss
        student = net_output[0]
        teacher = self.teacher_logits(sample, model)
        target = model.get_targets(sample, net_output)
        prefix = getattr(self, "ignore_prefix_size", 0)
        if prefix > 0:
            student, teacher, target = student[:, prefix:], teacher[:, prefix:], target[:, prefix:]
        kd = word_kd_loss(student, teacher, target.ne(self.padding_idx), self.kd_temperature)
        self._kd_parts = (loss.detach(), kd.detach())
        return mix(loss, kd, self.kd_weight), nll_loss

    def forward(self, model, sample, reduce=True):
        self._kd_parts = None
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        if self._kd_parts is not None:
            stock, kd = self._kd_parts
            logging_output["loss"] = stock.data
            logging_output["kd_loss"] = kd.data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if not any("kd_loss" in log for log in logging_outputs):
            return
        kd = sum(log.get("kd_loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("kd_loss", kd / max(sample_size, 1) / math.log(2), sample_size, round=3)
