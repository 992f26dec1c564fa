"""``pass_sentence_prediction``: fairseq's ``sentence_prediction`` (a classification head on
the first token, cross-entropy summed over the sentences) plus the PASS regulariser (and
optionally the concentrator), Voita et al.'s L0 penalty, or no regulariser: the criterion of
``sentence_prediction_pass``. The regulariser, its schedule and its logs are
:mod:`pass_fairseq.criterions.pass_regularizer`, the same as translation's."""
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion

from pass_fairseq.criterions.pass_regularizer import PassRegularizerConfig, PassRegularizerMixin


@dataclass
class PassSentencePredictionConfig(PassRegularizerConfig, SentencePredictionConfig):
    pass


@register_criterion("pass_sentence_prediction", dataclass=PassSentencePredictionConfig)
class PassSentencePredictionCriterion(PassRegularizerMixin, SentencePredictionCriterion):
    """Sentence classification cross-entropy + R (PASS, PASSCONC, Voita or none)."""
