"""``transformer_pass``: fairseq's Transformer with a gate on every attention head.

Every attention module (encoder self, decoder self, decoder encoder-attention) is a
:class:`GatedMultiheadAttention` with Hard Concrete or subset gates (``--pass-gate-type``);
everything else, and every ``transformer`` flag, is stock fairseq. The gating, the joint
draw of subset gates and the schedule buffers are the ones every gated architecture shares
(:mod:`pass_fairseq.models.gating`).
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture, transformer_iwslt_de_en

from pass_fairseq.errors import fail
from pass_fairseq.models.gating import GatedModelMixin, add_gate_args


@register_model("transformer_pass")
class TransformerPassModel(GatedModelMixin, TransformerModel):
    """Transformer whose attention heads are gated for PASS head pruning."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_gate_args(parser)

    def prepare_for_inference_(self, cfg):
        """As fairseq-generate prepares a model; --print-alignment needs the alignment
        layer's attention, which a module with every gate closed no longer has."""
        super().prepare_for_inference_(cfg)
        if getattr(cfg.generation, "print_alignment", False):
            check_alignment_heads(self.decoder.layers[-1].encoder_attn, "gated")


def check_alignment_heads(module, kind: str) -> None:
    """One-line error when the alignment layer (the last decoder layer's encoder attention,
    fairseq's default) has no head left to give attention weights."""
    open_heads = int((module.gate.deterministic() > 0).sum()) if hasattr(module, "gate") else module.num_heads
    if open_heads == 0:
        fail(f"--print-alignment needs the attention weights of the last decoder layer's encoder attention,"
             f" whose heads are all pruned in this {kind} model: drop --print-alignment (and --replace-unk)")


@register_model_architecture("transformer_pass", "transformer_pass")
def transformer_pass(args):
    base_architecture(args)


@register_model_architecture("transformer_pass", "transformer_pass_iwslt")
def transformer_pass_iwslt(args):
    transformer_iwslt_de_en(args)
