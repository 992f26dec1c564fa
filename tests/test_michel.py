"""Masks that train no gates: Michel et al.'s iterative pruning and random heads, alone and
through ``pass-michel-prune``, and a fine-tune with the mask fixed (--pass-method fixed)."""
import json
import os

import pytest
import torch

from conftest import PASS_CRITERION, STOCK_TINY_MODEL, TINY_MODEL, TRAIN_COMMON, generate, load_state, train
from pass_fairseq.checkpoints import convert
from pass_fairseq.cli import michel_prune
from pass_fairseq.gate_report import gate_report
from pass_fairseq.gates import HardConcrete
from pass_fairseq.michel import (gates_replaced, head_importance, iterative_masks, normalise_per_module,
                                 random_masks, split_kept)

SIZES = [4, 4, 4]


# ---- pure selection --------------------------------------------------------------------
def test_normalise_per_module_over_present_heads():
    importance = torch.tensor([3.0, 4.0, 9.0, 0.0, 1.0, 1.0])
    present = torch.tensor([True, True, False, True, False, False])
    scores = normalise_per_module(importance, present, [3, 3])
    assert scores.tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0, 0.0, 0.0])


def test_iterative_masks_recompute_and_reach_each_k_with_nested_masks():
    calls = []

    def importance(mask):  # head h is worth h + 1, except that removing head 0 makes head 11 worthless
        calls.append(mask.clone())
        values = torch.arange(1.0, 13.0)
        if mask[0] == 0:
            values[11] = 0.0
        return values

    masks, steps = iterative_masks(importance, SIZES, [8, 3], step=3)
    assert sorted(masks) == [3, 8] and [int(m.sum()) for m in (masks[8], masks[3])] == [8, 3]
    assert bool((masks[3] <= masks[8]).all())  # nested
    assert [s["heads"] for s in steps] == [12, 9, 8, 5] and len(calls) == 4  # never past K = 8
    # normalised: module 0 [1,2,3,4]/sqrt(30), module 1 [5..8]/sqrt(174), module 2 [9..12]/sqrt(446)
    assert steps[0]["removed"] == [0, 1, 4]
    assert torch.equal(calls[1], (~torch.isin(torch.arange(12), torch.tensor([0, 1, 4]))).float())
    assert steps[1]["removed"] == [11]  # recomputed: worthless once head 0 is gone
    assert split_kept(masks[8], SIZES) == [[2, 3], [1, 2, 3], [0, 1, 2]]
    assert steps[2]["removed"] == [5, 8, 6] and steps[3]["removed"] == [2, 9]
    assert split_kept(masks[3], SIZES) == [[3], [3], [2]]


def test_random_masks_are_seeded_and_nested():
    masks, order = random_masks(24, [16, 8], seed=3)
    again, _ = random_masks(24, [16, 8], seed=3)
    assert all(torch.equal(masks[k], again[k]) for k in masks) and sorted(order) == list(range(24))
    assert bool((masks[8] <= masks[16]).all()) and int(masks[8].sum()) == 8
    assert split_kept(masks[8], [8, 8, 8]) == [sorted(h for h in order[:8] if h < 8),
                                               sorted(h - 8 for h in order[:8] if 8 <= h < 16),
                                               sorted(h - 16 for h in order[:8] if h >= 16)]
    with pytest.raises(ValueError, match="in 1..24"):
        random_masks(24, [25], seed=1)


def test_head_importance_is_the_gradient_of_the_loss_at_the_mask():
    gates = [HardConcrete(2, init=10.0).eval(), HardConcrete(2, init=10.0).eval()]  # z = 1 of their own
    weights = torch.tensor([1.0, -2.0, 3.0, 0.5])

    def loss(batch):  # L_b = batch * sum_h w_h z_h, with z_h the value each gate returns
        return batch * (torch.cat([g() for g in gates]) * weights).sum()

    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert head_importance(gates, loss, [1.0, -2.0], mask).tolist() == [3.0, 6.0, 9.0, 1.5]
    with gates_replaced(gates, mask):
        assert gates[0]().tolist() == [1.0, 0.0]
    assert gates[0]().tolist() == [1.0, 1.0]  # the hook is gone again


