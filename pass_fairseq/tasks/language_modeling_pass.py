"""``language_modeling_pass``: fairseq's language modeling task plus the PASS gate schedule
(:mod:`pass_fairseq.tasks.pass_schedule`, shared with ``translation_pass``): train a
``transformer_lm_pass*`` model with ``--criterion pass_cross_entropy`` to exactly K heads."""
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from pass_fairseq.tasks.pass_schedule import PassScheduleConfig, PassScheduleMixin


@dataclass
class LanguageModelingPassConfig(PassScheduleConfig, LanguageModelingConfig):
    pass


@register_task("language_modeling_pass", dataclass=LanguageModelingPassConfig)
class LanguageModelingPassTask(PassScheduleMixin, LanguageModelingTask):
    """Language modeling with PASS head pruning (gate schedule, clipping, reopening)."""

    cfg: LanguageModelingPassConfig
