"""``label_smoothed_cross_entropy_kd``: fairseq's label-smoothed cross-entropy with word-level
distillation from ``--kd-teacher`` (:mod:`pass_fairseq.criterions.distillation`), for any
model: the equal-budget control of a distilled pruning run is the stock model trained with it.
"""
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from pass_fairseq.criterions.distillation import DistillationConfig, DistillationMixin


@dataclass
class LabelSmoothedCrossEntropyKDCriterionConfig(DistillationConfig, LabelSmoothedCrossEntropyCriterionConfig):
    pass


@register_criterion("label_smoothed_cross_entropy_kd", dataclass=LabelSmoothedCrossEntropyKDCriterionConfig)
class LabelSmoothedCrossEntropyKDCriterion(DistillationMixin, LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed cross-entropy, mixed with word-level distillation in training."""