# ---- the CLI on a stock checkpoint ---------------------------------------------------------
@pytest.fixture(scope="module")
def stock_checkpoint(toy_data, tmp_path_factory):
    save = train(toy_data, tmp_path_factory.mktemp("stock"), *STOCK_TINY_MODEL, *TRAIN_COMMON, "--criterion",
                 "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-epoch", "2", "--seed", "7")
    return os.path.join(save, "checkpoint_last.pt")


def _michel(toy_data, checkpoint, save_dir, *extra):
    os.makedirs(save_dir, exist_ok=True)
    assert michel_prune.main([toy_data, checkpoint, "--heads", "16,8", "--save-dir", str(save_dir), "--cpu",
                   "--max-batches", "2", "--max-tokens", "1500", *extra]) == 0
    return str(save_dir)


@pytest.fixture(scope="module")
def michel_dir(toy_data, stock_checkpoint, tmp_path_factory):
    return _michel(toy_data, stock_checkpoint, tmp_path_factory.mktemp("michel"))


def test_michel_scores_are_reproducible_and_masks_nested(toy_data, stock_checkpoint, michel_dir, tmp_path):
    with open(os.path.join(michel_dir, "michel.json")) as f:
        first = json.load(f)
    with open(os.path.join(_michel(toy_data, stock_checkpoint, tmp_path), "michel.json")) as f:
        second = json.load(f)
    assert first["steps"] == second["steps"] and first["masks"] == second["masks"]
    assert [s["heads"] for s in first["steps"]] == [24, 22, 20, 18, 16, 14, 12, 10] and first["step"] == 2
    assert len(first["steps"][0]["importance"]) == 24 and first["batches"] == 2
    for module, heads in first["masks"]["8"].items():
        assert set(heads) <= set(first["masks"]["16"][module])
    assert sum(map(len, first["masks"]["8"].values())) == 8


def test_michel_checkpoints_prune_inspect_and_generate(toy_data, michel_dir, tmp_path):
    with open(os.path.join(michel_dir, "michel.json")) as f:
        masks = json.load(f)["masks"]
    for k in (8, 16):
        state = load_state(os.path.join(michel_dir, f"michel_k{k}.pt"))
        report = gate_report(state["model"])
        assert (report["open"], report["nonbinary"], report["closed"]) == (k, 0, 24 - k)
        assert {m["name"]: m["kept"] for m in report["modules"]} == masks[str(k)]
        assert sum(len(v) for v in convert(state)["pass_pruned_heads"].values()) == k  # no --heads needed
        assert state["cfg"]["model"].arch == "transformer_pass" and state["last_optimizer_state"] is None
    text = generate(toy_data, os.path.join(michel_dir, "michel_k8.pt"), tmp_path)
    assert "BLEU4 = " in text.splitlines()[-1]


def test_random_heads_through_the_cli(toy_data, stock_checkpoint, tmp_path):
    save = _michel(toy_data, stock_checkpoint, tmp_path, "--random", "--seed", "5")
    with open(os.path.join(save, "random.json")) as f:
        record = json.load(f)
    expected, _ = random_masks(24, [8, 16], seed=5)
    assert record["masks"]["8"] == dict(zip(record["modules"], split_kept(expected[8], [4] * 6)))
    assert gate_report(load_state(os.path.join(save, "random_k16.pt"))["model"])["open"] == 16


def test_a_fixed_mask_fine_tune_keeps_the_mask_exactly(toy_data, michel_dir, tmp_path):
    source = os.path.join(michel_dir, "michel_k8.pt")
    save = train(toy_data, tmp_path, *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-method", "fixed",
                 "--pass-target-heads", "8", "--finetune-from-model", source, "--max-epoch", "2",
                 "--best-checkpoint-metric", "pass_loss")
    before = load_state(source)["model"]
    after = load_state(os.path.join(save, "checkpoint_best.pt"))  # on target: written
    gates = [k for k in before if k.endswith("gate.log_alpha")]
    assert all(torch.equal(before[k], after["model"][k]) for k in gates)
    assert not torch.equal(before["encoder.layers.0.fc1.weight"], after["model"]["encoder.layers.0.fc1.weight"])
    assert len(after["last_optimizer_state"]["param_groups"]) == 1  # no gate group: the gates are frozen
