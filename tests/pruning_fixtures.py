"""Tiny in-process gated models and checkpoints for the pruning tests.

Two encoder and two decoder layers of width 32 with 4 heads: 6 attention modules, 24 heads.
"""
import os

import torch
from omegaconf import OmegaConf

import pass_fairseq  # noqa: F401  (registers the plugin)
from pass_fairseq.experiments.toy_task import binarize, write_reversal_corpus

PLUGIN_DIR = pass_fairseq.PLUGIN_DIR

MODEL_FLAGS = [
    "--arch", "transformer_pass_iwslt", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--share-all-embeddings",
]

# Hand-set log_alpha (4 heads per module). +6 opens a gate (z = 1), -6 closes it (z = 0);
# 0.5 gives z = 0.6586, kept under --threshold 0.5 and folded into out_proj.
OPEN, CLOSED, HALF = 6.0, -6.0, 0.5
MASK = {
    "encoder.layers.0.self_attn": [CLOSED, CLOSED, CLOSED, CLOSED],  # skipped
    "encoder.layers.1.self_attn": [OPEN, CLOSED, HALF, OPEN],
    "decoder.layers.0.self_attn": [CLOSED, OPEN, CLOSED, CLOSED],
    "decoder.layers.0.encoder_attn": [CLOSED, CLOSED, CLOSED, CLOSED],  # skipped
    "decoder.layers.1.self_attn": [CLOSED, CLOSED, CLOSED, CLOSED],  # skipped
    "decoder.layers.1.encoder_attn": [OPEN, OPEN, CLOSED, HALF],
}


def make_data(root):
    """A small binarized reversal corpus (joined dictionary); returns the data-bin dir."""
    raw = write_reversal_corpus(os.path.join(root, "raw"), n_train=60, n_valid=10, n_test=12, vocab=20, seed=3)
    dest = os.path.join(root, "data-bin")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        binarize(raw, dest)
    return dest


def training_args(data, extra=()):
    from fairseq import options

    parser = options.get_training_parser()
    argv = [data, "--user-dir", PLUGIN_DIR, "--task", "translation_pass", *MODEL_FLAGS,
            "--criterion", "pass_label_smoothed_cross_entropy", "--pass-target-heads", "8",
            "--optimizer", "pass_adam", "--lr", "0.001", "--seed", "1", *extra]
    return options.parse_args_and_arch(parser, input_args=argv)


def build_gated(data, mask=MASK, seed=0):
    """(cfg, task, model): a random gated model in eval mode with ``mask``'s log_alpha."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(training_args(data))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    with torch.no_grad():
        for name, values in mask.items():
            model.get_submodule(name).gate.log_alpha.copy_(torch.tensor(values))
            # non-trivial biases, so a skipped module's constant output matters
            model.get_submodule(name).out_proj.bias.normal_(0.0, 0.5)
    return cfg, task, model.eval()


def checkpoint_state(cfg, model):
    """A dict shaped like the checkpoints fairseq-train writes (with optimizer state)."""
    return {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "PassLabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "PassAdam", "lr_scheduler_state": {"best": 1.0},
                               "num_updates": 10}],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 2}},
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(1000)}}, "param_groups": []},
    }


def sample_batch(task, n=6, seed=0):
    """A padded batch of ``n`` test sentences (source and teacher-forced target)."""
    task.load_dataset("test")
    dataset = task.dataset("test")
    return dataset.collater([dataset[i] for i in range(n)])


def log_probs(model, batch):
    net_input = batch["net_input"]
    with torch.no_grad():
        out = model(net_input["src_tokens"], net_input["src_lengths"], net_input["prev_output_tokens"])
        return model.get_normalized_probs(out, log_probs=True)
