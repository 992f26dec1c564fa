"""One process of the 2-rank test run (tests/test_distributed.py): fairseq-train exactly as
``python -m pass_fairseq.distributed`` runs it, with observers on the task that only record
(each calls the plugin's own function and returns its result):

* at each epoch start with reopening: this rank's own confidence statistics (before the
  all-reduce), its log_alpha, the reopen probabilities it computed, the seed of its draws,
  the draws and the gates it marked;
* its first Hard Concrete gate draw in training;
* at the end: its model's state (parameters and buffers).

Written to ``$PASS_PROBE_DIR/rank<RANK>.pt``.
"""
import os
import sys

import torch

from pass_fairseq import distributed
from pass_fairseq.gates import HardConcrete
from pass_fairseq.tasks import pass_schedule, translation_pass


def main() -> None:
    out = os.path.join(os.environ["PASS_PROBE_DIR"], f"rank{os.environ['RANK']}.pt")
    record = {"epochs": {}}
    task = translation_pass.TranslationPassTask
    begin_epoch, reopen_gates, sample_reopen = task.begin_epoch, task.reopen_gates, pass_schedule.sample_reopen

    def observed_begin_epoch(self, epoch, model):
        record["model"] = model
        return begin_epoch(self, epoch, model)

    def observed_reopen_gates(self, modules, epoch):
        record["epochs"][epoch] = {
            "conf_mean": torch.stack([m.conf_mean.clone() for m in modules]),
            "conf_count": torch.stack([m.conf_count.clone() for m in modules]),
            "log_alpha": torch.cat([m.gate.log_alpha.detach().clone() for m in modules]),
        }
        reopen_gates(self, modules, epoch)
        record["epochs"][epoch]["pending"] = torch.cat([m.gate.reopen_pending.clone() for m in modules])

    def observed_sample_reopen(probabilities, seed, epoch):
        chosen = sample_reopen(probabilities, seed, epoch)
        record["epochs"][epoch].update(probabilities=probabilities.clone(), seed=seed, chosen=chosen.clone())
        return chosen

    sample = HardConcrete.sample

    def observed_sample(self, batch_shape=()):
        z = sample(self, batch_shape)
        record.setdefault("first_gate_draw", z.detach().clone())
        return z

    task.begin_epoch, task.reopen_gates = observed_begin_epoch, observed_reopen_gates
    HardConcrete.sample = observed_sample
    pass_schedule.sample_reopen = observed_sample_reopen  # the schedule every PASS task shares
    distributed.train_rank(sys.argv[1:])
    record["state"] = {k: v.detach().clone() for k, v in record.pop("model").state_dict().items()}
    torch.save(record, out)


if __name__ == "__main__":
    main()
