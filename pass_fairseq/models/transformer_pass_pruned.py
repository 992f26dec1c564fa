"""``transformer_pass_pruned``: a Transformer whose pruned attention heads are physically gone.

Written by ``pass-prune-checkpoint --format pruned``. Its attention modules are
:class:`~pass_fairseq.modules.pruned_attention.PrunedMultiheadAttention`, with the heads
its config lists (:mod:`pass_fairseq.models.pruned`, shared with the language model
``transformer_lm_pass_pruned``).
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture

from pass_fairseq.models.pruned import PrunedModelMixin, add_pruned_args
from pass_fairseq.models.transformer_pass import check_alignment_heads


@register_model("transformer_pass_pruned")
class TransformerPassPrunedModel(PrunedModelMixin, TransformerModel):
    """Transformer with attention heads physically removed (see module docstring)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_pruned_args(parser)

    def prepare_for_inference_(self, cfg):
        """As fairseq-generate prepares a model; --print-alignment needs the alignment
        layer's attention, which a skipped module no longer has."""
        super().prepare_for_inference_(cfg)
        if getattr(cfg.generation, "print_alignment", False):
            check_alignment_heads(self.decoder.layers[-1].encoder_attn, "pruned")


@register_model_architecture("transformer_pass_pruned", "transformer_pass_pruned")
def transformer_pass_pruned(args):
    base_architecture(args)
