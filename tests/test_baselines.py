"""The baselines on the same gated model, criterion and task: DSP and STE (subset gates) and
fixed masks (Michel's and random heads are in tests/test_michel.py)."""
import os

import pytest
import torch

from conftest import PASS_CRITERION, TINY_MODEL, TRAIN_COMMON, generate, load_state, train
from pass_fairseq.checkpoints import convert
from pass_fairseq.cli import prune_checkpoint
from pass_fairseq.gate_report import gate_report
from pass_fairseq.optim.pass_adam import PassAdam
from test_schedule import batch, build

K = 4


# ---- end to end ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dsp", "ste"])
def test_subset_runs_end_with_exactly_k_heads(toy_data, tmp_path, method):
    save = train(toy_data, tmp_path / "run", *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-method", method,
                 "--pass-target-heads", str(K), "--max-epoch", "3", "--pass-dsp-anneal-updates", "8",
                 "--best-checkpoint-metric", "pass_loss", "--seed", "2")
    best = os.path.join(save, "checkpoint_best.pt")
    state = load_state(best)
    report = gate_report(state["model"])
    assert (report["open"], report["nonbinary"], report["kept"], report["subset_k"]) == (K, 0, K, K)
    assert int(state["model"]["pass_num_updates"]) > 0
    pruned = str(tmp_path / "pruned.pt")
    assert prune_checkpoint.main([best, pruned]) == 0  # no --heads: the recorded K
    assert sum(len(v) for v in load_state(pruned)["pass_pruned_heads"].values()) == K
    gated_text = generate(toy_data, best, tmp_path / "gated")
    pruned_text = generate(toy_data, pruned, tmp_path / "pruned")
    hypotheses = [[line.split("\t") for line in text.splitlines() if line.startswith("H-")]
                  for text in (gated_text, pruned_text)]
    assert [(h[0], h[2]) for h in hypotheses[0]] == [(h[0], h[2]) for h in hypotheses[1]]  # ids and tokens
    assert len(hypotheses[0]) > 40
    # scores as printed (full float precision): equal up to float rounding of other matrix shapes
    assert [float(h[1]) for h in hypotheses[0]] == pytest.approx([float(h[1]) for h in hypotheses[1]], abs=1e-5)


# ---- the soft top-K temperature ----------------------------------------------------------
def test_temperature_anneals_with_the_updates_and_survives_a_resume(toy_data):
    args = ("--pass-method", "dsp", "--pass-dsp-anneal-updates", "10", "--pass-dsp-temp-start", "0.1",
            "--pass-dsp-temp-end", "1e-8")
    task, model, criterion, cfg = build(toy_data, *args)
    optimizer = PassAdam(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    task.begin_epoch(1, model)
    assert model.subset_group.temperature == pytest.approx(0.1)  # update 0
    task.optimizer_step(optimizer, model, update_num=4)
    assert model.subset_group.temperature == pytest.approx(0.1 * (1e-7) ** 0.5)  # update 5 of 10
    task.optimizer_step(optimizer, model, update_num=9)
    assert model.subset_group.temperature == pytest.approx(1e-8) and int(model.pass_num_updates) == 10
    task.optimizer_step(optimizer, model, update_num=30)
    assert model.subset_group.temperature == pytest.approx(1e-8)
    state = model.state_dict()
    for resumed in (True, False):
        task, model, criterion, _ = build(toy_data, *args)
        model.load_state_dict(state)
        if resumed:  # fairseq hands the task its checkpoint entry only on a true resume
            task.set_checkpoint_dict(task.get_checkpoint_dict()["TranslationPassTask"])
        task.begin_epoch(2, model)
        assert model.subset_group.temperature == pytest.approx(1e-8 if resumed else 0.1)


# ---- the joint draw in the model ---------------------------------------------------------
def test_subset_gates_are_drawn_once_per_forward_over_all_heads(toy_data, monkeypatch):
    task, model, criterion, _ = build(toy_data, "--pass-method", "dsp")
    task.begin_epoch(1, model)
    gates = [m.gate for _, m in model.gated_attentions()]
    seen = []
    for g in gates:
        g.register_forward_hook(lambda module, inputs, output: seen.append(output))
    sample = batch(task)
    model.train()

    def sync(*args, **kwargs):
        raise AssertionError("host sync")

    module = model.gated_attentions()[3][1]
    x = torch.randn(5, 2, module.embed_dim)
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    with model.subset_group.draw():
        module(x, x, x)
    criterion.regularizer(model)
    monkeypatch.undo()
    seen.clear()
    criterion(model, sample)
    first = torch.cat(seen)
    assert first.numel() == 24 and float(first.sum()) == pytest.approx(K, abs=1e-4)
    seen.clear()
    criterion(model, sample)
    assert not torch.equal(first, torch.cat(seen))  # a fresh draw per forward pass
    model.eval()
    net = sample["net_input"]
    encoder_out = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])  # as SequenceGenerator does
    model.decoder(net["prev_output_tokens"], encoder_out=encoder_out)
    folded = [m.eval_weights() and m.eval_head_scale() for _, m in model.gated_attentions()]  # what eval folds in
    assert all(set(z.tolist()) <= {0.0, 1.0} for z in folded) and sum(float(z.sum()) for z in folded) == K


