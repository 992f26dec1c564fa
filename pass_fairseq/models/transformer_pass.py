"""``transformer_pass``: fairseq's Transformer with a Hard Concrete gate on every head.

Every attention module (encoder self, decoder self, decoder encoder-attention) is a
:class:`GatedMultiheadAttention`; everything else, and every ``transformer`` flag, is
stock fairseq. The PASS schedule state lives here as persistent buffers, because fairseq
restores the model on resume but not the task: ``pass_epoch`` (the last epoch whose start
was handled) and ``pass_lambda_steps`` (how often lambda has been multiplied).
"""
from typing import List, Tuple

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture, transformer_iwslt_de_en
from fairseq.modules.multihead_attention import MultiheadAttention

from pass_fairseq.modules.gated_attention import GatedMultiheadAttention


@register_model("transformer_pass")
class TransformerPassModel(TransformerModel):
    """Transformer whose attention heads are gated for PASS head pruning."""

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.register_buffer("pass_epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("pass_lambda_steps", torch.zeros((), dtype=torch.long))

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--pass-beta", type=float, metavar="B",
                            help="Hard Concrete temperature beta (default 0.33, the reference's)")
        parser.add_argument("--pass-gate-init", metavar="INIT",
                            help="initial log_alpha of new gates: 'xavier' (U(-b, b), b = sqrt(6/(1+heads)),"
                                 " the reference's) or a number (default xavier)")
        parser.add_argument("--pass-missing-gate-init", type=float, metavar="A",
                            help="log_alpha given to gates missing from a loaded checkpoint, e.g. a stock"
                                 " transformer fine-tuned with --finetune-from-model (default 3.0: open, so"
                                 " the model starts as the stock one)")
        parser.add_argument("--pass-clip-min", type=float, metavar="A",
                            help="lower bound log_alpha is clamped to after every update (default -10; the"
                                 " reference's -5 leaves a closed gate q0 = 0.985, which can keep one gate"
                                 " non-binary)")
        parser.add_argument("--pass-clip-max", type=float, metavar="A",
                            help="upper bound log_alpha is clamped to after every update, and the value a"
                                 " reopened gate is reset to (default 10; the reference's is 5)")
        parser.add_argument("--pass-gate-noise", choices=["batch", "example"],
                            help="draw one training gate sample per head and batch (the reference's) or"
                                 " per head and example (default batch)")

    @classmethod
    def build_model(cls, args, task):
        pass_gate_defaults(args)
        model = super().build_model(args, task)
        model.gate_attention_modules(args)
        return model

    def gate_attention_modules(self, args) -> None:
        """Replace every stock attention module by a gated copy with the same weights."""
        gate_kwargs = dict(beta=args.pass_beta, clip_min=args.pass_clip_min, clip_max=args.pass_clip_max,
                           init=_parse_init(args.pass_gate_init))
        for name, module in list(self.named_modules()):
            if type(module) is MultiheadAttention:
                parent_name, _, attr = name.rpartition(".")
                gated = GatedMultiheadAttention.from_attention(
                    module, gate_kwargs=gate_kwargs, gate_per_example=args.pass_gate_noise == "example",
                    missing_gate_init=args.pass_missing_gate_init)
                setattr(self.get_submodule(parent_name), attr, gated)

    def gated_attentions(self) -> List[Tuple[str, GatedMultiheadAttention]]:
        return gated_attentions(self)

    def upgrade_state_dict_named(self, state_dict, name):
        """Stock checkpoints have no schedule buffers: start them at zero."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        for key in ("pass_epoch", "pass_lambda_steps"):
            state_dict.setdefault(prefix + key, torch.zeros((), dtype=torch.long))


def gated_attentions(model) -> List[Tuple[str, GatedMultiheadAttention]]:
    """The gated modules of ``model`` (possibly wrapped for DDP), in state-dict order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GatedMultiheadAttention)]


def schedule_state(model) -> "TransformerPassModel":
    """The :class:`TransformerPassModel` holding the schedule buffers (unwraps DDP)."""
    return next(m for m in model.modules() if isinstance(m, TransformerPassModel))


def _parse_init(value):
    return value if value == "xavier" else float(value)


def pass_gate_defaults(args):
    args.pass_beta = getattr(args, "pass_beta", None) or 0.33
    args.pass_gate_init = getattr(args, "pass_gate_init", None) or "xavier"
    for key, default in (("pass_missing_gate_init", 3.0), ("pass_clip_min", -10.0), ("pass_clip_max", 10.0)):
        if getattr(args, key, None) is None:
            setattr(args, key, default)
    args.pass_gate_noise = getattr(args, "pass_gate_noise", None) or "batch"


@register_model_architecture("transformer_pass", "transformer_pass")
def transformer_pass(args):
    pass_gate_defaults(args)
    base_architecture(args)


@register_model_architecture("transformer_pass", "transformer_pass_iwslt")
def transformer_pass_iwslt(args):
    pass_gate_defaults(args)
    transformer_iwslt_de_en(args)
