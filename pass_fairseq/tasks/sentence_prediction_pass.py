"""``sentence_prediction_pass``: fairseq's sentence classification task plus the PASS gate
schedule (:mod:`pass_fairseq.tasks.pass_schedule`, shared with ``translation_pass``): train a
``roberta_pass`` encoder with ``--criterion pass_sentence_prediction`` to exactly K heads."""
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

from pass_fairseq.tasks.pass_schedule import PassScheduleConfig, PassScheduleMixin


@dataclass
class SentencePredictionPassConfig(PassScheduleConfig, SentencePredictionConfig):
    pass


@register_task("sentence_prediction_pass", dataclass=SentencePredictionPassConfig)
class SentencePredictionPassTask(PassScheduleMixin, SentencePredictionTask):
    """Sentence classification with PASS head pruning (gate schedule, clipping, reopening)."""

    cfg: SentencePredictionPassConfig
