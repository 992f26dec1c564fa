"""The PASS regulariser as a piece any fairseq criterion can carry: :class:`PassRegularizerMixin`
(goes first in the criterion's bases) and its flags, :class:`PassRegularizerConfig` (joined to
the criterion's own config). ``pass_label_smoothed_cross_entropy`` (translation) and
``pass_cross_entropy`` (language models) are each a stock fairseq criterion plus these two.

    L = stock loss + R_pass + R_conc                                     (docs/method.md)
    R_pass = lambda * (sum_i pnb_i + |sN - sum_i q0_i| + |(1-s)N - sum_i q1_i|)
           with (1-s)N = K_t, the scheduled target (``--pass-target-schedule``, K throughout by
           default); while K_t > K the gaps are max(0, sN - sum_i q0_i) and
           max(0, sum_i q1_i - (1-s)N)
    R_conc = lambda * lambda_c * sum_l (1 - prod_{i in H_l} q0_i)
    R_voita = l0_penalty * sum_i (1 - q0_i)
    R = 0                                                                (dsp, ste, fixed)

lambda = pass_lambda_init * pass_lambda_factor ** lambda_steps
(:meth:`PassRegularizerMixin.lambda_at`), where lambda_steps counts the epoch starts at which
the gates were off target (``--pass-lambda-rule``; while the target is still annealed down to
K: more heads open than K_t); it is a model buffer (``pass_lambda_steps``) so it survives
resume. K_t follows :func:`pass_fairseq.target_schedule.scheduled_target` over the updates of
this run. The tensor logic is in :mod:`pass_fairseq.losses`, the gate counts in
:func:`pass_fairseq.gates.count_gates`.

Scaling: the reference adds R once to a batch's summed loss, and fairseq divides
gradients by the update's sample size. A regulariser added per micro-batch would count
``update_freq x workers`` times, so with ``--pass-reg-scaling update`` (default) each
micro-batch adds R / (update_freq x workers): R once per update, as in the reference.
``--pass-reg-scaling token`` multiplies R by the micro-batch's sample size instead, so
its weight relative to the per-token loss no longer depends on the batch size.

No host sync in a forward pass: the epoch, lambda and the update count are host-side values
set at each epoch start (:meth:`PassRegularizerMixin.begin_epoch`, called by the task) and
after each update (:meth:`PassRegularizerMixin.step_update`), and every logged count
stays a tensor until fairseq reduces the logs. The logged ``loss`` (train and valid) is the
stock criterion's loss alone; ``pass_loss`` is the valid loss when the gates are on target
and +inf otherwise (checkpoint selection).

The criterion is built by :meth:`PassRegularizerMixin.build_criterion`: the stock criterion
from its own arguments, then the regulariser from the ``--pass-*`` fields of the config.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from pass_fairseq import losses
from pass_fairseq.errors import exit_on_error, fail
from pass_fairseq.flag_checks import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, check_flags
from pass_fairseq.methods import METHOD_NAMES, method
from pass_fairseq.models.gating import gate_counts, gated_attentions, schedule_state
from pass_fairseq.presets import preset_value
from pass_fairseq.target_schedule import TARGET_SCHEDULES, annealing, scheduled_target
from pass_fairseq.tasks.pass_schedule import PASS_TASKS, PassScheduleMixin

logger = logging.getLogger(__name__)

PASS_METHODS = ChoiceEnum(list(METHOD_NAMES))
REG_SCALINGS = ChoiceEnum(["update", "token"])
LAMBDA_RULES = ChoiceEnum(["on-target", "clipped-count"])
TARGET_SCHEDULE_NAMES = ChoiceEnum(list(TARGET_SCHEDULES))
#: averaged per forward pass and logged as fairseq metrics (``pass_target``: K_t for PASS, K for
#: dsp, ste and fixed, 0 for Voita, which aims at no count)
LOGGED = ("pass_open", "pass_closed", "pass_nonbinary", "pass_modules_active", "pass_expected_open",
          "pass_lambda", "pass_reg", "pass_nb_term", "pass_closed_gap", "pass_open_gap", "pass_conc",
          "pass_conc_weight", "pass_on_target", "pass_temperature", "pass_target")


@dataclass
class PassRegularizerConfig(FairseqDataclass):
    pass_method: PASS_METHODS = field(
        default="pass", metadata={"help": "pass: Hard Concrete gates, exact target K (PASS); voita: Hard Concrete"
                                          " gates, Voita et al.'s L0 penalty; dsp: subset gates, Gumbel soft"
                                          " top-K (DSP); ste: subset gates, hard top-K with a straight-through"
                                          " gradient; fixed: frozen gates (a fixed mask, e.g. from"
                                          " pass-michel-prune), no regulariser (docs/method.md, 'Baselines')"})
    pass_target_heads: Optional[int] = field(
        default=None, metadata={"help": "K, the number of heads to keep (required for --pass-method pass, dsp"
                                        " and ste)"})
    pass_target_schedule: TARGET_SCHEDULE_NAMES = field(
        default="constant", metadata={"help": "the target of open heads R_pass asks for during training: constant"
                                              " (K from the first update, the paper's), or annealed from all N heads"
                                              " down to K over --pass-target-anneal-updates updates, linear or cubic"
                                              " (Zhu & Gupta's gradual-pruning curve), then K; while it falls,"
                                              " R_pass only pushes gates closed and lambda is multiplied at"
                                              " epoch starts with more heads open than the target"
                                              " (docs/method.md, 'Target schedule')"})
    pass_target_anneal_updates: int = field(
        default=150, metadata={"help": "updates of this run over which --pass-target-schedule linear or cubic"
                                       " lowers the target from N to K (0: K at once; unused with constant)"})
    pass_lambda_init: float = field(
        default=0.1, metadata={"help": "initial PASS weight lambda (the reference's 0.1)"})
    pass_lambda_factor: float = field(
        default=2.0, metadata={"help": "lambda is multiplied by this at each epoch start while the"
                                       " gates are off target (--pass-lambda-rule; the reference doubles)"})
    pass_lambda_rule: Optional[LAMBDA_RULES] = field(
        default=None, metadata={"help": "when an epoch start counts as off target: on-target (plugin preset):"
                                        " from epoch 2, unless the deterministic gates are binary with"
                                        " exactly K open; clipped-count (reference preset): at every epoch"
                                        " start, the first included, unless exactly N-K log_alpha sit at or"
                                        " below --pass-clip-min; either applies once an annealed target"
                                        " (--pass-target-schedule) has reached K"})
    pass_l0_penalty: float = field(
        default=0.01, metadata={"help": "weight of Voita et al.'s expected-L0 penalty (--pass-method voita)"})
    pass_concentrator: bool = field(
        default=False, metadata={"help": "add the concentrator R_conc (PASSCONC): pack kept heads into few modules"})
    pass_conc_weight: Optional[float] = field(
        default=None, metadata={"help": "lambda_c; default: the reference's lower bound, recomputed every step"})
    pass_conc_weight_cap: float = field(
        default=500.0, metadata={"help": "cap of the lower-bound lambda_c (the reference's 500)"})
    pass_conc_start_epoch: int = field(
        default=1, metadata={"help": "first epoch with the concentrator on; in a short fine-tune without"
                                     " reopening start it after PASS alone reaches the target (with all gates"
                                     " open it can close whole modules for good; see docs/demo.md)"})
    pass_conc_end_epoch: Optional[int] = field(
        default=None, metadata={"help": "last epoch with the concentrator on (default: half of --max-epoch,"
                                        " so PASS alone settles the count afterwards; to the end without"
                                        " --max-epoch)"})
    pass_reg_scaling: REG_SCALINGS = field(
        default="update", metadata={"help": "update: R counts once per update, as in the reference;"
                                            " token: R is multiplied by the micro-batch's sample size"})
    update_freq: List[int] = II("optimization.update_freq")
    distributed_world_size: int = II("distributed_training.distributed_world_size")
    max_epoch: int = II("optimization.max_epoch")


class PassRegularizerMixin:
    """A fairseq criterion whose loss gets the PASS regulariser and whose logs get the gate
    statistics (see the module docstring); its config includes :class:`PassRegularizerConfig`."""

    @classmethod
    def build_criterion(cls, cfg, task):
        """The stock criterion from its own arguments, then the regulariser from ``cfg``."""
        criterion = super().build_criterion(cfg, task)
        criterion.setup_regularizer(cfg, task)
        return criterion

    def setup_regularizer(self, cfg, task) -> None:
        if not isinstance(task, PassScheduleMixin):
            fail(f"--criterion {cfg._name} needs a task that runs the gate schedule, --task"
                 f" {' or '.join(PASS_TASKS)} (got {type(task).__name__})")
        if method(cfg.pass_method).needs_target and cfg.pass_target_heads is None:
            fail(f"--pass-target-heads K is required with --pass-method {cfg.pass_method}")
        with exit_on_error():
            check_flags({"--pass-target-heads": (cfg.pass_target_heads, AT_LEAST_ONE),
                         "--pass-target-anneal-updates": (cfg.pass_target_anneal_updates, NON_NEGATIVE),
                         "--pass-lambda-init": (cfg.pass_lambda_init, POSITIVE),
                         "--pass-lambda-factor": (cfg.pass_lambda_factor, AT_LEAST_ONE),
                         "--pass-l0-penalty": (cfg.pass_l0_penalty, NON_NEGATIVE),
                         "--pass-conc-weight": (cfg.pass_conc_weight, NON_NEGATIVE),
                         "--pass-conc-weight-cap": (cfg.pass_conc_weight_cap, POSITIVE),
                         "--pass-conc-start-epoch": (cfg.pass_conc_start_epoch, AT_LEAST_ONE),
                         "--pass-conc-end-epoch": (cfg.pass_conc_end_epoch, AT_LEAST_ONE)})
        self.method = str(cfg.pass_method)
        self.target_heads = cfg.pass_target_heads
        self.target_schedule = str(cfg.pass_target_schedule)
        self.anneal_updates = cfg.pass_target_anneal_updates
        if self.target_schedule != "constant" and method(self.method).regulariser != "pass":
            fail(f"--pass-target-schedule {self.target_schedule} anneals the target of PASS's regulariser:"
                 f" --pass-method {self.method} has none; drop the flag")
        self.lambda_init, self.lambda_factor = cfg.pass_lambda_init, cfg.pass_lambda_factor
        self.lambda_rule = str(preset_value(task.cfg.pass_preset, "lambda_rule", cfg.pass_lambda_rule))
        self.l0_penalty = cfg.pass_l0_penalty
        self.concentrator = cfg.pass_concentrator
        self.conc_weight, self.conc_weight_cap = cfg.pass_conc_weight, cfg.pass_conc_weight_cap
        self.conc_start = cfg.pass_conc_start_epoch
        self.conc_end = cfg.pass_conc_end_epoch
        if self.conc_end is None:
            self.conc_end = cfg.max_epoch // 2 if cfg.max_epoch else math.inf
        if self.concentrator and self.conc_start > self.conc_end:
            fail(f"the concentrator would never run: --pass-conc-start-epoch {self.conc_start} is after its end,"
                 f" epoch {self.conc_end} (--pass-conc-end-epoch, default --max-epoch // 2): set both")
        self.reg_scaling = str(cfg.pass_reg_scaling)
        self.update_freq = list(cfg.update_freq)
        self.world_size = max(1, cfg.distributed_world_size)
        self.epoch = None  # host-side copies of the schedule, set by the task at each epoch start
        self.lam = None
        self.num_updates = 0  # and after every update (step_update)

    def check_model(self, num_heads: Optional[int]) -> None:
        """Called by the task once the model exists."""
        if not num_heads:
            fail("the PASS criterion needs a gated model: use --arch transformer_pass_iwslt or transformer_pass"
                 " (translation), transformer_lm_pass or transformer_lm_pass_gpt2_tiny (language model)")
        if self.target_heads is not None and self.target_heads > num_heads:
            fail(f"--pass-target-heads {self.target_heads} is larger than the model's {num_heads} heads")

    # ---- schedule ------------------------------------------------------------------
    def lambda_at(self, lambda_steps: int) -> float:
        """lambda after ``lambda_steps`` off-target epoch starts:
        pass_lambda_init * pass_lambda_factor ** lambda_steps (the module docstring)."""
        return self.lambda_init * self.lambda_factor ** int(lambda_steps)

    def set_schedule(self, epoch: int, lambda_steps: int, num_updates: int) -> None:
        """The host-side copies of the schedule for the epoch that starts (no forward pass
        reads a device buffer)."""
        self.epoch = max(1, int(epoch))
        self.lam = self.lambda_at(lambda_steps)
        self.num_updates = int(num_updates)

    def step_update(self, num_updates: int) -> None:
        """Called by the task after every update: the updates of this run so far."""
        self.num_updates = int(num_updates)

    def target_now(self, num_heads: int) -> float:
        """K_t, the target of open heads for the current update (``--pass-target-schedule``)."""
        return scheduled_target(self.num_updates, num_heads, self.target_heads, self.target_schedule,
                                self.anneal_updates)

    def _schedule(self, model):
        """(epoch, lambda); read from the model's buffers (one sync) only before an epoch start
        ever set them, e.g. when a tool runs the criterion outside fairseq-train."""
        if self.epoch is None:
            state = schedule_state(model)
            self.set_schedule(int(state.pass_epoch), int(state.pass_lambda_steps), int(state.pass_num_updates))
        return self.epoch, self.lam

    def off_target(self, epoch: int, model) -> bool:
        """Whether this epoch start multiplies lambda (``--pass-lambda-rule``); while the target
        is annealed, whether more heads are open than the scheduled target K_t (the gates lag
        behind it)."""
        if annealing(self.num_updates, self.target_schedule, self.anneal_updates):
            counts = gate_counts(model)
            return epoch >= 2 and int(counts.open) > self.target_now(counts.total) + 1e-6  # (round-off of K_t)
        gates = [m.gate for _, m in gated_attentions(model)]
        if self.lambda_rule == "clipped-count":
            at_bound = int(sum(int(g.is_clipped_closed().sum()) for g in gates))
            return at_bound != sum(g.num_gates for g in gates) - self.target_heads
        if epoch < 2:
            return False
        return not bool(gate_counts(model).on_target(self.target_heads))

    def begin_epoch(self, epoch: int, model, new_epoch: bool = True) -> None:
        """Called by the task at every epoch start: at a new epoch's (not again after a resume
        within it), PASS multiplies lambda while off target (a step in the model's
        ``pass_lambda_steps`` buffer, which survives resume); then the host-side copies."""
        state = schedule_state(model)
        self.num_updates = int(state.pass_num_updates)
        if new_epoch and self.method == "pass" and self.off_target(epoch, model):
            state.pass_lambda_steps += 1
        self.set_schedule(epoch, int(state.pass_lambda_steps), self.num_updates)
        if new_epoch and self.method == "pass":
            counts = gate_counts(model).as_ints()
            logger.info(f"pass: epoch {epoch}: {counts['open']} open, {counts['closed']} closed, "
                        f"{counts['nonbinary']} non-binary; target {self.target_now(counts['total']):g},"
                        f" lambda {self.lam:g}")

    def concentrator_on(self, epoch: int) -> bool:
        return self.concentrator and self.conc_start <= epoch <= self.conc_end

    # ---- loss ----------------------------------------------------------------------
    def regularizer(self, model):
        """R for the current gates and a dict of 0-d tensors and floats to log."""
        gates = [m.gate for _, m in gated_attentions(model)]
        epoch, lam = self._schedule(model)
        counts = gate_counts(model)
        zero = counts.open.new_zeros((), dtype=torch.float32)
        nb, closed_gap, open_gap, conc, conc_weight = zero, zero, zero, zero, zero
        regulariser = method(self.method).regulariser
        group = schedule_state(model).subset_group
        target = float(self.target_heads or 0)
        if regulariser is None:  # dsp, ste, fixed: no R; the deterministic gates are the expected ones
            lam, reg, expected_open = 0.0, zero, counts.open.float()
        else:
            q0s = [g.prob_closed() for g in gates]
            q1s = [g.prob_open() for g in gates]
            q0, q1 = losses.flat(q0s), losses.flat(q1s)
            expected_open = (1.0 - q0).sum().detach()
            if regulariser == "l0":
                lam = self.l0_penalty
                reg = lam * losses.expected_l0(q0)
            else:
                target = self.target_now(q0.numel())
                ceiling = annealing(self.num_updates, self.target_schedule, self.anneal_updates)
                nb, closed_gap, open_gap = losses.pass_terms(q0, q1, 1.0 - q0 - q1, target, ceiling)
                reg = lam * (nb + closed_gap + open_gap)
                if self.concentrator_on(epoch):
                    conc = losses.concentrator(q0s)
                    if self.conc_weight is not None:
                        conc_weight = q0.new_tensor(self.conc_weight)
                    else:
                        conc_weight = losses.concentrator_weight_lower_bound(
                            q0s, q1s, [z > 0 for z in counts.gates], self.conc_weight_cap).to(q0.dtype)
                    reg = reg + lam * conc_weight * conc
        log = {
            "pass_open": counts.open, "pass_closed": counts.closed, "pass_nonbinary": counts.nonbinary,
            "pass_modules_active": counts.modules_active, "pass_expected_open": expected_open,
            "pass_lambda": float(lam), "pass_reg": reg.detach(), "pass_nb_term": nb.detach(),
            "pass_closed_gap": closed_gap.detach(), "pass_open_gap": open_gap.detach(), "pass_conc": conc.detach(),
            "pass_conc_weight": conc_weight.detach(),
            "pass_on_target": counts.on_target(self.target_heads).float(),
            "pass_temperature": float(group.temperature or 0.0) if group else 0.0,
            "pass_target": target,
        }
        return reg, log

    def reg_scale(self, sample_size, epoch: int):
        if self.reg_scaling == "token":
            return sample_size
        update_freq = self.update_freq[min(epoch, len(self.update_freq)) - 1]
        return 1.0 / (update_freq * self.world_size)

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        reg, log = self.regularizer(model)
        if model.training:
            loss = loss + self.reg_scale(sample_size, self._schedule(model)[0]) * reg
        logging_output.update(log)
        logging_output["pass_n"] = 1
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        n = sum(log.get("pass_n", 0) for log in logging_outputs)
        if n == 0:
            return
        for key in LOGGED:  # the temperature falls to 1e-8: unrounded
            metrics.log_scalar(key, sum(log.get(key, 0) for log in logging_outputs) / n, n,
                               round=None if key == "pass_temperature" else 3)
        metrics.log_derived(
            "pass_loss", lambda meters: round(float(meters["loss"].avg), 3) if on_target(meters) else math.inf)


def on_target(meters) -> bool:
    """Whether every forward pass of the logged interval had its gates on target (the
    condition of the on-target metrics, ``pass_loss`` and ``pass_accuracy``)."""
    return meters["pass_on_target"].avg >= 1.0 - 1e-9
