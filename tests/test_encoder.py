"""Encoder-only models end to end: a stock ``roberta`` trained on a tiny classification task,
fine-tuned into ``roberta_pass`` with PASS to exactly K heads (``sentence_prediction_pass``,
``pass_sentence_prediction``), then pruned: the pruned and stock-format encoders give the
gated one's logits, and the stock one loads in a fairseq without the plugin; the inference
benchmark times the encoders' forward pass."""
import argparse
import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest import load_state, pruned_and_stock, train
from pass_fairseq.checkpoints import stock_notes
from pass_fairseq.cli import bench_inference
from pass_fairseq.experiments.classification_data import binarize_classification
from pass_fairseq.experiments.toy_task import write_majority_corpus
from pass_fairseq.gate_report import gate_report, layer_grid

K = 4  # of 12 heads: 3 layers of 4
ENCODER = ["--encoder-layers", "3", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
           "--encoder-attention-heads", "4", "--max-positions", "16", "--dropout", "0.0", "--attention-dropout", "0.0"]
COMMON = [*ENCODER, "--num-classes", "2", "--init-token", "0", "--batch-size", "32", "--lr", "0.003",
          "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--no-epoch-checkpoints", "--num-workers", "0",
          "--log-format", "simple", "--log-interval", "100", "--no-progress-bar", "--required-batch-size-multiple", "1"]
STOCK = ["--task", "sentence_prediction", "--arch", "roberta", "--criterion", "sentence_prediction",
         "--optimizer", "adam", *COMMON]
PASS = ["--task", "sentence_prediction_pass", "--arch", "roberta_pass", "--criterion", "pass_sentence_prediction",
        "--optimizer", "pass_adam", "--pass-target-heads", str(K), "--pass-reg-scaling", "token",
        "--best-checkpoint-metric", "pass_accuracy", "--maximize-best-checkpoint-metric", *COMMON]
#: the stock checkpoint's logits on the valid split, in a process without the plugin
STOCK_LOGITS = """
import sys, torch
from fairseq import checkpoint_utils
models, _, task = checkpoint_utils.load_model_ensemble_and_task([sys.argv[2]], arg_overrides={"data": sys.argv[1]})
sys.path.insert(0, sys.argv[3])
from encoder_logits import logits
torch.save(logits(models[0], task), sys.argv[4])
assert "pass_fairseq" not in sys.modules
"""


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    raw = write_majority_corpus(str(root / "raw"))
    return binarize_classification(raw, str(root / "data-bin"), labels=["0", "1"])


@pytest.fixture(scope="module")
def stock_encoder(cls_data, tmp_path_factory):
    save = train(cls_data, tmp_path_factory.mktemp("stock_encoder"), *STOCK, "--max-epoch", "10")
    return os.path.join(save, "checkpoint_last.pt")


@pytest.fixture(scope="module")
def pass_encoder(cls_data, stock_encoder, tmp_path_factory):
    """PASS fine-tuned from the stock encoder (its classification head included)."""
    return train(cls_data, tmp_path_factory.mktemp("pass_encoder"), *PASS, "--finetune-from-model", stock_encoder,
                 "--max-epoch", "24", "--seed", "1")


@pytest.fixture(scope="module")
def converted(pass_encoder, tmp_path_factory):
    """(gated, pruned, stock-format) checkpoint paths."""
    return pruned_and_stock(os.path.join(pass_encoder, "checkpoint_best.pt"), str(tmp_path_factory.mktemp("converted")))


def checkpoint_logits(data, checkpoint):
    from fairseq import checkpoint_utils
    from encoder_logits import logits

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": data})
    return logits(models[0], task)


def test_pass_ends_with_exactly_k_binary_gates(pass_encoder):
    """checkpoint_best.pt is chosen by pass_accuracy: the best valid accuracy on target."""
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        state = load_state(os.path.join(pass_encoder, name))
        report = gate_report(state["model"])
        assert (report["heads_total"], report["open"], report["nonbinary"]) == (12, K, 0), name
        assert [m["name"] for m in report["modules"]] == [f"encoder.sentence_encoder.layers.{i}.self_attn"
                                                          for i in range(3)]
        assert sum(layer_grid(report)["encoder self"]) == K
    assert state["cfg"]["task"]["_name"] == "sentence_prediction_pass"
    assert 80 < state["extra_state"]["best"] <= 100  # an accuracy, on target


def test_pruned_and_stock_encoders_give_the_gated_logits(converted, cls_data, tmp_path):
    gated, pruned, stock = converted
    pruned_state = load_state(pruned)
    assert pruned_state["cfg"]["model"].arch == "roberta_pass_pruned"
    kept = pruned_state["pass_pruned_heads"]
    assert sum(len(h) for h in kept.values()) == K
    name = "encoder.sentence_encoder.layers.0.self_attn"
    assert pruned_state["model"][name + ".q_proj.weight"].size(0) == 8 * len(kept[name])
    stock_state = load_state(stock)
    assert stock_state["cfg"]["model"]["arch"] == "roberta"
    assert stock_state["cfg"]["task"]["_name"] == "sentence_prediction"

    expected = checkpoint_logits(cls_data, gated)
    assert (checkpoint_logits(cls_data, pruned) - expected).abs().max() < 1e-5
    out = tmp_path / "stock_logits.pt"
    env = dict(os.environ, PYTHONPATH="")  # nothing that would bring the plugin in
    proc = subprocess.run([sys.executable, "-c", STOCK_LOGITS, cls_data, stock, os.path.dirname(__file__), str(out)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (torch.load(out) - expected).abs().max() < 1e-5
    labels = torch.tensor([int(x) for x in open(os.path.join(cls_data, "..", "raw", "valid.label"))])
    assert (expected.argmax(-1) == labels).float().mean() > 0.8  # the task is learnt, with K of 12 heads


def test_a_stock_export_says_what_fairseqs_layer_norm_eps_changes():
    state = {"cfg": {"model": argparse.Namespace(arch="roberta_pass", layer_norm_eps=1e-12)}}
    assert "--layer-norm-eps 1e-12; stock fairseq's layer norms use 1e-05" in stock_notes(state)[0]
    assert stock_notes({"cfg": {"model": argparse.Namespace(arch="roberta_pass", layer_norm_eps=1e-5)}}) == []
    assert stock_notes({"cfg": {"model": argparse.Namespace(arch="transformer_pass")}}) == []


def test_bench_times_the_encoder_forward(converted, tmp_path, capsys):
    work = str(tmp_path / "bench")
    assert bench_inference.main([converted[0], "--heads", f"{K},2", "--sentences", "12,3", "--batch-size", "4,1",
                                 "--repeats", "1", "--warmup", "0", "--threads", "1", "--work-dir", work]) == 0
    printed = capsys.readouterr().out
    assert "12 sentences, batch 4, the encoder's forward pass and classification head" in printed
    with open(os.path.join(work, "bench.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"unpruned (stock roberta)", "gated (roberta_pass)",
                                         "no attention (all skipped)", f"pruned K={K} topk", f"pruned K={K} packed",
                                         "pruned K=2 topk", "pruned K=2 packed"}
    assert sorted({r["batch"] for r in rows}) == ["1", "4"]
    by_model = {r["model"]: r for r in rows if r["batch"] == "4"}
    assert float(by_model["unpruned (stock roberta)"]["speedup"]) == 1.0
    assert int(by_model["no attention (all skipped)"]["skipped_modules"]) == 3
    assert float(by_model["pruned K=2 packed"]["time_over_ideal"]) > 0
    assert "encoder self" in printed  # the cost model's module kind
