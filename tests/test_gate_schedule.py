import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim.fp16_optimizer import FP16Optimizer

from conftest import TINY_MODEL, USER_DIR
from pass_fairseq.gate_schedule import constrain_, reopen_probabilities, sample_reopen
from pass_fairseq.optim.pass_adam import PassAdam, master_copies


def test_clamp_and_reopen_in_place():
    log_alpha = torch.tensor([-7.0, -5.0, 0.3, 6.0])
    constrain_(log_alpha, torch.tensor([False, True, False, False]), -5.0, 5.0)
    assert log_alpha.tolist() == pytest.approx([-5.0, 5.0, 0.3, 5.0])


def test_reopen_probabilities_follow_confidence_and_decay():
    conf = torch.tensor([0.2, 0.4, 0.8, 0.5])
    closed = torch.tensor([True, True, False, True])
    p2 = reopen_probabilities(conf, closed, epoch=2, decay=0.9)
    assert p2.tolist() == pytest.approx([0.25, 0.5, 0.0, 0.625])
    p5 = reopen_probabilities(conf, closed, epoch=5, decay=0.9)
    assert torch.allclose(p5, p2 * 0.9 ** 3)
    assert not reopen_probabilities(conf, torch.zeros(4, dtype=torch.bool), 3, 0.9).any()


def test_reopen_draws_depend_only_on_seed_and_epoch():
    p = torch.full((1000,), 0.3)
    a, b = sample_reopen(p, seed=1, epoch=4), sample_reopen(p, seed=1, epoch=4)
    assert torch.equal(a, b)  # every distributed worker decides the same
    assert not torch.equal(a, sample_reopen(p, seed=1, epoch=5))
    assert 250 < int(a.sum()) < 350
    assert not sample_reopen(torch.zeros(10), 1, 2).any()


def test_master_copies_of_a_flat_buffer_are_views():
    params = [torch.zeros(2, 3), torch.zeros(4)]

    class Flat:
        fp16_params = params
        fp32_params = {0: torch.arange(10.0)}

    views = master_copies(Flat, [params[1]])
    assert views[0].tolist() == [6.0, 7.0, 8.0, 9.0]
    views[0].fill_(-1.0)
    assert Flat.fp32_params[0][6:].tolist() == [-1.0] * 4


def _task_and_cfg(toy_data, *extra):
    parser = options.get_training_parser()
    argv = [toy_data, "--user-dir", USER_DIR, "--task", "translation_pass", *TINY_MODEL,
            "--optimizer", "pass_adam", "--lr", "0.001", "--pass-gate-lr", "0.5", "--cpu", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, cfg, model


def _push_gates_up(model, optimizer):
    """Backward of -sum(log_alpha): descent raises every log_alpha."""
    gates = [m.gate for _, m in model.gated_attentions()]
    optimizer.zero_grad()
    optimizer.backward(-sum(g.log_alpha.float().sum() for g in gates))
    return gates


def test_clamp_and_reopen_through_fp16_master_copies(toy_data):
    task, cfg, model = _task_and_cfg(toy_data, "--fp16", "--fp16-no-flatten-grads",
                                     "--pass-clip-min", "-5", "--pass-clip-max", "5")
    model = model.half()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = FP16Optimizer.build_optimizer(cfg, params)
    assert isinstance(optimizer.fp32_optimizer, PassAdam)
    assert [g.get("pass_gate", False) for g in optimizer.param_groups] == [False, True]
    gates = [m.gate for _, m in model.gated_attentions()]
    with torch.no_grad():
        gates[0].log_alpha.fill_(4.9)
        gates[1].log_alpha.fill_(-5.0)
        for p16, p32 in zip(optimizer.fp16_params, optimizer.fp32_params):
            p32.data.copy_(p16.data)
    _push_gates_up(model, optimizer)
    gates[1].reopen_pending[2] = True
    task.optimizer_step(optimizer, model, update_num=0)
    masters = master_copies(optimizer, [g.log_alpha for g in gates[:2]])
    assert masters[0] is not gates[0].log_alpha and masters[0].dtype == torch.float32
    assert torch.equal(masters[0], torch.full((4,), 5.0))  # clamped master, not only the fp16 copy
    assert torch.equal(gates[0].log_alpha.float(), torch.full((4,), 5.0))
    assert masters[1][2] == 5.0 and gates[1].log_alpha[2] == 5.0  # reopened
    assert not gates[1].reopen_pending.any()
    # the gate group moved at the gate lr (0.5), the rest at most at the main lr
    assert float(masters[1][0]) == pytest.approx(-4.5, abs=1e-3)


def test_gate_lr_is_constant_under_the_schedule(toy_data):
    task, cfg, model = _task_and_cfg(toy_data)
    optimizer = PassAdam(cfg.optimizer, model.parameters())
    optimizer.set_lr(1e-5)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 0.5]


def test_plain_adam_is_refused_for_a_gated_model(toy_data, capsys):
    task, cfg, model = _task_and_cfg(toy_data)
    from fairseq.optim.adam import FairseqAdam

    adam = FairseqAdam(cfg.optimizer, list(model.parameters()))
    _push_gates_up(model, adam)
    with pytest.raises(SystemExit) as e:
        task.optimizer_step(adam, model, 0)
    assert e.value.code == 2
    assert "--optimizer pass_adam" in capsys.readouterr().err


def test_reopening_stops_at_half_of_max_epoch_by_default(toy_data):
    assert _task_and_cfg(toy_data, "--max-epoch", "40")[0].last_reopen_epoch() == 20
    assert _task_and_cfg(toy_data, "--max-epoch", "40", "--pass-reopen-until-epoch", "35")[0].last_reopen_epoch() == 35
    assert _task_and_cfg(toy_data)[0].last_reopen_epoch() == float("inf")
