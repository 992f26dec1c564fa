"""End to end: fairseq-train / fairseq-generate in process on a tiny generated task."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import PASS_CRITERION, STOCK_TINY_MODEL, TINY_MODEL, TRAIN_COMMON, USER_DIR, generate, load_state, train

K = 4
PASS_RUN = [*TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-target-heads", str(K),
            "--best-checkpoint-metric", "pass_loss", "--pass-reopen-until-epoch", "10"]


def inspect(path):
    out = subprocess.run([sys.executable, "-m", "pass_fairseq.cli.inspect_gates", str(path), "--json"],
                         capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


@pytest.fixture(scope="module", params=[1, 2], ids=["seed1", "seed2"])
def pass_run(request, toy_data, tmp_path_factory):
    save = tmp_path_factory.mktemp(f"pass{request.param}")
    return train(toy_data, save, *PASS_RUN, "--max-epoch", "30", "--seed", str(request.param))


def test_ends_with_exactly_k_open_binary_gates(pass_run):
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        rc, out, err = inspect(os.path.join(pass_run, name))
        assert rc == 0, err
        report = json.loads(out)  # only one JSON object on stdout
        assert report["heads_total"] == 24
        assert (report["open"], report["nonbinary"], report["closed"]) == (K, 0, 24 - K)
        assert sum(len(m["kept"]) for m in report["modules"]) == K
        assert report["modules"][0]["name"] == "encoder.layers.0.self_attn"
        assert report["modules_active"] == sum(1 for m in report["modules"] if any(z > 0 for z in m["gates"]))


def test_schedule_state_is_saved_in_the_checkpoint(pass_run):
    model = load_state(os.path.join(pass_run, "checkpoint_last.pt"))["model"]
    assert int(model["pass_epoch"]) == 30
    assert int(model["pass_lambda_steps"]) >= 1
    alphas = torch.cat([v for k, v in model.items() if k.endswith("gate.log_alpha")])
    assert alphas.min() >= -10.0 and alphas.max() <= 10.0  # clipped after every update


def test_generate_scores_the_pruned_model(pass_run, toy_data, tmp_path):
    text = generate(toy_data, os.path.join(pass_run, "checkpoint_best.pt"), tmp_path)
    lines = text.splitlines()
    assert sum(line.startswith("H-") for line in lines) == sum(line.startswith("S-") for line in lines) > 40
    assert "BLEU4 = " in text.splitlines()[-1]


def test_resume_restores_the_schedule(toy_data, tmp_path):
    """Stopping after epoch 3 and resuming: the gates, lambda, the reopen statistics and
    the epoch counter come back from checkpoint_last.pt, and the schedule goes on from
    there (fairseq's own resume is not bitwise deterministic on CPU, so the check is on
    the schedule's state, not on every weight)."""
    from pass_fairseq.gate_report import gate_report

    args = [*PASS_RUN, "--seed", "3"]
    save = train(toy_data, tmp_path, *args, "--max-epoch", "3")
    last = os.path.join(save, "checkpoint_last.pt")
    after3 = load_state(last)["model"]
    assert int(after3["pass_epoch"]) == 3
    assert all(int(v) > 0 for k, v in after3.items() if k.endswith("conf_count"))  # epoch 3's statistics
    report = gate_report(after3)
    on_target = report["open"] == K and report["nonbinary"] == 0
    train(toy_data, save, *args, "--max-epoch", "4")
    after4 = load_state(last)["model"]
    assert int(after4["pass_epoch"]) == 4
    assert int(after4["pass_lambda_steps"]) == int(after3["pass_lambda_steps"]) + (not on_target)


def test_finetune_from_a_pass_checkpoint_restarts_the_schedule(toy_data, tmp_path, caplog):
    """Pruning a K=8 PASS model on to K=4 with --finetune-from-model: the loaded schedule
    (epoch 3, lambda steps) must not silence the new run's epoch starts."""
    first = train(toy_data, tmp_path / "k8", *PASS_RUN[:-4], "--pass-target-heads", "8", "--max-epoch", "3",
                  "--seed", "4")
    ckpt = os.path.join(first, "checkpoint_last.pt")
    assert int(load_state(ckpt)["model"]["pass_epoch"]) == 3
    caplog.set_level("INFO", logger="pass_fairseq.tasks.translation_pass")
    tuned = train(toy_data, tmp_path / "k4", *PASS_RUN, "--finetune-from-model", ckpt, "--max-epoch", "2")
    model = load_state(os.path.join(tuned, "checkpoint_last.pt"))["model"]
    assert int(model["pass_epoch"]) == 2
    assert int(model["pass_lambda_steps"]) <= 1  # only this run's epoch 2 can have doubled it
    assert "fresh run from a checkpoint whose gate schedule had reached epoch 3" in caplog.text
    assert "pass: epoch 2:" in caplog.text  # the schedule ran


def test_reset_dataloader_restarts_and_a_mid_epoch_resume_continues(toy_data, tmp_path, caplog):
    """A run stopped mid-epoch (--max-update) and resumed goes on with the same epoch: its
    start is not handled twice (no second lambda step, the confidence statistics of the
    epoch's first updates kept). With --reset-dataloader the schedule starts again."""
    small = ["--max-tokens", "300"]  # ~15 updates an epoch
    save = train(toy_data, tmp_path, *PASS_RUN, *small, "--max-epoch", "3", "--max-update", "20", "--seed", "5")
    last = os.path.join(save, "checkpoint_last.pt")
    before = load_state(last)
    assert int(before["model"]["pass_epoch"]) == 2 and before["extra_state"]["train_iterator"]["iterations_in_epoch"] > 0
    count_key = "encoder.layers.0.self_attn.conf_count"
    caplog.set_level("INFO", logger="pass_fairseq.tasks.translation_pass")
    train(toy_data, save, *PASS_RUN, *small, "--max-epoch", "2", "--seed", "5")
    after = load_state(last)["model"]
    assert "resuming the gate schedule after epoch 2" in caplog.text
    assert int(after["pass_epoch"]) == 2
    assert int(after["pass_lambda_steps"]) == int(before["model"]["pass_lambda_steps"])
    assert int(after[count_key]) > int(before["model"][count_key])  # not reset mid-epoch
    caplog.clear()
    train(toy_data, save, *PASS_RUN, *small, "--max-epoch", "1", "--reset-dataloader", "--seed", "5")
    assert "the schedule starts again at epoch 1" in caplog.text
    assert int(load_state(last)["model"]["pass_epoch"]) == 1


def test_reference_preset_runs_end_to_end(toy_data, tmp_path):
    """--pass-preset reference on the toy task: lambda doubled at every epoch start, the
    first included, while the count of gates at -5 is not N - K (the gates move ~0.2 an
    update, so none reaches -5 in 4 short epochs); the gates get the main weight decay."""
    save = train(toy_data, tmp_path, *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-target-heads", str(K),
                 "--pass-preset", "reference", "--weight-decay", "0.0001", "--max-epoch", "4", "--seed", "6")
    state = load_state(os.path.join(save, "checkpoint_last.pt"))
    model = state["model"]
    alphas = torch.cat([v for k, v in model.items() if k.endswith("gate.log_alpha")])
    assert float(alphas.min()) > -5.0
    assert int(model["pass_epoch"]) == 4 and int(model["pass_lambda_steps"]) == 4
    groups = state["last_optimizer_state"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0001, 0.0001]


def test_epoch_start_is_handled_once(toy_data):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [toy_data, "--user-dir", USER_DIR, *PASS_RUN, "--cpu"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    task.build_criterion(cfg.criterion)
    task.begin_epoch(2, model)
    assert (int(model.pass_epoch), int(model.pass_lambda_steps)) == (2, 1)  # xavier gates: off target
    task.begin_epoch(2, model)  # fairseq calls it again after a mid-epoch resume
    assert (int(model.pass_epoch), int(model.pass_lambda_steps)) == (2, 1)


def test_finetune_from_a_stock_transformer(toy_data, tmp_path):
    stock = train(toy_data, tmp_path / "stock", *STOCK_TINY_MODEL, *TRAIN_COMMON, "--criterion",
                  "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-epoch", "2")
    stock_ckpt = os.path.join(stock, "checkpoint_last.pt")
    rc, _, err = inspect(stock_ckpt)
    assert rc == 2 and err.count("\n") == 1 and "no gates" in err
    tuned = train(toy_data, tmp_path / "tuned", *PASS_RUN, "--finetune-from-model", stock_ckpt, "--max-epoch", "2")
    model = load_state(os.path.join(tuned, "checkpoint_last.pt"))["model"]
    assert sum(k.endswith("gate.log_alpha") for k in model) == 6


def test_stock_weights_load_into_the_gated_model_unchanged(toy_data, tmp_path):
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    models = {}
    for name, arch_args in (("stock", STOCK_TINY_MODEL), ("gated", TINY_MODEL)):
        parser = options.get_training_parser()
        argv = [toy_data, "--user-dir", USER_DIR, "--task", "translation_pass", *arch_args, "--cpu"]
        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
        models[name] = tasks.setup_task(cfg.task).build_model(cfg.model).eval()
    models["gated"].load_state_dict(models["stock"].state_dict(), strict=True)
    src = torch.randint(4, 30, (3, 6))
    prev = torch.randint(4, 30, (3, 5))
    lengths = torch.full((3,), 6)
    out_stock = models["stock"](src, lengths, prev)[0]
    out_gated = models["gated"](src, lengths, prev)[0]
    assert torch.allclose(out_stock, out_gated, atol=1e-5)
    assert checkpoint_utils  # imported for its side effects on torch.load in fairseq


def test_off_target_runs_write_no_best_checkpoint(toy_data, tmp_path):
    save = train(toy_data, tmp_path / "short", *PASS_RUN, "--max-epoch", "1")
    assert os.path.exists(os.path.join(save, "checkpoint_last.pt"))
    assert not os.path.exists(os.path.join(save, "checkpoint_best.pt"))


@pytest.mark.parametrize("extra, message", [
    (["--pass-target-heads", "25"], "larger than the model's 24 heads"),
    (["--pass-target-heads", "0"], "--pass-target-heads 0: out of range, give a number >= 1"),
    ([], "--pass-target-heads K is required"),
])
def test_bad_target_is_a_one_line_error(toy_data, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        train(toy_data, tmp_path, *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, *extra, "--max-epoch", "1")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("pass_fairseq: error:") == 1


def test_pass_criterion_under_the_wrong_task(toy_data, tmp_path, capsys):
    args = [a if a != "translation_pass" else "translation" for a in TRAIN_COMMON]
    with pytest.raises(SystemExit):
        train(toy_data, tmp_path, *TINY_MODEL, *args, *PASS_CRITERION, "--pass-target-heads", "4", "--max-epoch", "1")
    assert "needs a task that runs the gate schedule, --task translation_pass" in capsys.readouterr().err


@pytest.mark.parametrize("extra, logged", [
    (["--pass-concentrator", "--pass-target-heads", "4", "--pass-conc-end-epoch", "1"], "pass_conc"),
    (["--pass-method", "voita", "--pass-l0-penalty", "0.05"], "pass_expected_open"),
    (["--pass-target-heads", "4", "--pass-gate-noise", "example", "--pass-reg-scaling", "token", "--update-freq", "2"],
     "pass_reg"),
], ids=["concentrator", "voita", "per-example-token-scaling"])
def test_other_methods_train(toy_data, tmp_path, caplog, extra, logged):
    """fairseq-train runs each method, logs its terms, and keeps the schedule (the terms
    themselves are checked in tests/test_schedule.py). The concentrator is on in epoch 1
    only: the train log shows it non-zero there and zero in epoch 2."""
    caplog.set_level("INFO", logger="train")
    save = train(toy_data, tmp_path, *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, *extra, "--max-epoch", "2")
    state = load_state(os.path.join(save, "checkpoint_last.pt"))
    assert int(state["model"]["pass_epoch"]) == 2
    assert int(state["model"]["pass_lambda_steps"]) <= 1
    epochs = [r.getMessage() for r in caplog.records if r.name == "train"]  # one summary line per epoch
    values = [float(line.split(f"{logged} ")[1].split(" ")[0]) for line in epochs]
    assert len(values) == 2 and values[0] > 0
    if logged == "pass_conc":
        assert values[1] == 0.0
