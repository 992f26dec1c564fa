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

from pass_fairseq.errors import fail
from pass_fairseq.gates import BETA, MISSING_GATE_INIT
from pass_fairseq.modules.gated_attention import GatedMultiheadAttention
from pass_fairseq.presets import preset_value


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
                            help=f"Hard Concrete temperature beta (default {BETA}, the reference's)")
        parser.add_argument("--pass-gate-init", metavar="INIT",
                            help="initial log_alpha of new gates: 'xavier' (U(-b, b), b = sqrt(6/(1+heads)),"
                                 " the reference's) or a number (default xavier)")
        parser.add_argument("--pass-missing-gate-init", type=float, metavar="A",
                            help="log_alpha given to gates missing from a loaded checkpoint, e.g. a stock"
                                 f" transformer fine-tuned with --finetune-from-model (default {MISSING_GATE_INIT}:"
                                 " open, so the model starts as the stock one)")
        parser.add_argument("--pass-clip-min", type=float, metavar="A",
                            help="lower bound of log_alpha (see --pass-clip-when; default: -10 with"
                                 " --pass-preset plugin, the reference's -5 with reference)")
        parser.add_argument("--pass-clip-max", type=float, metavar="A",
                            help="upper bound of log_alpha, and the value a reopened gate is reset to"
                                 " (default: 10 with --pass-preset plugin, the reference's 5 with reference)")
        parser.add_argument("--pass-gate-noise", choices=["batch", "example"],
                            help="draw one training gate sample per head and batch (the reference's) or"
                                 " per head and example (default batch)")

    @classmethod
    def build_model(cls, args, task):
        pass_gate_defaults(args, getattr(getattr(task, "cfg", None), "pass_preset", None))
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

    def prepare_for_inference_(self, cfg):
        """As fairseq-generate prepares a model; --print-alignment needs the alignment
        layer's attention, which a module with every gate closed no longer has."""
        super().prepare_for_inference_(cfg)
        if getattr(cfg.generation, "print_alignment", False):
            check_alignment_heads(self.decoder.layers[-1].encoder_attn, "gated")

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


def check_alignment_heads(module, kind: str) -> None:
    """One-line error when the alignment layer (the last decoder layer's encoder attention,
    fairseq's default) has no head left to give attention weights."""
    open_heads = int((module.gate.deterministic() > 0).sum()) if hasattr(module, "gate") else module.num_heads
    if open_heads == 0:
        fail(f"--print-alignment needs the attention weights of the last decoder layer's encoder attention,"
             f" whose heads are all pruned in this {kind} model: drop --print-alignment (and --replace-unk)")


def pass_gate_defaults(args, preset=None):
    """Fill the gate flags left unset: fixed defaults, and the clip bounds of ``preset``."""
    args.pass_beta = getattr(args, "pass_beta", None) or BETA
    args.pass_gate_init = getattr(args, "pass_gate_init", None) or "xavier"
    if getattr(args, "pass_missing_gate_init", None) is None:
        args.pass_missing_gate_init = MISSING_GATE_INIT
    args.pass_clip_min = preset_value(preset, "clip_min", getattr(args, "pass_clip_min", None))
    args.pass_clip_max = preset_value(preset, "clip_max", getattr(args, "pass_clip_max", None))
    args.pass_gate_noise = getattr(args, "pass_gate_noise", None) or "batch"


@register_model_architecture("transformer_pass", "transformer_pass")
def transformer_pass(args):
    base_architecture(args)


@register_model_architecture("transformer_pass", "transformer_pass_iwslt")
def transformer_pass_iwslt(args):
    transformer_iwslt_de_en(args)
