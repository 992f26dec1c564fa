"""Training benchmark: what one PASS update costs against one stock fairseq update.

Two models are built in process, as ``fairseq-train`` builds them (seeded with the same
seed, same task ``translation_pass``, same width flags): the stock
``transformer_iwslt_de_en`` with ``label_smoothed_cross_entropy`` and ``adam``
(:data:`STOCK_FLAGS`), and the gated ``transformer_pass_iwslt`` with
``pass_label_smoothed_cross_entropy`` and ``pass_adam`` (:func:`pass_flags`). Each has its
own fairseq ``Trainer``, and an update is ``trainer.train_step([batch])``, what
``fairseq-train`` runs: forward and backward, the gradient norm and its finiteness check,
the optimizer step through the task's ``optimizer_step`` hook (where PASS clamps and
reopens the gates), the learning-rate update and the reduced training statistics.

Both train on the same batches (epoch 1 of the training set, drawn as fairseq-train draws
them). After warm-up updates, each repeat times N updates of one model, then N of the
other (interleaved, with device synchronisation); the median over repeats is reported.
"""
import itertools
import warnings
from statistics import median
from typing import List, Sequence

import numpy as np

import pass_fairseq
from pass_fairseq.bench.summary import repeat_spread


#: the stock fairseq model, criterion and optimizer
STOCK_FLAGS = ["--arch", "transformer_iwslt_de_en", "--criterion", "label_smoothed_cross_entropy",
               "--optimizer", "adam"]

#: (row key, column title) of the markdown table, in order
COLUMNS = [("model", "model"), ("ms_per_update", "ms / update"), ("tok_per_s", "tok/s"),
           ("time_over_stock", "time / stock"), ("spread", "repeat spread")]


def pass_flags(target_heads: int, concentrator: bool = False, fp16: bool = False) -> List[str]:
    """The gated model, the PASS criterion with target K (and the concentrator) and
    ``pass_adam``; with fp16 fairseq needs ``--fp16-no-flatten-grads`` for ``pass_adam``
    (the gates have their own learning rate), where the stock model's gradients are flat."""
    flags = ["--arch", "transformer_pass_iwslt", "--criterion", "pass_label_smoothed_cross_entropy",
             "--pass-target-heads", str(target_heads), "--optimizer", "pass_adam"]
    if concentrator:
        flags.append("--pass-concentrator")
    if fp16:
        flags.append("--fp16-no-flatten-grads")
    return flags


def build_trainer(data: str, flags: Sequence[str]):
    """The fairseq ``Trainer`` of ``fairseq-train DATA --user-dir pass_fairseq FLAGS``,
    built and seeded as fairseq-train builds it, at the start of epoch 1."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    argv = [data, "--user-dir", pass_fairseq.PLUGIN_DIR, *flags]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    with warnings.catch_warnings():  # hydra's deprecation notices, once per model
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(args)
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    trainer.begin_epoch(1)
    return trainer


def train_batches(trainer, n: int) -> List[dict]:
    """The first ``n`` batches of epoch 1 of the training set, as fairseq-train draws them
    (``--max-tokens`` batches, shuffled with the seed), on the host; a shorter epoch is
    cycled. Empty when the training set is."""
    itr = trainer.get_train_iterator(epoch=1, disable_iterator_cache=True).next_epoch_itr(shuffle=True)
    epoch = list(itertools.islice(itr, n))
    return [epoch[i % len(epoch)] for i in range(n)] if epoch else []


def time_updates(trainers, batches: List[dict], timer, warmup: int, repeats: int) -> List[List[float]]:
    """Per trainer, the seconds of one update on each of ``batches`` in turn, per repeat:
    ``warmup`` untimed updates per trainer first, then the repeats, trainers interleaved.
    fairseq's statistics go to a fresh metrics root, dropped afterwards."""
    from fairseq.logging import metrics

    seconds = [[] for _ in trainers]
    with metrics.aggregate(new_root=True):
        for trainer in trainers:
            for i in range(warmup):
                trainer.train_step([batches[i % len(batches)]])
        for _ in range(repeats):
            for trainer, secs in zip(trainers, seconds):
                start = timer.now()
                for batch in batches:
                    trainer.train_step([batch])
                secs.append(timer.now() - start)
    return seconds


def summarize(labels: Sequence[str], seconds: Sequence[List[float]], updates: int, tokens: int) -> List[dict]:
    """Table rows (keys of :data:`COLUMNS`) from each model's seconds per repeat of
    ``updates`` updates over ``tokens`` target tokens; ``time / stock`` is against the
    first model, ``repeat spread`` is (max - min) / median over the repeats. Pure
    arithmetic."""
    reference = median(seconds[0])
    rows = []
    for label, secs in zip(labels, seconds):
        t = median(secs)
        rows.append({"model": label, "ms_per_update": round(1000 * t / updates, 2),
                     "tok_per_s": round(tokens / t), "time_over_stock": round(t / reference, 3),
                     "spread": repeat_spread(secs)})
    return rows