def test_a_fine_tune_keeps_its_own_k_and_new_logits_keep_their_init(toy_data):
    _, model8, _, _ = build(toy_data, "--pass-method", "dsp", target=8)
    _, model4, _, _ = build(toy_data, "--pass-method", "dsp", target=K)
    model4.load_state_dict(model8.state_dict())
    assert {int(m.gate.subset_k) for _, m in model4.gated_attentions()} == {K}
    assert sum(float(m.gate.deterministic().sum()) for _, m in model4.gated_attentions()) == K
    stock = {k: v for k, v in model8.state_dict().items() if ".gate." not in k}
    before = [m.gate.log_alpha.detach().clone() for _, m in model4.gated_attentions()]
    model4.load_state_dict(stock)
    after = [m.gate.log_alpha.detach() for _, m in model4.gated_attentions()]
    assert all(torch.equal(b, a) for b, a in zip(before, after)) and len({float(a[0]) for a in after}) > 1


# ---- fixed masks ---------------------------------------------------------------------------
def test_fixed_gates_are_frozen_deterministic_and_never_clamped_or_reopened(toy_data):
    task, model, criterion, cfg = build(toy_data, "--pass-method", "fixed", "--max-epoch", "10")
    gates = [m.gate for _, m in model.gated_attentions()]
    assert all(not g.log_alpha.requires_grad and g.noise == "none" for g in gates)
    with torch.no_grad():
        for g in gates:
            g.log_alpha.fill_(-10.0)
        gates[0].log_alpha[0] = 20.0  # outside the clip bounds: no clamp may touch it
    task.begin_epoch(1, model)
    model.train()
    assert gates[0](3).tolist() == [1.0, 0.0, 0.0, 0.0]
    optimizer = PassAdam(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    assert len(optimizer.param_groups) == 1
    loss, _, log = criterion(model, batch(task, "train"))
    optimizer.backward(loss)
    task.optimizer_step(optimizer, model, update_num=0)
    for _, m in model.gated_attentions():
        m.conf_mean.fill_(1.0)
        m.conf_count.fill_(1)
    task.begin_epoch(2, model)  # every gate but one closed, all confident: no reopening
    assert float(gates[0].log_alpha[0]) == 20.0 and not any(bool(g.reopen_pending.any()) for g in gates)
    assert float(log["pass_reg"]) == 0.0 and int(log["pass_open"]) == 1


def test_subset_checkpoints_convert_without_heads(toy_data):
    _, model, _, cfg = build(toy_data, "--pass-method", "ste")
    state = {"model": model.state_dict(), "cfg": {"model": cfg.model}}
    assert sum(len(v) for v in convert(state)["pass_pruned_heads"].values()) == K


@pytest.mark.parametrize("extra, message", [
    (["--pass-method", "dsp", "--pass-gate-type", "hard-concrete"], "--pass-method dsp trains subset gates"),
    (["--pass-method", "voita", "--pass-gate-type", "subset"], "--pass-method voita trains hard-concrete gates"),
    (["--pass-method", "dsp", "--pass-gate-noise", "example"], "not example"),
    (["--pass-method", "ste", "--pass-target-heads", "25"], "outside 1..24"),
])
def test_bad_gate_settings_are_one_line_errors(toy_data, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        build(toy_data, *extra)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
