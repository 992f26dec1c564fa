"""``transformer_lm_pass``: fairseq's decoder-only ``transformer_lm`` with a gate on every
attention head.

fairseq's ``transformer_lm`` is a :class:`TransformerDecoder` built with
``no_encoder_attn=True``, so its attention modules are the decoder layers' self-attention
(``decoder.layers.<i>.self_attn``). They are gated by the same operation as the translation
model's (:func:`pass_fairseq.models.gating.gate_attention_modules`), and the model carries
the same schedule buffers, so a stock ``transformer_lm`` checkpoint fine-tunes into it with
``--finetune-from-model`` (gates start open: the model starts as the stock one).

The model is registered the legacy way (flags, no dataclass), as ``transformer_pass`` is:
fairseq-train then hands it every flag of the command line, the criterion's
``--pass-method`` and ``--pass-target-heads`` included, which the gates' defaults read.
"""
import dataclasses

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer_lm import (TransformerLanguageModel, TransformerLanguageModelConfig,
                                          transformer_lm_gpt2_tiny)

from pass_fairseq.models.gating import GatedModelMixin, add_gate_args


def add_transformer_lm_args(parser) -> None:
    """The flags of fairseq's ``transformer_lm``, as fairseq adds them for it (no defaults,
    so that the architecture functions set them)."""
    gen_parser_from_dataclass(parser, TransformerLanguageModelConfig(), delete_default=True)


@register_model("transformer_lm_pass")
class TransformerLanguageModelPass(GatedModelMixin, TransformerLanguageModel):
    """Decoder-only Transformer language model whose attention heads are gated for PASS."""

    @classmethod
    def add_args(cls, parser):
        add_transformer_lm_args(parser)
        add_gate_args(parser)


def transformer_lm_defaults(args) -> None:
    """What fairseq does for ``--arch transformer_lm`` (a dataclass model): every flag not
    given takes its :class:`TransformerLanguageModelConfig` default (the fields that
    interpolate another part of the config, such as ``tokens_per_sample``, come from that
    part's flags). fairseq's named LM architectures call ``base_lm_architecture`` instead,
    which sets other defaults (pre-norm, input and output dims equal to the embedding's)."""
    defaults = TransformerLanguageModelConfig()
    for f in dataclasses.fields(defaults):
        value = getattr(defaults, f.name)
        if f.name.startswith("_") or hasattr(args, f.name) or (isinstance(value, str) and value.startswith("${")):
            continue
        setattr(args, f.name, value)


@register_model_architecture("transformer_lm_pass", "transformer_lm_pass")
def transformer_lm_pass(args):
    """Gated ``transformer_lm``: the same defaults, so a stock ``--arch transformer_lm``
    checkpoint fine-tunes into it with the same flags."""
    transformer_lm_defaults(args)


@register_model_architecture("transformer_lm_pass", "transformer_lm_pass_gpt2_tiny")
def transformer_lm_pass_gpt2_tiny(args):
    """Gated ``transformer_lm_gpt2_tiny`` (fairseq's own function: 2 layers of 1 head, width 64,
    gelu, pre-norm; flags such as ``--decoder-attention-heads 4`` override it), so a stock
    ``--arch transformer_lm_gpt2_tiny`` checkpoint fine-tunes into it with the same flags."""
    transformer_lm_gpt2_tiny(args)
