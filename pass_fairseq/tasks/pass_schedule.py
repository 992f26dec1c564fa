"""The PASS gate schedule, carried by any fairseq task: :class:`PassScheduleMixin` (goes
first in the task's bases) and its flags, :class:`PassScheduleConfig` (joined to the task's
own config). ``translation_pass`` and ``language_modeling_pass`` are each a stock fairseq
task plus these two.

fairseq calls no model, criterion or optimizer hook at an epoch start, only
``task.begin_epoch``, and per update only ``task.optimizer_step``. So the task runs:

* at each epoch start (once per epoch, also after a mid-epoch resume, thanks to the
  model's ``pass_epoch`` buffer): the criterion's lambda schedule, then selective
  reopening of closed gates from all-reduced attention confidences;
* after updates: reopened gates set to ``clip_max`` and every log_alpha clamped to
  ``[clip_min, clip_max]``, on the tensors the optimizer steps (fp16 master copies too):
  after every update (``--pass-clip-when update``) or after the first update of each epoch
  from epoch 2 (``epoch``, the reference's timing).

Clipping and reopening are Hard Concrete schedules, run for ``--pass-method pass`` and
``voita`` only (:mod:`pass_fairseq.methods`). Subset gates (``dsp``) get the soft top-K
temperature instead, annealed with the updates of this run (the model's ``pass_num_updates``
buffer carries the count over a resume); the PASS criterion's target schedule
(``--pass-target-schedule``) follows the same count, handed to it after every update.

Fresh run or resume: fairseq hands the task its own entry of a checkpoint's extra state
(:meth:`PassScheduleMixin.set_checkpoint_dict`) only when it resumes a run
(``checkpoint_last.pt`` without ``--reset-dataloader``). Any other start
(``--finetune-from-model``, a reset dataloader, a new run) that loads a gated checkpoint
restarts the gate schedule at epoch 1 and says so in the log, so pruning a K=32 model on to
K=16 gets a full schedule.

With ``--best-checkpoint-metric pass_loss`` (logged by the PASS criteria: the validation
loss when the deterministic gates are binary and on target, +inf otherwise), or
``pass_accuracy --maximize-best-checkpoint-metric`` (``pass_sentence_prediction``: the
validation accuracy when on target, -inf otherwise), ``checkpoint_best.pt`` is only ever an
on-target checkpoint.
"""
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
from fairseq import checkpoint_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from pass_fairseq.errors import exit_on_error, fail
from pass_fairseq.flag_checks import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, check_flags
from pass_fairseq.gate_schedule import constrain_, reopen_probabilities, sample_reopen
from pass_fairseq.methods import method
from pass_fairseq.models.gating import gated_attentions, schedule_state
from pass_fairseq.optim.pass_adam import PassAdam, master_copies
from pass_fairseq.presets import PRESET_NAMES, preset_value
from pass_fairseq.subset_gates import annealed_temperature

#: the metrics that make checkpoint_best.pt the best on-target checkpoint, and whether each is
#: maximized: pass_loss, the valid loss (+inf off target), and for a classifier pass_accuracy,
#: the valid accuracy (-inf off target)
PASS_BEST_METRICS = {"pass_loss": False, "pass_accuracy": True}
#: lr schedulers that step on the validation metric (+inf while off target)
PLATEAU_SCHEDULERS = ("reduce_lr_on_plateau",)
#: the tasks that carry the schedule, for error messages
PASS_TASKS = ("translation_pass", "language_modeling_pass", "sentence_prediction_pass")


