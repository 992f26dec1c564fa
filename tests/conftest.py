"""Shared helpers: a tiny generated reversal task and in-process fairseq CLIs (as fairseq's
own tests run them). ``--user-dir`` is the package's own directory, so the plugin is
imported once, under one name."""
import contextlib
import io
import logging
import os

import pytest
import torch

import pass_fairseq
from pass_fairseq.experiments.toy_task import binarize, write_reversal_corpus

# Tiny models run fastest on one thread (and two test processes never fight over cores).
torch.set_num_threads(1)

USER_DIR = pass_fairseq.PLUGIN_DIR

#: a small gated model: 2+2 layers, 4 heads each, so 6 modules and 24 heads
TINY_MODEL = [
    "--arch", "transformer_pass_iwslt", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
    "--decoder-ffn-embed-dim", "128", "--share-all-embeddings", "--dropout", "0.1",
]
TRAIN_COMMON = [
    "--task", "translation_pass",
    "--optimizer", "pass_adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--max-tokens", "1500",
    "--no-epoch-checkpoints", "--num-workers", "0", "--log-format", "simple", "--log-interval", "100",
    "--no-progress-bar",
]
PASS_CRITERION = ["--criterion", "pass_label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
#: TINY_MODEL's stock twin (fairseq's transformer, no gates): the same weights load into both
STOCK_TINY_MODEL = [a if a != "transformer_pass_iwslt" else "transformer_iwslt_de_en" for a in TINY_MODEL]


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    raw = write_reversal_corpus(str(root / "raw"), n_train=800, n_valid=100, n_test=50, vocab=30, max_len=8)
    with contextlib.redirect_stdout(io.StringIO()):
        return binarize(raw, str(root / "data-bin"))


@pytest.fixture(scope="session")
def stock_toy_base(toy_data, tmp_path_factory):
    """A stock toy model trained to fit the reversal task (40 epochs, about 15 s): what a user
    prunes, and the teacher of the distillation tests. Returns its checkpoint."""
    save = train(toy_data, tmp_path_factory.mktemp("stock_base"), *STOCK_TINY_MODEL,
                 *[a if a != "pass_adam" else "adam" for a in TRAIN_COMMON],
                 "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-epoch", "40")
    return os.path.join(save, "checkpoint_last.pt")


def _reset_checkpoint_best():
    from fairseq import checkpoint_utils

    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best


def train(data, save_dir, *args):
    """fairseq-train in process; returns the save directory."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train as train_cli

    _reset_checkpoint_best()
    parser = options.get_training_parser()
    argv = [data, "--user-dir", USER_DIR, "--save-dir", str(save_dir), "--cpu", *args]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    train_cli.main(cfg)
    logging.disable(logging.NOTSET)
    return str(save_dir)


def generate(data, checkpoint, results_dir, *args):
    """fairseq-generate in process; returns the text it wrote."""
    from fairseq import options
    from fairseq_cli import generate as generate_cli

    parser = options.get_generation_parser()
    argv = [data, "--user-dir", USER_DIR, "--path", str(checkpoint), "--cpu", "--beam", "5",
            "--results-path", str(results_dir), "--batch-size", "64", *args]
    generate_cli.main(options.parse_args_and_arch(parser, argv))
    with open(os.path.join(results_dir, "generate-test.txt")) as f:
        return f.read()


def pruned_and_stock(gated, out_dir):
    """(gated, pruned, stock-format) checkpoint paths: ``gated`` converted both ways by
    pass-prune-checkpoint (its own kept heads) into ``out_dir``."""
    from pass_fairseq.cli import prune_checkpoint

    paths = [str(gated), os.path.join(out_dir, "pruned.pt"), os.path.join(out_dir, "stock.pt")]
    assert prune_checkpoint.main([paths[0], paths[1]]) == 0
    assert prune_checkpoint.main([paths[0], paths[2], "--format", "stock"]) == 0
    return paths


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def _root_log_level():
    return logging.getLogger().level


@pytest.fixture(autouse=True)
def _restore_root_log_level(_root_log_level):
    """The command-line tools quiet the root logger to WARNING when their ``main`` runs in
    process; restore it after every test, so that later tests still capture fairseq's INFO
    lines (the training summaries some tests read)."""
    yield
    logging.getLogger().setLevel(_root_log_level)
