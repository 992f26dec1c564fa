"""Word-level distillation: the loss by hand, the criterion around it (a frozen teacher that is
no part of the student's checkpoint), and fairseq-train runs with it, gated and stock."""
import math
import os

import pytest
import torch

from conftest import PASS_CRITERION, STOCK_TINY_MODEL, TINY_MODEL, TRAIN_COMMON, USER_DIR, load_state, train
from pass_fairseq.distillation import mix, word_kd_loss


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_word_kd_loss_by_hand():
    student = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], [[2.0, -1.0, 0.0], [0.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[2.0, 0.0, -2.0], [3.0, 3.0, 3.0]]])
    mask = torch.tensor([[True, True], [True, False]])  # the last position is padding
    for t in (1.0, 2.0):
        expected = t * t * sum(_kl(_softmax(teacher[b, i].tolist(), t), _softmax(student[b, i].tolist(), t))
                               for b, i in ((0, 0), (0, 1), (1, 0)))
        assert float(word_kd_loss(student, teacher, mask, t)) == pytest.approx(expected, rel=1e-5)


def test_word_kd_loss_is_zero_for_the_teacher_itself_and_only_the_student_gets_a_gradient():
    logits = torch.randn(2, 3, 7)
    assert float(word_kd_loss(logits, logits, torch.ones(2, 3, dtype=torch.bool))) == pytest.approx(0.0, abs=1e-6)
    student = logits.clone().requires_grad_(True)
    teacher = torch.randn(2, 3, 7, requires_grad=True)
    word_kd_loss(student, teacher, torch.ones(2, 3, dtype=torch.bool), 2.0).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert float(mix(torch.tensor(2.0), torch.tensor(4.0), 0.25)) == pytest.approx(2.5)


def _build(data, *extra):
    """Task, model and criterion as fairseq-train builds them, and a training batch."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [data, "--user-dir", USER_DIR, "--task", "translation_pass", "--cpu", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in range(16)])
    return model, criterion, sample


def _load_weights(model, checkpoint):
    model.load_state_dict(load_state(checkpoint)["model"], strict=False)


def test_a_teacher_identical_to_the_student_gives_zero_kd_loss(toy_data, stock_toy_base):
    """Dropout and gate noise off, the gated student holding the teacher's weights (gates open):
    the KD loss is 0 and the training loss is (1 - alpha) x the stock loss; a different student
    gets a positive KD loss, and the criterion holds no parameters (fairseq would train, wrap
    and save them)."""
    model, criterion, sample = _build(toy_data, *TINY_MODEL, "--dropout", "0", "--pass-gate-noise", "none",
                                      *PASS_CRITERION, "--pass-target-heads", "4", "--kd-teacher", stock_toy_base,
                                      "--kd-weight", "0.25", "--optimizer", "pass_adam", "--lr", "0.001")
    _load_weights(model, stock_toy_base)
    model.train()
    loss, _, log = criterion(model, sample)
    assert float(log["kd_loss"]) == pytest.approx(0.0, abs=1e-4)
    # (1 - alpha) stock + alpha KD + R (update scaling: R once per update of one micro-batch)
    assert float(loss) == pytest.approx(0.75 * float(log["loss"]) + float(log["pass_reg"]), rel=1e-5)
    assert list(criterion.parameters()) == [] and criterion.state_dict() == {}
    assert not criterion.teacher.training
    with torch.no_grad():
        model.decoder.output_projection.weight.mul_(1.5)
    _, _, log = criterion(model, sample)
    assert float(log["kd_loss"]) > 1.0
    model.eval()
    _, _, log = criterion(model, sample)  # validation: the stock loss alone, no teacher pass
    assert "kd_loss" not in log


@pytest.mark.parametrize("name, says", [("missing.pt", "no such checkpoint"),
                                         ("notes.txt", "cannot read it as a fairseq checkpoint")])
def test_bad_teachers_are_one_line_errors(toy_data, tmp_path, capsys, name, says):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("not a checkpoint\n")
    with pytest.raises(SystemExit) as e:
        _build(toy_data, *STOCK_TINY_MODEL, "--criterion", "label_smoothed_cross_entropy_kd",
               "--kd-teacher", str(tmp_path / name))
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"pass_fairseq: error: --kd-teacher {tmp_path / name}") and says in last


@pytest.mark.parametrize("arch, criterion", [(STOCK_TINY_MODEL, ["--criterion", "label_smoothed_cross_entropy_kd",
                                                                 "--label-smoothing", "0.1"]),
                                             (TINY_MODEL, [*PASS_CRITERION, "--pass-target-heads", "4"])],
                         ids=["stock-control", "pass"])
def test_fairseq_train_distils_and_the_teacher_stays_out_of_the_checkpoint(toy_data, stock_toy_base, tmp_path, caplog,
                                                                           arch, criterion):
    caplog.set_level("INFO")
    save = train(toy_data, tmp_path, *arch, *TRAIN_COMMON, *criterion, "--finetune-from-model", stock_toy_base,
                 "--kd-teacher", stock_toy_base, "--max-epoch", "2")
    lines = [r.getMessage() for r in caplog.records]
    assert any("kd_loss" in m for m in lines if "train" in m and "num_updates" in m)
    state = load_state(os.path.join(save, "checkpoint_last.pt"))
    student, _, _ = _build(toy_data, *arch, *criterion)  # the same model, built without a teacher
    assert set(state["model"]) == set(student.state_dict())
    assert state.get("criterion") is None  # fairseq saves a criterion's state only when it has parameters
