"""``roberta_pass``: fairseq's encoder-only ``roberta`` with a gate on every attention head
(the layers' self-attention, ``encoder.sentence_encoder.layers.<i>.self_attn``), for sentence
classification with ``sentence_prediction_pass``.

The gating and the schedule buffers are the ones every gated architecture shares
(:mod:`pass_fairseq.models.gating`), so a stock ``roberta`` checkpoint, or a BERT checkpoint
converted by ``pass-convert-bert``, fine-tunes into it with ``--finetune-from-model`` (gates
start open: the model starts as the stock one).

``--layer-norm-eps`` sets the eps of every layer norm: fairseq's are fixed at 1e-5, BERT's
checkpoints were trained with their config's ``layer_norm_eps`` (1e-12 for most).
"""
import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaModel, base_architecture

from pass_fairseq.models.gating import GatedModelMixin, add_gate_args

#: fairseq's layer-norm eps (``fairseq.modules.LayerNorm`` takes no other)
FAIRSEQ_LAYER_NORM_EPS = 1e-5


def add_encoder_args(parser) -> None:
    """The flags of fairseq's ``roberta`` and the plugin's layer-norm eps."""
    RobertaModel.add_args(parser)
    parser.add_argument("--layer-norm-eps", type=float, metavar="EPS",
                        help=f"eps of every layer norm (default {FAIRSEQ_LAYER_NORM_EPS}, fairseq's; a converted"
                             " BERT checkpoint takes its config's layer_norm_eps, which pass-convert-bert prints)")


class LayerNormEpsMixin:
    """Builds the model, then sets ``--layer-norm-eps`` on every layer norm; put it before the
    stock model class in the bases."""

    @classmethod
    def build_model(cls, args, task):
        model = super().build_model(args, task)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = args.layer_norm_eps
        return model


def encoder_defaults(args) -> None:
    """fairseq's ``roberta`` defaults, and fairseq's layer-norm eps."""
    base_architecture(args)
    if getattr(args, "layer_norm_eps", None) is None:
        args.layer_norm_eps = FAIRSEQ_LAYER_NORM_EPS


@register_model("roberta_pass")
class RobertaPassModel(GatedModelMixin, LayerNormEpsMixin, RobertaModel):
    """RoBERTa/BERT encoder whose attention heads are gated for PASS head pruning."""

    @classmethod
    def add_args(cls, parser):
        add_encoder_args(parser)
        add_gate_args(parser)


@register_model_architecture("roberta_pass", "roberta_pass")
def roberta_pass(args):
    """Gated ``roberta`` (its base defaults: 12 layers, width 768, 12 heads)."""
    encoder_defaults(args)
