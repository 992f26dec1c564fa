"""The fairseq-train command lines of the experiments, in one place: the unpruned base, and the
fine-tunes from it, the equal-budget control (stock model) and every pruning method (gated
model). The demo (:mod:`.demo`) and the sweep (:mod:`.sweep`) build theirs here, so they
cannot drift: a sweep config sets only values (width, updates, learning rate, shards,
epochs, seeds, method flags).

    base_command(data_bin, "data/demo/base", updates=2400)
    finetune_command(shards, base_ckpt, "data/demo/control", Finetune(), seed=1, gated=False)
    finetune_command(shards, base_ckpt, "data/demo/pass-k24", Finetune(), seed=1, gated=True,
                     method_flags=pass_method_flags(24, PassSchedule()))
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pass_fairseq
from pass_fairseq.experiments.jobs import tool

#: the base's topology (transformer_iwslt_de_en: 6+6 layers of 4 heads): its heads and attention modules
HEADS_TOTAL, MODULES_TOTAL = 72, 18
#: the stock model of the base and the control
STOCK_MODEL = ("--arch", "transformer_iwslt_de_en", "--criterion", "label_smoothed_cross_entropy",
               "--optimizer", "adam")
#: the gated model of every pruning method
GATED_MODEL = ("--arch", "transformer_pass_iwslt", "--criterion", "pass_label_smoothed_cross_entropy",
               "--optimizer", "pass_adam")


def width_flags(embed_dim: int = 128, ffn_embed_dim: int = 512) -> List[str]:
    """The base model's topology: transformer_iwslt_de_en (6+6 layers, 4 heads, so 18
    attention modules and 72 heads at any width), pre-norm (much faster to train than
    post-norm at this scale, measured on 2 CPU cores), at this width (a sweep config's
    ``"model"``; the demo's and the default: 128 / ffn 512; the stock architecture's own: 512 /
    ffn 1024)."""
    return ["--encoder-embed-dim", str(embed_dim), "--decoder-embed-dim", str(embed_dim),
            "--encoder-ffn-embed-dim", str(ffn_embed_dim), "--decoder-ffn-embed-dim", str(ffn_embed_dim),
            "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings"]


#: the demo's width
WIDTH = width_flags()


def _common(data: str, save_dir: str, seed: int, log_interval: int) -> List[str]:
    """What every training command shares: the plugin, the task, batching, logging."""
    return [tool("fairseq-train"), data, "--user-dir", pass_fairseq.PLUGIN_DIR, "--task", "translation_pass",
            "--label-smoothing", "0.1", "--adam-betas", "(0.9,0.98)", "--dropout", "0.1",
            "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
            "--log-interval", str(log_interval), "--seed", str(seed), "--num-workers", "0"]


def base_command(data_bin: str, save_dir: str, updates: int, width: Sequence[str] = WIDTH) -> List[str]:
    """The unpruned base: the stock model trained from scratch for ``updates`` updates
    (inverse-sqrt schedule, peak lr 1e-3 after 500 warm-up updates, 4096 tokens a batch).
    Every command runs the plugin's ``translation_pass`` task, which for a model without gates
    is fairseq's ``translation`` (the gate schedule has nothing to act on)."""
    return [*_common(data_bin, save_dir, seed=1, log_interval=50), *STOCK_MODEL, *width,
            "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "500", "--max-tokens", "4096",
            "--max-update", str(updates)]


@dataclass(frozen=True)
class Finetune:
    """The budget every fine-tune from the base gets, the control's and every method's: a
    fixed learning rate after a short warm-up, ``epochs`` epochs (of shards: one shard an
    epoch, :mod:`.shards`), and optionally a cap on the updates."""

    lr: float = 5e-4
    warmup: int = 50
    max_tokens: int = 4096
    epochs: int = 8
    max_update: Optional[int] = None


def finetune_command(data: str, init: str, save_dir: str, budget: Finetune, seed: int, gated: bool,
                     method_flags: Sequence[str] = (), width: Sequence[str] = WIDTH) -> List[str]:
    """A fine-tune of the checkpoint ``init`` (``--finetune-from-model``: weights only, a fresh
    optimizer and schedule) on ``data`` (the shards): the stock model (the equal-budget
    control, ``gated=False``) or the gated model with a method's flags."""
    cmd = [*_common(data, save_dir, seed=seed, log_interval=25), *(GATED_MODEL if gated else STOCK_MODEL), *width,
           "--finetune-from-model", init, "--lr", str(budget.lr), "--lr-scheduler", "fixed",
           "--warmup-updates", str(budget.warmup), "--max-tokens", str(budget.max_tokens),
           "--max-epoch", str(budget.epochs)]
    if budget.max_update:
        cmd += ["--max-update", str(budget.max_update)]
    return cmd + list(method_flags)


@dataclass(frozen=True)
class PassSchedule:
    """The demo's PASS schedule (docs/demo.md, "Why the demo's schedule"): lambda weighs one
    token's loss and starts at ``lambda_init``, times ``lambda_factor`` at each off-target
    epoch start; the gates' own Adam learning rate; log_alpha clipped to [-clip, clip]; no
    reopening unless ``reopen_until_epoch`` >= 2."""

    lambda_init: float = 0.1
    lambda_factor: float = 2.0
    gate_lr: float = 0.2
    clip: float = 10.0
    reopen_until_epoch: int = 0


def pass_method_flags(target_heads: int, schedule: PassSchedule = PassSchedule(),
                      conc_epochs: Optional[Sequence[int]] = None) -> List[str]:
    """The flags of a PASS fine-tune to exactly ``target_heads`` heads on ``schedule``, with
    ``checkpoint_best.pt`` only ever on target; ``conc_epochs`` (first, last): PASSCONC, the
    concentrator on for those epochs."""
    flags = ["--pass-target-heads", str(target_heads), "--pass-reg-scaling", "token",
             "--pass-lambda-init", str(schedule.lambda_init), "--pass-lambda-factor", str(schedule.lambda_factor),
             "--pass-gate-lr", str(schedule.gate_lr), "--pass-clip-min", str(-schedule.clip),
             "--pass-clip-max", str(schedule.clip), "--best-checkpoint-metric", "pass_loss"]
    reopen = schedule.reopen_until_epoch
    flags += ["--pass-reopen-until-epoch", str(reopen)] if reopen >= 2 else ["--pass-no-reopen"]
    if conc_epochs:
        first, last = conc_epochs
        flags += ["--pass-concentrator", "--pass-conc-start-epoch", str(first), "--pass-conc-end-epoch", str(last)]
    return flags
