"""``pass_cross_entropy``: fairseq's ``cross_entropy`` (the language model's criterion) plus
the PASS regulariser (and optionally the concentrator), Voita et al.'s L0 penalty, or no
regulariser: the criterion of ``language_modeling_pass``. The regulariser, its schedule and
its logs are :mod:`pass_fairseq.criterions.pass_regularizer`, the same as translation's."""
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

from pass_fairseq.criterions.pass_regularizer import PassRegularizerConfig, PassRegularizerMixin


@dataclass
class PassCrossEntropyCriterionConfig(PassRegularizerConfig, CrossEntropyCriterionConfig):
    pass


@register_criterion("pass_cross_entropy", dataclass=PassCrossEntropyCriterionConfig)
class PassCrossEntropyCriterion(PassRegularizerMixin, CrossEntropyCriterion):
    """Cross-entropy + R (PASS, PASSCONC, Voita or none)."""