@dataclass
class PassScheduleConfig(FairseqDataclass):
    pass_preset: ChoiceEnum(PRESET_NAMES) = field(
        default="plugin", metadata={"help": "defaults of the gate schedule: plugin (this plugin's choices) or"
                                            " reference (the reference code's encoder-decoder schedule as it"
                                            " runs); flags given explicitly win (docs/method.md, 'Presets')"})
    pass_clip_when: Optional[ChoiceEnum(["update", "epoch"])] = field(
        default=None, metadata={"help": "clamp log_alpha to [--pass-clip-min, --pass-clip-max] after every"
                                        " update (plugin preset) or once per epoch from epoch 2, after its"
                                        " first update (reference preset)"})
    pass_no_reopen: bool = field(
        default=False, metadata={"help": "never reopen closed gates at epoch starts"})
    pass_reopen_decay: float = field(
        default=0.9, metadata={"help": "reopen probability factor decay^(epoch-2) (the reference's 0.9)"})
    pass_reopen_until_epoch: Optional[int] = field(
        default=None, metadata={"help": "last epoch at whose start closed gates may reopen (plugin preset: half"
                                        " of --max-epoch, so the run ends on target, every epoch without"
                                        " --max-epoch; reference preset: every epoch)"})
    pass_confidence: Optional[ChoiceEnum(["train", "train-valid"])] = field(
        default=None, metadata={"help": "forward passes whose attention confidence feeds reopening: train"
                                        " (plugin preset) or train-valid, the validation loss passes too"
                                        " (reference preset; never the --eval-bleu beam search)"})
    pass_dsp_temp_start: float = field(
        default=0.1, metadata={"help": "--pass-method dsp: soft top-K temperature at the first update"
                                       " (the DSP reference's 0.1 for IWSLT)"})
    pass_dsp_temp_end: float = field(
        default=1e-8, metadata={"help": "--pass-method dsp: temperature reached after"
                                        " --pass-dsp-anneal-updates updates, and kept (the DSP reference's)"})
    pass_dsp_anneal_updates: int = field(
        default=15000, metadata={"help": "--pass-method dsp: updates over which the temperature falls"
                                         " geometrically from start to end (the DSP reference's 15,000 for"
                                         " IWSLT; scale it to the run length)"})
    seed: int = II("common.seed")
    max_epoch: int = II("optimization.max_epoch")
    best_checkpoint_metric: str = II("checkpoint.best_checkpoint_metric")
    maximize_best_checkpoint_metric: bool = II("checkpoint.maximize_best_checkpoint_metric")
    patience: int = II("checkpoint.patience")
    lr_scheduler: Optional[str] = II("lr_scheduler._name")


