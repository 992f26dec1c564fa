"""The gate schedule in process: lambda per epoch, presets, reopening in an fp32 run, the
gate learning rate, the criterion's terms and scalings, half precision, host syncs."""
import math

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import TINY_MODEL, USER_DIR
from pass_fairseq.gates import GAMMA, ZETA
from pass_fairseq.optim.pass_adam import PassAdam

K = 4
A = 0.33 * math.log(-GAMMA / ZETA)  # beta log(-gamma/zeta): q0 = sigmoid(A - log_alpha)


def build(toy_data, *extra, target=K):
    """(task, model, criterion, cfg) as fairseq-train builds them."""
    argv = [toy_data, "--user-dir", USER_DIR, "--task", "translation_pass", *TINY_MODEL, "--cpu",
            "--criterion", "pass_label_smoothed_cross_entropy", "--pass-target-heads", str(target),
            "--optimizer", "pass_adam", "--lr", "0.001", "--max-tokens", "1500", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, model, criterion, cfg


def set_gates(model, rows):
    with torch.no_grad():
        for (_, m), row in zip(model.gated_attentions(), rows):
            m.gate.log_alpha.copy_(torch.tensor(row, dtype=m.gate.log_alpha.dtype))


def on_target_rows(k=K, open_=10.0, closed=-10.0):
    rows = [[closed] * 4 for _ in range(6)]
    for i in range(k):
        rows[i // 4][i % 4] = open_
    return rows


def batch(task, split="valid", n=8):
    task.load_dataset(split)
    ds = task.dataset(split)
    return ds.collater([ds[i] for i in range(n)])


# ---- lambda per epoch ----------------------------------------------------------------
def test_lambda_doubles_per_off_target_epoch_from_epoch_2(toy_data):
    task, model, criterion, _ = build(toy_data)
    task.begin_epoch(1, model)
    assert int(model.pass_lambda_steps) == 0 and criterion.lam == pytest.approx(0.1)
    task.begin_epoch(2, model)  # xavier gates: off target
    assert int(model.pass_lambda_steps) == 1 and criterion.lam == pytest.approx(0.2)
    set_gates(model, on_target_rows())
    task.begin_epoch(3, model)  # on target: lambda stays
    assert int(model.pass_lambda_steps) == 1 and criterion.lam == pytest.approx(0.2)
    set_gates(model, on_target_rows(k=K + 1))
    task.begin_epoch(4, model)
    assert criterion.lam == pytest.approx(0.4) and criterion.epoch == 4


def test_reference_preset_doubles_before_epoch_1_and_counts_gates_at_the_bound(toy_data):
    task, model, criterion, _ = build(toy_data, "--pass-preset", "reference")
    task.begin_epoch(1, model)  # no gate at -5 yet: 0 != N - K
    assert criterion.lam == pytest.approx(0.2)
    rows = on_target_rows(open_=7.0, closed=-5.0)
    rows[5][3] = -1.0  # 19 at the bound, one non-binary: the hard count is 19 != 20
    set_gates(model, rows)
    task.begin_epoch(2, model)
    assert criterion.lam == pytest.approx(0.4)
    rows[5][3] = -6.0  # 20 at or below the bound, 4 open: on target for this rule
    set_gates(model, rows)
    task.begin_epoch(3, model)
    assert criterion.lam == pytest.approx(0.4)


def test_presets_set_defaults_and_explicit_flags_win(toy_data):
    task, model, criterion, cfg = build(toy_data, "--pass-preset", "reference", "--weight-decay", "0.0001")
    gate = next(m.gate for _, m in model.gated_attentions())
    assert (gate.clip_min, gate.clip_max, task.clip_when, task.confidence) == (-5.0, 5.0, "epoch", "train-valid")
    assert task.last_reopen_epoch() == float("inf") and criterion.lambda_rule == "clipped-count"
    adam = PassAdam(cfg.optimizer, list(model.parameters()))
    assert [g["weight_decay"] for g in adam.param_groups] == [0.0001, 0.0001]
    task, model, criterion, cfg = build(toy_data, "--pass-preset", "reference", "--pass-clip-min", "-8",
                                        "--pass-clip-when", "update", "--pass-gate-weight-decay", "0")
    gate = next(m.gate for _, m in model.gated_attentions())
    assert (gate.clip_min, gate.clip_max, task.clip_when) == (-8.0, 5.0, "update")
    assert PassAdam(cfg.optimizer, list(model.parameters())).param_groups[1]["weight_decay"] == 0.0
    task, model, criterion, cfg = build(toy_data, "--weight-decay", "0.0001")
    gate = next(m.gate for _, m in model.gated_attentions())
    assert (gate.clip_min, gate.clip_max, task.clip_when, criterion.lambda_rule) == (-10.0, 10.0, "update", "on-target")
    assert [g["weight_decay"] for g in PassAdam(cfg.optimizer, list(model.parameters())).param_groups] == [0.0001, 0.0]


# ---- reopening and clamping in an fp32 run ---------------------------------------------
def _step(task, model, optimizer, criterion, sample):
    model.train()
    optimizer.zero_grad()
    loss, _, _ = criterion(model, sample)
    optimizer.backward(loss)
    task.optimizer_step(optimizer, model, update_num=0)


def test_reopening_in_an_fp32_run(toy_data):
    """A closed gate whose head has the top confidence reopens with probability 1 at epoch
    2: pending at the epoch start, at clip_max after the next update, then free again."""
    task, model, criterion, cfg = build(toy_data, "--max-epoch", "10")
    optimizer = PassAdam(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    sample = batch(task, "train")
    task.begin_epoch(1, model)
    rows = on_target_rows()
    set_gates(model, rows)
    module = model.gated_attentions()[5][1]
    with torch.no_grad():
        module.conf_mean.copy_(torch.tensor([0.1, 0.1, 0.1, 0.9]))  # head 3 of the last module: top confidence
        module.conf_count.fill_(1)
    task.begin_epoch(2, model)
    assert module.gate.reopen_pending.tolist() == [False, False, False, True]
    assert float(module.gate.log_alpha[3]) == -10.0
    _step(task, model, optimizer, criterion, sample)
    assert float(module.gate.log_alpha[3]) == 10.0 and not module.gate.reopen_pending.any()
    assert int(module.conf_count) == 1  # reset at the epoch start, then one training forward
    _step(task, model, optimizer, criterion, sample)
    assert float(module.gate.log_alpha[3]) < 10.0  # clamped at 10, moved down by the regulariser


def test_epoch_clamping_acts_once_per_epoch(toy_data):
    task, model, criterion, cfg = build(toy_data, "--pass-clip-when", "epoch", "--pass-no-reopen",
                                        "--pass-clip-min", "-5", "--pass-clip-max", "5")
    optimizer = PassAdam(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    sample = batch(task, "train")
    gate = model.gated_attentions()[0][1].gate
    task.begin_epoch(1, model)
    with torch.no_grad():
        gate.log_alpha.fill_(-9.0)
    _step(task, model, optimizer, criterion, sample)
    assert float(gate.log_alpha.min()) < -8.0  # epoch 1: no clamp (the reference's)
    task.begin_epoch(2, model)
    _step(task, model, optimizer, criterion, sample)
    assert float(gate.log_alpha.min()) == -5.0  # after epoch 2's first update
    with torch.no_grad():
        gate.log_alpha.fill_(-9.0)
    _step(task, model, optimizer, criterion, sample)
    assert float(gate.log_alpha.min()) < -8.0  # free until the next epoch start


def test_gate_lr_follows_the_schedule_only_when_asked(toy_data):
    for extra, expected in (([], 0.2), (["--pass-gate-lr-follows-schedule"], 0.2 * 0.25)):
        _, model, _, cfg = build(toy_data, "--lr", "0.004", *extra)
        adam = PassAdam(cfg.optimizer, list(model.parameters()))
        adam.set_lr(0.001)
        assert [g["lr"] for g in adam.param_groups] == pytest.approx([0.001, expected])


# ---- confidence from validation passes -------------------------------------------------
@pytest.mark.parametrize("confidence, counted", [("train", 0), ("train-valid", 1)])
def test_validation_passes_feed_confidence_only_when_asked(toy_data, confidence, counted):
    task, model, criterion, _ = build(toy_data, "--pass-confidence", confidence)
    model.eval()
    with torch.no_grad():
        task.valid_step(batch(task), model, criterion)
    assert {int(m.conf_count) for _, m in model.gated_attentions()} == {counted}
    assert not any(m.confidence_in_eval for _, m in model.gated_attentions())


# ---- the criterion's terms -------------------------------------------------------------
def test_concentrator_term_only_inside_its_window(toy_data):
    task, model, criterion, _ = build(toy_data, "--pass-concentrator", "--pass-conc-start-epoch", "2",
                                      "--pass-conc-end-epoch", "3", "--pass-conc-weight", "3")
    seen = {}
    for epoch in (1, 2, 3, 4):
        criterion.set_schedule(epoch, 0, 0)
        reg, log = criterion.regularizer(model)
        pass_only = criterion.lam * (log["pass_nb_term"] + log["pass_closed_gap"] + log["pass_open_gap"])
        seen[epoch] = (float(log["pass_conc"]), float(reg - pass_only))
    assert seen[1] == (0.0, 0.0) and seen[4] == (0.0, 0.0)
    for epoch in (2, 3):
        conc, extra = seen[epoch]
        assert conc > 1.0 and extra == pytest.approx(0.1 * 3.0 * conc, rel=1e-5)  # lambda * lambda_c * R_conc


def test_a_concentrator_window_that_never_opens_is_refused(toy_data, capsys):
    with pytest.raises(SystemExit) as e:  # default end: --max-epoch // 2 = 2, before epoch 3
        build(toy_data, "--pass-concentrator", "--pass-conc-start-epoch", "3", "--max-epoch", "5")
    assert e.value.code == 2 and "--pass-conc-end-epoch" in capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [
    (["--pass-beta", "0"], "--pass-beta"), (["--pass-gate-init", "foo"], "--pass-gate-init"),
    (["--pass-clip-min", "3", "--pass-clip-max", "-3"], "--pass-clip-min")])
def test_bad_gate_flags_are_one_line_errors(toy_data, capsys, flags, says):
    with pytest.raises(SystemExit) as e:
        build(toy_data, *flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and "Traceback" not in err


def test_concentrator_weight_counts_only_heads_that_reach_the_output(toy_data):
    """A module whose best head sits at log_alpha -7 (deterministic gate 0) is closed: it no
    longer drags lambda_c down to ~2 (the bound of an almost closed module is about 2)."""
    task, model, criterion, _ = build(toy_data, "--pass-concentrator")
    rows = [[-10.0] * 4 for _ in range(6)]
    rows[0] = [10.0, 10.0, -10.0, -10.0]
    rows[1] = [-7.0, -10.0, -10.0, -10.0]
    set_gates(model, rows)
    criterion.set_schedule(1, 0, 0)
    assert float(criterion.regularizer(model)[1]["pass_conc_weight"]) == pytest.approx(500.0)


def test_token_scaling_multiplies_by_sample_size_and_update_scaling_divides(toy_data):
    sample = batch(task := build(toy_data)[0], "train")
    losses = {}
    for extra in ([], ["--pass-reg-scaling", "token"], ["--update-freq", "4"]):
        task, model, criterion, _ = build(toy_data, *extra)
        torch.manual_seed(0)
        model.train()
        model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)
        criterion.set_schedule(1, 3, 0)
        torch.manual_seed(1)
        total, sample_size, log = criterion(model, sample)
        losses[tuple(extra)] = (float(total), sample_size, float(log["pass_reg"]), float(log["loss"]))
    for key, (total, sample_size, reg, ce) in losses.items():
        scale = {(): 1.0, ("--pass-reg-scaling", "token"): sample_size, ("--update-freq", "4"): 0.25}[key]
        assert total == pytest.approx(ce + scale * reg, rel=1e-4), key
    assert losses[("--pass-reg-scaling", "token")][1] > 1


def test_half_precision_gates_are_counted_in_float32(toy_data):
    """log_alpha 2.3965 gives z = 0.99987 in float32 but 1.0 once cast to fp16: the run
    must call it non-binary, as pass-prune-checkpoint and the gate report do."""
    from pass_fairseq.gate_report import gate_report
    from pass_fairseq.pruning import PruningError, select_heads

    task, model, criterion, _ = build(toy_data)
    rows = on_target_rows()
    rows[0][0] = 2.3965
    set_gates(model, rows)
    model.half()
    criterion.set_schedule(1, 0, 0)
    log = criterion.regularizer(model)[1]
    assert (int(log["pass_open"]), int(log["pass_nonbinary"]), float(log["pass_on_target"])) == (K - 1, 1, 0.0)
    report = gate_report(model.state_dict())
    assert (report["open"], report["nonbinary"]) == (K - 1, 1)
    with pytest.raises(PruningError, match="neither 0 nor 1"):
        select_heads([m.gate.log_alpha for _, m in model.gated_attentions()])


def test_no_host_sync_in_the_training_forward(toy_data, monkeypatch):
    """No .item(), .tolist(), int(), float() or bool() of a tensor in the criterion's
    regulariser or the gated attention: each one would stall a GPU's queue."""
    task, model, criterion, _ = build(toy_data, "--pass-concentrator")
    task.begin_epoch(1, model)
    model.train()
    module = model.gated_attentions()[3][1]
    x = torch.randn(5, 2, module.embed_dim)

    def sync(*args, **kwargs):
        raise AssertionError("host sync")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    reg, log = criterion.regularizer(model)
    module(x, x, x)
    monkeypatch.undo()
    assert float(reg) > 0 and int(module.conf_count) == 1


# ---- bad combinations: one line --------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--best-checkpoint-metric", "pass_loss", "--patience", "2"], "--patience counts every off-target validation"),
    (["--best-checkpoint-metric", "pass_loss", "--lr-scheduler", "reduce_lr_on_plateau"],
     "--lr-scheduler reduce_lr_on_plateau would cut the lr"),
    (["--best-checkpoint-metric", "pass_loss", "--maximize-best-checkpoint-metric"],
     "--best-checkpoint-metric pass_loss is a loss: drop --maximize-best-checkpoint-metric"),
    (["--best-checkpoint-metric", "pass_accuracy"],
     "--best-checkpoint-metric pass_accuracy is an accuracy: add --maximize-best-checkpoint-metric"),
], ids=["patience", "plateau", "loss-maximized", "accuracy-minimized"])
def test_the_on_target_metrics_refuse_what_would_misuse_them(toy_data, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        build(toy_data, *extra)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
