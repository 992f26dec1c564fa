"""Gating any fairseq model built from fairseq's ``MultiheadAttention``: one operation
(:func:`gate_attention_modules`) and the model side every gated architecture shares
(:class:`GatedModelMixin`).

:func:`gate_attention_modules` replaces every stock attention module of a built model by a
:class:`GatedMultiheadAttention` with the same weights and Hard Concrete or subset gates
(``--pass-gate-type``); it does not care whether the model is an encoder-decoder
(``transformer_pass``) or a decoder-only language model (``transformer_lm_pass``).

:class:`GatedModelMixin` goes first in a gated model's bases, before the stock fairseq model.
It builds the stock model and gates it, draws subset gates once per training forward pass
(at test time they need no forward hook: fairseq's SequenceGenerator calls the decoder, never
the model's ``forward``), and holds the schedule state as persistent buffers, because
fairseq restores the model on resume but not the task: ``pass_epoch`` (the last epoch whose
start was handled), ``pass_lambda_steps`` (how often lambda has been multiplied) and
``pass_num_updates`` (the updates of this run, which the soft top-K temperature and PASS's target
schedule follow).
"""
from typing import List, Optional, Tuple

import torch
from fairseq.modules.multihead_attention import MultiheadAttention

from pass_fairseq.errors import exit_on_error, fail
from pass_fairseq.flag_checks import FINITE, POSITIVE, check_flags
from pass_fairseq.gate_schedule import SCHEDULE_BUFFERS
from pass_fairseq.gates import BETA, MISSING_GATE_INIT, NOISE_MODES, GateCounts, count_gates
from pass_fairseq.methods import GATE_TYPES, method
from pass_fairseq.models.beam_sharing import SharedBeamMixin
from pass_fairseq.modules.gated_attention import GatedMultiheadAttention
from pass_fairseq.presets import preset_value
from pass_fairseq.subset_gates import SubsetGroup


def add_gate_args(parser) -> None:
    """The gate flags every gated architecture takes."""
    parser.add_argument("--pass-beta", type=float, metavar="B",
                        help=f"Hard Concrete temperature beta (default {BETA}, the reference's)")
    parser.add_argument("--pass-gate-init", metavar="INIT",
                        help="initial log_alpha (subset gates: logits) of new gates: 'xavier' (U(-b, b),"
                             " b = sqrt(6/(1+heads)), the reference's) or a number (default xavier)")
    parser.add_argument("--pass-missing-gate-init", type=float, metavar="A",
                        help="log_alpha given to gates missing from a loaded checkpoint, e.g. a stock"
                             f" transformer fine-tuned with --finetune-from-model (default {MISSING_GATE_INIT}:"
                             " open, so the model starts as the stock one); Hard Concrete gates only:"
                             " missing subset-gate logits keep their --pass-gate-init values")
    parser.add_argument("--pass-clip-min", type=float, metavar="A",
                        help="lower bound of log_alpha (see --pass-clip-when; default: -10 with"
                             " --pass-preset plugin, the reference's -5 with reference)")
    parser.add_argument("--pass-clip-max", type=float, metavar="A",
                        help="upper bound of log_alpha, and the value a reopened gate is reset to"
                             " (default: 10 with --pass-preset plugin, the reference's 5 with reference)")
    parser.add_argument("--pass-gate-type", choices=GATE_TYPES,
                        help="hard-concrete: one Hard Concrete gate per head (PASS, Voita); subset:"
                             " one logit per head, exactly --pass-target-heads K of the model's heads"
                             " open (DSP, STE). Default: what --pass-method trains (hard-concrete"
                             " for fixed)")
    parser.add_argument("--pass-gate-noise", choices=NOISE_MODES,
                        help="training gates: one draw per head and forward pass (batch, the"
                             " reference's; subset gates: one joint draw), per head and example"
                             " (example, Hard Concrete only) or none: the deterministic test-time"
                             " gates in training too (default: batch, none with --pass-method fixed)")


