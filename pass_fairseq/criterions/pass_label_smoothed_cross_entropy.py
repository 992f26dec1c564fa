"""``pass_label_smoothed_cross_entropy``: label-smoothed cross-entropy plus the PASS
regulariser (and optionally the concentrator), Voita et al.'s L0 penalty, or no regulariser
(``--pass-method dsp``, ``ste``, ``fixed``): the translation criterion of ``translation_pass``.
The regulariser, its schedule and its logs are :mod:`pass_fairseq.criterions.pass_regularizer`;
``--kd-teacher`` adds word-level distillation (:mod:`pass_fairseq.criterions.distillation`).
"""
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from pass_fairseq.criterions.distillation import DistillationConfig, DistillationMixin
from pass_fairseq.criterions.pass_regularizer import PassRegularizerConfig, PassRegularizerMixin


@dataclass
class PassLabelSmoothedCrossEntropyCriterionConfig(PassRegularizerConfig, DistillationConfig,
                                                   LabelSmoothedCrossEntropyCriterionConfig):
    pass


@register_criterion("pass_label_smoothed_cross_entropy", dataclass=PassLabelSmoothedCrossEntropyCriterionConfig)
class PassLabelSmoothedCrossEntropyCriterion(PassRegularizerMixin, DistillationMixin, LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed cross-entropy (mixed with distillation with ``--kd-teacher``) + R (PASS,
    PASSCONC, Voita or none)."""
