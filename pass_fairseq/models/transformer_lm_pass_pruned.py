"""``transformer_lm_pass_pruned``: a ``transformer_lm`` whose pruned attention heads are
physically gone.

Written by ``pass-prune-checkpoint --format pruned`` from a ``transformer_lm_pass``
checkpoint: the kept heads of every self-attention module live in the model config
(``pass_pruned_heads``), a module with no head left is skipped (it returns its out_proj
bias). What it shares with the pruned translation model: :mod:`pass_fairseq.models.pruned`.
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer_lm import TransformerLanguageModel

from pass_fairseq.models.transformer_lm_pass import add_transformer_lm_args, transformer_lm_defaults
from pass_fairseq.models.pruned import PrunedModelMixin, add_pruned_args


@register_model("transformer_lm_pass_pruned")
class TransformerLanguageModelPassPruned(PrunedModelMixin, TransformerLanguageModel):
    """Transformer language model with attention heads physically removed."""

    @classmethod
    def add_args(cls, parser):
        add_transformer_lm_args(parser)
        add_pruned_args(parser)


@register_model_architecture("transformer_lm_pass_pruned", "transformer_lm_pass_pruned")
def transformer_lm_pass_pruned(args):
    """The converted checkpoint's config holds every setting of the gated model; only
    flags it lacks take transformer_lm's defaults (fairseq's ``base_lm_architecture`` would
    force pre-norm on a post-norm model)."""
    transformer_lm_defaults(args)
