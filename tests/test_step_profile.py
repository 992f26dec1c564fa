"""pass-profile-step: the isolated module calls are the generator's, the pruned modules are
cut from the stock one, and the command writes its tables."""
import copy
import csv

import pytest
import torch

from pass_fairseq.bench.step_profile import KIND_LABELS, Caller, StepSetup, build_modules, fit_rows, profile_kind
from pass_fairseq.cli import profile_step

TINY = StepSetup(embed_dim=16, num_heads=2, sentences=2, beam=3, src_len=5, steps=4)


class Recorder(torch.nn.Module):
    """Wraps a module and records its outputs."""

    def __init__(self, module):
        super().__init__()
        self.module, self.outputs = module, []

    def forward(self, *args, **kwargs):
        out = self.module(*args, **kwargs)
        self.outputs.append(out[0])
        return out

    def reorder_incremental_state(self, state, order):
        return self.module.reorder_incremental_state(state, order)


@pytest.mark.parametrize("kind", KIND_LABELS)
def test_pruned_module_with_every_head_computes_the_stock_module(kind):
    modules = build_modules(kind, TINY)
    assert modules["1 heads"].beam_size == TINY.beam and modules["stock"].beam_size == 1  # as in a real decode
    caller = Caller(kind, TINY)
    stock, full = Recorder(modules["stock"]), Recorder(modules[f"{TINY.num_heads} heads"])
    with torch.inference_mode():
        caller.run(stock)
        caller.run(full)
    assert len(stock.outputs) == caller.calls == (1 if kind == "encoder self" else TINY.steps)
    for a, b in zip(stock.outputs, full.outputs):
        assert torch.allclose(a, b, atol=1e-5)
    assert modules["1 heads"].num_heads == 1 and modules["1 heads"].q_proj.weight.shape == (8, 16)
    # the 1-head module is head 0 of the stock module: the stock module with the other heads'
    # out_proj columns zeroed
    only_head0 = copy.deepcopy(modules["stock"])
    with torch.no_grad():
        only_head0.out_proj.weight[:, only_head0.head_dim:] = 0
    ref, one = Recorder(only_head0), Recorder(modules["1 heads"])
    with torch.inference_mode():
        caller.run(ref)
        caller.run(one)
    for a, b in zip(ref.outputs, one.outputs):
        assert torch.allclose(a, b, atol=1e-5)


def test_beam_orders_stay_within_each_sentence():
    orders = Caller("decoder self", TINY).orders
    assert orders.shape == (TINY.steps, TINY.sentences * TINY.beam)
    assert torch.equal(orders // TINY.beam, torch.arange(TINY.sentences).repeat_interleave(TINY.beam).expand_as(orders))


def test_profile_rows_and_fit():
    rows = profile_kind("decoder self", TINY, warmup=0, repeats=2)
    assert [r["module"] for r in rows] == ["stock", "1 heads", "2 heads"]
    assert all(r["us_per_call"] > 0 and r["aten_ops"] > 0 for r in rows)
    stock = rows[0]["us_per_call"]  # rounded to 0.1 us, as the other rows' figures
    assert rows[0]["ideal_us"] == "" and rows[1]["ideal_us"] == pytest.approx(stock / 2, abs=0.11)
    assert rows[1]["over_ideal"] == pytest.approx(rows[1]["us_per_call"] / rows[1]["ideal_us"], rel=0.02)
    made_up = [dict(r, us_per_call=us) for r, us in zip(rows, (100.0, 50.0, 70.0))]
    assert fit_rows(made_up) == [{"kind": "decoder self", "fixed_us": 30.0, "per_head_us": 20.0, "stock_us": 100.0}]


def test_command_writes_both_batch_tables(tmp_path, capsys):
    md, out_csv = tmp_path / "step.md", tmp_path / "step.csv"
    assert profile_step.main(["--embed-dim", "16", "--heads", "2", "--batch-size", "2,1", "--src-len", "4",
                              "--steps", "3", "--repeats", "1", "--warmup", "0", "--markdown", str(md),
                              "--csv", str(out_csv)]) == 0
    text = md.read_text()
    assert "#### Batch 2" in text and "#### Batch 1" in text and "Fit over the pruned modules at batch 1" in text
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 3 and {r["batch"] for r in rows} == {"2", "1"}


def test_command_rejects_width_not_a_multiple_of_heads(capsys):
    with pytest.raises(SystemExit) as exc:
        profile_step.main(["--embed-dim", "10", "--heads", "4"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not a multiple of --heads" in err and "Traceback" not in err