class PassScheduleMixin:
    """A fairseq task that runs the PASS gate schedule (see the module docstring); its
    config includes :class:`PassScheduleConfig`. Logs go to the concrete task's module
    logger (``pass_fairseq.tasks.translation_pass``, ...)."""

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.cfg = cfg  # fairseq's legacy tasks (language_modeling) keep it as self.args only
        self.logger = logging.getLogger(type(self).__module__)
        self.criterion = None
        self.num_heads = None
        self._optimizer_checked = False
        self._resumed = False  # set by fairseq through set_checkpoint_dict on a true resume
        self._schedule_checked = False
        self._clamp_pending = False
        self.clip_when = str(preset_value(cfg.pass_preset, "clip_when", cfg.pass_clip_when))
        self.confidence = str(preset_value(cfg.pass_preset, "confidence", cfg.pass_confidence))
        self.clips_and_reopens = True  # the criterion's method decides (build_criterion)
        with exit_on_error():
            check_flags({"--pass-reopen-decay": (cfg.pass_reopen_decay, UNIT_INTERVAL),
                         "--pass-reopen-until-epoch": (cfg.pass_reopen_until_epoch, NON_NEGATIVE),
                         "--pass-dsp-temp-start": (cfg.pass_dsp_temp_start, POSITIVE),
                         "--pass-dsp-temp-end": (cfg.pass_dsp_temp_end, POSITIVE),
                         "--pass-dsp-anneal-updates": (cfg.pass_dsp_anneal_updates, NON_NEGATIVE)})
        metric = cfg.best_checkpoint_metric
        if metric in PASS_BEST_METRICS:
            maximize = PASS_BEST_METRICS[metric]
            off_target = f"{metric} = {'-inf' if maximize else 'inf'}"
            if cfg.maximize_best_checkpoint_metric != maximize:
                fail(f"--best-checkpoint-metric {metric} is an accuracy: add --maximize-best-checkpoint-metric"
                     if maximize else f"--best-checkpoint-metric {metric} is a loss: drop"
                                      " --maximize-best-checkpoint-metric")
            if cfg.patience > 0:
                fail(f"--patience counts every off-target validation ({off_target}) as no improvement and"
                     " would stop a run that is still converging: drop --patience, or use it with"
                     " --best-checkpoint-metric loss")
            if cfg.lr_scheduler in PLATEAU_SCHEDULERS:
                fail(f"--lr-scheduler {cfg.lr_scheduler} would cut the lr at every off-target validation"
                     f" ({off_target}): use another scheduler, or --best-checkpoint-metric loss")
            # fairseq saves checkpoint_best.pt at the first validation whatever its value;
            # start from a finite best so that an off-target (infinite) validation never wins.
            if not hasattr(checkpoint_utils.save_checkpoint, "best"):
                checkpoint_utils.save_checkpoint.best = -sys.float_info.max if maximize else sys.float_info.max

    def build_model(self, cfg, *args, **kwargs):
        model = super().build_model(cfg, *args, **kwargs)
        self.num_heads = sum(m.num_heads for _, m in gated_attentions(model))
        return model

    def build_criterion(self, cfg, *args, **kwargs):
        """(fairseq's legacy tasks take no ``from_checkpoint``: passed on only when given)"""
        criterion = super().build_criterion(cfg, *args, **kwargs)
        if hasattr(criterion, "check_model"):
            criterion.check_model(self.num_heads)
        self.clips_and_reopens = method(getattr(criterion, "method", None)).clips_and_reopens
        self.criterion = criterion
        return criterion

    # ---- fresh run or resume (fairseq calls these around checkpoints) -----------------
    def get_checkpoint_dict(self):
        """Stored in every checkpoint's extra state; fairseq gives it back only on resume."""
        return {type(self).__name__: {"pass_schedule": True}}

    def set_checkpoint_dict(self, state):
        self._resumed = bool(state.get("pass_schedule"))

    def _check_schedule_origin(self, model) -> None:
        """At the first epoch start of this process: a fresh run that loaded a gated
        checkpoint (fine-tune, reset dataloader) restarts the schedule; a resume keeps it."""
        state = schedule_state(model)
        epoch, steps = int(state.pass_epoch), int(state.pass_lambda_steps)
        if self._resumed:
            self.logger.info(f"pass: resuming the gate schedule after epoch {epoch} (lambda steps {steps})")
        elif epoch > 0 or steps > 0:
            self.logger.info(f"pass: fresh run from a checkpoint whose gate schedule had reached epoch {epoch}"
                             f" (lambda steps {steps}): the schedule starts again at epoch 1")
            state.pass_epoch.zero_()
            state.pass_lambda_steps.zero_()
            state.pass_num_updates.zero_()
            if state.subset_group is None:
                for _, m in gated_attentions(model):
                    m.gate.reopen_pending.zero_()
        self._schedule_checked = True

    # ---- epoch start ---------------------------------------------------------------
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        modules = [m for _, m in gated_attentions(model)]
        if not modules:
            return
        if not self._schedule_checked:
            self._check_schedule_origin(model)
        state = schedule_state(model)
        new_epoch = epoch > int(state.pass_epoch)  # not a resume within an epoch already started
        if hasattr(self.criterion, "begin_epoch"):  # lambda
            self.criterion.begin_epoch(epoch, model, new_epoch)
        if new_epoch:
            reopen = epoch >= 2 and not self.cfg.pass_no_reopen and epoch <= self.last_reopen_epoch()
            if reopen and self.clips_and_reopens:
                self.reopen_gates(modules, epoch)
            self._clamp_pending = epoch >= 2 and self.clip_when == "epoch"
            for m in modules:
                m.reset_confidence()
            state.pass_epoch.fill_(epoch)
        if state.subset_group is not None:
            self.set_temperature(model, int(state.pass_num_updates))

    def set_temperature(self, model, update: int) -> None:
        """The soft top-K temperature for the forward passes of update number ``update``
        (counted from this run's start)."""
        group = schedule_state(model).subset_group
        if group is not None and group.relaxation == "soft-top-k":
            group.temperature = annealed_temperature(update, self.cfg.pass_dsp_temp_start, self.cfg.pass_dsp_temp_end,
                                                     self.cfg.pass_dsp_anneal_updates)

    def last_reopen_epoch(self) -> float:
        if self.cfg.pass_reopen_until_epoch is not None:
            return self.cfg.pass_reopen_until_epoch
        if preset_value(self.cfg.pass_preset, "reopen_until") == "all" or not self.cfg.max_epoch:
            return float("inf")
        return self.cfg.max_epoch // 2

    def reopen_gates(self, modules, epoch):
        """Mark closed gates for reopening with probability proportional to their head's
        attention confidence (all-reduced over workers), decayed per epoch."""
        counts = torch.stack([m.conf_count for m in modules]).float().unsqueeze(-1)
        weighted = torch.stack([m.conf_mean.float() for m in modules]) * counts
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(weighted)
            dist.all_reduce(counts)
        confidence = (weighted / counts.clamp(min=1)).flatten()
        closed = torch.cat([m.gate.is_clipped_closed().cpu() for m in modules])
        probs = reopen_probabilities(confidence.cpu(), closed, epoch, self.cfg.pass_reopen_decay)
        chosen = sample_reopen(probs, self.cfg.seed, epoch)
        for m, pending in zip(modules, chosen.split([m.num_heads for m in modules])):
            m.gate.reopen_pending.copy_(pending.to(m.gate.reopen_pending.device))
        self.logger.info(f"pass: epoch {epoch}: {int(closed.sum())} gates closed, "
                         f"{int(chosen.sum())} reopened")

    # ---- validation ----------------------------------------------------------------
    def valid_step(self, sample, model, criterion):
        track = self.confidence == "train-valid"
        with confidence_in_eval(model, track):
            return super().valid_step(sample, model, criterion)

    # ---- every update --------------------------------------------------------------
    def optimizer_step(self, optimizer, model, update_num):
        gates = [m.gate for _, m in gated_attentions(model)]
        if gates and not self._optimizer_checked:
            inner = getattr(optimizer, "fp32_optimizer", None) or getattr(optimizer, "wrapped_optimizer", optimizer)
            if not isinstance(inner, PassAdam):
                fail(f"the gated model needs --optimizer pass_adam (the gates' own learning rate, "
                     f"--pass-gate-lr); got {type(inner).__name__}")
            self._optimizer_checked = True
        super().optimizer_step(optimizer, model, update_num)
        if gates:
            schedule_state(model).pass_num_updates.fill_(update_num + 1)
            self.set_temperature(model, update_num + 1)
            if hasattr(self.criterion, "step_update"):  # the PASS target schedule
                self.criterion.step_update(update_num + 1)
        if not self.clips_and_reopens:
            return
        clamp = self.clip_when == "update" or self._clamp_pending
        self._clamp_pending = False
        with torch.no_grad():
            for gate, master in zip(gates, master_copies(optimizer, [g.log_alpha for g in gates])):
                constrain_(master, gate.reopen_pending, gate.clip_min, gate.clip_max, clamp=clamp)
                if master is not gate.log_alpha:
                    gate.log_alpha.copy_(master)
                gate.reopen_pending.zero_()


@contextlib.contextmanager
def confidence_in_eval(model, track: bool):
    """Let the gated modules accumulate attention confidence in eval mode (or not)."""
    modules = [m for _, m in gated_attentions(model)]
    before = [m.confidence_in_eval for m in modules]
    for m in modules:
        m.confidence_in_eval = track
    try:
        yield
    finally:
        for m, b in zip(modules, before):
            m.confidence_in_eval = b
