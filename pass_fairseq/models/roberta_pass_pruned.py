"""``roberta_pass_pruned``: a ``roberta`` encoder whose pruned attention heads are physically
gone.

Written by ``pass-prune-checkpoint --format pruned`` from a ``roberta_pass`` checkpoint: the
kept heads of every self-attention module live in the model config (``pass_pruned_heads``), a
module with no head left is skipped (it returns its out_proj bias). What it shares with the
other pruned models: :mod:`pass_fairseq.models.pruned`.
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaModel

from pass_fairseq.models.pruned import PrunedModelMixin, add_pruned_args
from pass_fairseq.models.roberta_pass import LayerNormEpsMixin, add_encoder_args, encoder_defaults


@register_model("roberta_pass_pruned")
class RobertaPassPrunedModel(PrunedModelMixin, LayerNormEpsMixin, RobertaModel):
    """RoBERTa/BERT encoder with attention heads physically removed."""

    @classmethod
    def add_args(cls, parser):
        add_encoder_args(parser)
        add_pruned_args(parser)


@register_model_architecture("roberta_pass_pruned", "roberta_pass_pruned")
def roberta_pass_pruned(args):
    encoder_defaults(args)