def pass_gate_defaults(args, preset=None):
    """Fill the gate flags left unset: fixed defaults, the clip bounds of ``preset``, and the
    gate type and training noise of ``--pass-method``. fairseq-train hands a legacy model
    every flag of the command line (criterion's included), and a checkpoint keeps them, so
    fairseq-generate rebuilds the same gates."""
    beta = getattr(args, "pass_beta", None)
    args.pass_beta = BETA if beta is None else beta
    args.pass_gate_init = getattr(args, "pass_gate_init", None) or "xavier"
    try:
        init = _parse_init(args.pass_gate_init)
    except ValueError:
        fail(f"--pass-gate-init takes xavier or a number (the initial log_alpha), got {args.pass_gate_init!r}")
    if getattr(args, "pass_missing_gate_init", None) is None:
        args.pass_missing_gate_init = MISSING_GATE_INIT
    args.pass_clip_min = preset_value(preset, "clip_min", getattr(args, "pass_clip_min", None))
    args.pass_clip_max = preset_value(preset, "clip_max", getattr(args, "pass_clip_max", None))
    with exit_on_error():
        check_flags({"--pass-beta": (args.pass_beta, POSITIVE),
                     "--pass-gate-init": (None if init == "xavier" else init, FINITE),
                     "--pass-missing-gate-init": (args.pass_missing_gate_init, FINITE),
                     "--pass-clip-min": (args.pass_clip_min, FINITE), "--pass-clip-max": (args.pass_clip_max, FINITE)})
    if args.pass_clip_min is not None and args.pass_clip_max is not None and args.pass_clip_min >= args.pass_clip_max:
        fail(f"--pass-clip-min {args.pass_clip_min} must be below --pass-clip-max {args.pass_clip_max}")
    args.pass_method = str(getattr(args, "pass_method", None) or "pass")
    run = method(args.pass_method)
    gate_type = getattr(args, "pass_gate_type", None) or run.gate_type or "hard-concrete"
    if run.gate_type and gate_type != run.gate_type:
        fail(f"--pass-method {args.pass_method} trains {run.gate_type} gates: drop --pass-gate-type {gate_type}")
    args.pass_gate_type = gate_type
    args.pass_gate_noise = getattr(args, "pass_gate_noise", None) or ("batch" if run.trains_gates else "none")
    if gate_type == "subset":
        if args.pass_gate_noise == "example":
            fail("subset gates are drawn once per forward pass over the whole model: --pass-gate-noise"
                 " batch or none, not example")
        if not getattr(args, "pass_target_heads", None):
            fail("subset gates keep exactly K heads: give --pass-target-heads K")


def gate_attention_modules(model, args) -> Optional[SubsetGroup]:
    """Replace every stock attention module of ``model`` by a gated copy with the same
    weights (``args`` filled by :func:`pass_gate_defaults`); gates are frozen for a method
    that trains none. Returns the :class:`SubsetGroup` joining subset gates (None for Hard
    Concrete gates)."""
    init = _parse_init(args.pass_gate_init)
    if args.pass_gate_type == "subset":
        gate_kwargs = dict(init=init)
    else:
        gate_kwargs = dict(beta=args.pass_beta, clip_min=args.pass_clip_min, clip_max=args.pass_clip_max,
                           init=init, noise=args.pass_gate_noise, missing_init=args.pass_missing_gate_init)
    for name, module in list(model.named_modules()):
        if type(module) is MultiheadAttention:
            parent_name, _, attr = name.rpartition(".")
            gated = GatedMultiheadAttention.from_attention(module, gate_type=args.pass_gate_type,
                                                           gate_kwargs=gate_kwargs)
            setattr(model.get_submodule(parent_name), attr, gated)
    gates = [m.gate for _, m in gated_attentions(model)]
    run = method(args.pass_method)
    group = None
    if args.pass_gate_type == "subset":
        try:
            group = SubsetGroup(gates, args.pass_target_heads, run.relaxation, args.pass_gate_noise)
        except ValueError as e:
            fail(f"--pass-target-heads {args.pass_target_heads}: {e}")
    for gate in gates:
        gate.log_alpha.requires_grad_(run.trains_gates)
    return group


class GatedModelMixin(SharedBeamMixin):
    """A fairseq model whose attention heads are gated for PASS head pruning; put it before
    the stock model class in the bases (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key in SCHEDULE_BUFFERS:  # the schedule buffers, zero in a stock checkpoint
            self.register_buffer(key, torch.zeros((), dtype=torch.long))
        self.subset_group: Optional[SubsetGroup] = None

    @classmethod
    def build_model(cls, args, task):
        pass_gate_defaults(args, getattr(getattr(task, "cfg", None), "pass_preset", None))
        model = super().build_model(args, task)
        model.subset_group = gate_attention_modules(model, args)
        return model

    def gated_attentions(self) -> List[Tuple[str, GatedMultiheadAttention]]:
        return gated_attentions(self)

    def forward(self, *args, **kwargs):
        """fairseq's forward; in training, subset gates are drawn once for the whole pass."""
        if self.training and self.subset_group is not None:
            with self.subset_group.draw():
                return super().forward(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def upgrade_state_dict_named(self, state_dict, name):
        """Stock checkpoints (and those written before a buffer existed) have no schedule
        buffers: start them at zero."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        for key in SCHEDULE_BUFFERS:  # the schedule buffers, zero in a stock checkpoint
            state_dict.setdefault(prefix + key, torch.zeros((), dtype=torch.long))


def gated_attentions(model) -> List[Tuple[str, GatedMultiheadAttention]]:
    """The gated modules of ``model`` (possibly wrapped for DDP), in state-dict order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GatedMultiheadAttention)]


def schedule_state(model) -> GatedModelMixin:
    """The gated model holding the schedule buffers (unwraps DDP)."""
    return next(m for m in model.modules() if isinstance(m, GatedModelMixin))


def gate_counts(model) -> GateCounts:
    """:func:`pass_fairseq.gates.count_gates` over the model's gates (with K for subset gates)."""
    group = schedule_state(model).subset_group
    return count_gates([m.gate.log_alpha for _, m in gated_attentions(model)], group.target_heads if group else None)


def _parse_init(value):
    return value if value == "xavier" else float(value)
