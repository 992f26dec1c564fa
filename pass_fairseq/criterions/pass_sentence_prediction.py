"""``pass_sentence_prediction``: fairseq's ``sentence_prediction`` (a classification head on
the first token, cross-entropy summed over the sentences) plus the PASS regulariser (and
optionally the concentrator), Voita et al.'s L0 penalty, or no regulariser: the criterion of
``sentence_prediction_pass``. The regulariser, its schedule and its logs are
:mod:`pass_fairseq.criterions.pass_regularizer`, the same as translation's; besides
``pass_loss`` it logs ``pass_accuracy``, the accuracy when the gates are on target and -inf
otherwise (``--best-checkpoint-metric pass_accuracy --maximize-best-checkpoint-metric``)."""
import math
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.logging import metrics
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion

from pass_fairseq.criterions.pass_regularizer import PassRegularizerConfig, PassRegularizerMixin, on_target


@dataclass
class PassSentencePredictionConfig(PassRegularizerConfig, SentencePredictionConfig):
    pass


@register_criterion("pass_sentence_prediction", dataclass=PassSentencePredictionConfig)
class PassSentencePredictionCriterion(PassRegularizerMixin, SentencePredictionCriterion):
    """Sentence classification cross-entropy + R (PASS, PASSCONC, Voita or none)."""

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if logging_outputs and "ncorrect" in logging_outputs[0] and "pass_n" in logging_outputs[0]:
            metrics.log_derived(
                "pass_accuracy", lambda meters: float(meters["accuracy"].avg) if on_target(meters) else -math.inf)
