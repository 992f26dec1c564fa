"""What is stored keeps loading: checkpoints written before the package was reorganised
(every kind: a gated PASS and a gated DSP checkpoint from fairseq-train, and the pruned and
stock checkpoints of pass-prune-checkpoint), the committed sweep config and its run files,
which rebuild the committed table byte for byte.

``fixtures/old_checkpoints.json`` describes four checkpoints written at commit 96fd3d8 (a
1+1-layer model, width 16, 4 updates on a toy task; pruned to 6 of 12 heads): every key,
shape, dtype and config value as stored, and the values of the gates and schedule buffers.
The other weights are random here: what is tested is that the stored format loads."""
import argparse
import contextlib
import io
import json
import os
import shutil

import pytest
import torch

import pass_fairseq
from pass_fairseq.checkpoints import load_checkpoint
from pass_fairseq.cli import inspect_gates, prune_checkpoint
from pass_fairseq.experiments.results_table import write_table
from pass_fairseq.experiments.sweep_config import Sweep
from pass_fairseq.experiments.toy_task import binarize, write_reversal_corpus
from pass_fairseq.gate_report import gate_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(ROOT, "results", "deb-de-en")


def _rebuild(obj, root, generator):
    """A stored value from its description (tensors with their stored values, or random)."""
    if isinstance(obj, dict) and "tensor" in obj and "dtype" in obj and set(obj) <= {"tensor", "dtype", "values"}:
        dtype = getattr(torch, obj["dtype"])
        if "values" in obj:
            return torch.tensor(obj["values"], dtype=dtype).reshape(obj["tensor"])
        if dtype.is_floating_point:
            return (torch.randn(obj["tensor"], generator=generator) * 0.1).to(dtype)
        return torch.zeros(obj["tensor"], dtype=dtype)
    if isinstance(obj, dict) and set(obj) == {"__namespace__"}:
        return argparse.Namespace(**_rebuild(obj["__namespace__"], root, generator))
    if isinstance(obj, dict):
        return {k: _rebuild(v, root, generator) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebuild(v, root, generator) for v in obj]
    if isinstance(obj, str):
        return obj.replace("<user_dir>", pass_fairseq.PLUGIN_DIR).replace("<root>", root)
    return obj


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """name -> path of each described checkpoint, rebuilt beside the toy data it was trained on."""
    root = str(tmp_path_factory.mktemp("old"))
    raw = write_reversal_corpus(os.path.join(root, "raw"), n_train=120, n_valid=20, n_test=10, vocab=16, max_len=6)
    with contextlib.redirect_stdout(io.StringIO()):
        binarize(raw, os.path.join(root, "data-bin"))
    with open(os.path.join(HERE, "fixtures", "old_checkpoints.json"), encoding="utf-8") as f:
        described = json.load(f)
    paths = {}
    for name, desc in described.items():
        state = _rebuild(desc, root, torch.Generator().manual_seed(0))
        paths[name] = os.path.join(root, f"{name}.pt")
        torch.save(state, paths[name])
    return root, paths


def _forward(path):
    """fairseq's own loader (user dir from the stored config), then one teacher-forced batch."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path])
    task.load_dataset("test")
    dataset = task.dataset("test")
    batch = dataset.collater([dataset[i] for i in range(4)])
    model = models[0].eval()
    with torch.no_grad():
        out = model(**batch["net_input"])
    assert torch.isfinite(model.get_normalized_probs(out, log_probs=True)).all()
    return model


@pytest.mark.parametrize("name", ["gated_pass", "gated_dsp"])
def test_old_gated_checkpoints_load_inspect_and_prune(old, name, tmp_path, capsys):
    root, paths = old
    state = load_checkpoint(paths[name])
    report = gate_report(state["model"])
    assert report["heads_total"] == 12
    _forward(paths[name])
    assert inspect_gates.main([paths[name]]) == 0
    pruned = str(tmp_path / "pruned.pt")
    assert prune_checkpoint.main([paths[name], pruned, "--heads", "6"]) == 0
    kept = load_checkpoint(pruned)["pass_pruned_heads"]
    assert sum(len(v) for v in kept.values()) == 6
    model = _forward(pruned)
    assert sum(m.num_heads for _, m in model.pruned_attentions()) == 6


def test_old_pruned_and_stock_checkpoints_load(old):
    _, paths = old
    model = _forward(paths["pruned"])
    assert sum(m.num_heads for _, m in model.pruned_attentions()) == 6
    stock = _forward(paths["stock"])
    assert type(stock).__name__ == "TransformerModel"


def test_the_committed_run_files_load_and_rebuild_the_committed_table_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's folders are relative to the repository root
    sweep = Sweep.load(os.path.join(RESULTS, "sweep.json"))
    finished = [s for s in sweep.all_runs() if os.path.isfile(sweep.result_path(s))]
    assert len(finished) >= 40
    for spec in finished:
        result = sweep.result(spec)
        assert result["heads"] == spec.target_heads and result["method"] == spec.method
    copy = tmp_path / "results"
    shutil.copytree(os.path.join(RESULTS, "runs"), copy / "runs")
    write_table(str(copy))
    for name in ("table.md", "table.csv", "comparison.md", "tuning.md"):
        with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
            assert (copy / name).read_text(encoding="utf-8") == f.read(), name
