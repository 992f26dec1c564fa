"""``translation_pass``: fairseq's translation task plus the PASS gate schedule
(:mod:`pass_fairseq.tasks.pass_schedule`, shared with ``language_modeling_pass``).

The ``--eval-bleu`` beam search runs with a fixed mask, as the reference's: it never feeds
the attention confidences (``--pass-confidence train-valid`` counts the validation loss
passes only).
"""
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from pass_fairseq.tasks.pass_schedule import PassScheduleConfig, PassScheduleMixin, confidence_in_eval


@dataclass
class TranslationPassConfig(PassScheduleConfig, TranslationConfig):
    pass


@register_task("translation_pass", dataclass=TranslationPassConfig)
class TranslationPassTask(PassScheduleMixin, TranslationTask):
    """Translation with PASS head pruning (gate schedule, clipping, reopening)."""

    cfg: TranslationPassConfig

    def _inference_with_bleu(self, generator, sample, model):
        with confidence_in_eval(model, False):  # the reference's BLEU pass runs with a fixed mask
            return super()._inference_with_bleu(generator, sample, model)
