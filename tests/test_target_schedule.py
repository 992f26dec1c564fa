"""PASS's target schedule (``--pass-target-schedule``): the closed form alone (its one-sided
gaps: tests/test_losses.py), and a fine-tune of a fitted toy model that follows it and ends on K."""
import logging
import math
import os
import re

import pytest
import torch

from conftest import PASS_CRITERION, TINY_MODEL, TRAIN_COMMON, load_state, train
from pass_fairseq.target_schedule import annealing, scheduled_target


def test_linear_and_cubic_fall_from_n_to_k_then_hold():
    n, k, t = 72, 16, 100
    for schedule, halfway in (("linear", k + (n - k) / 2), ("cubic", k + (n - k) / 8)):
        assert scheduled_target(0, n, k, schedule, t) == n
        assert math.isclose(scheduled_target(50, n, k, schedule, t), halfway)
        assert scheduled_target(100, n, k, schedule, t) == k
        assert scheduled_target(500, n, k, schedule, t) == k
        values = [scheduled_target(u, n, k, schedule, t) for u in range(0, 101)]
        assert all(a >= b for a, b in zip(values, values[1:]))  # never rises
    assert scheduled_target(0, n, k, "constant", t) == k
    assert scheduled_target(10, n, k, "linear", 0) == k  # no annealing updates: K at once


def test_annealing_ends_at_the_last_annealed_update():
    assert annealing(99, "cubic", 100) and not annealing(100, "cubic", 100)
    assert not annealing(0, "constant", 100)


K, ANNEAL = 4, 150
_TRAIN_LINE = re.compile(r"num_updates=(\d+)")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _train_lines(messages):
    """(update, {key: value}) of every train_inner line (``--log-interval 1``)."""
    rows = []
    for message in messages:
        if "pass_target=" in message and _TRAIN_LINE.search(message):
            values = dict(re.findall(r"(\w+)=([-0-9.e+]+)", message))
            rows.append((int(values["num_updates"]), {k: float(v) for k, v in values.items()}))
    return rows


@pytest.fixture(scope="module")
def annealed_run(toy_data, stock_toy_base, tmp_path_factory):
    """A fitted stock toy model fine-tuned to K = 4 of 24 heads, the target annealed
    linearly over 150 of 300 updates (10 an epoch), logging every update."""
    handler = _Records()  # a module-scoped capture of the training logs (caplog is per test)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        save = train(toy_data, tmp_path_factory.mktemp("annealed"), *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION,
                     "--finetune-from-model", stock_toy_base, "--pass-target-heads", str(K), "--pass-reg-scaling", "token",
                     "--pass-no-reopen", "--pass-target-schedule", "linear", "--pass-target-anneal-updates", str(ANNEAL),
                     "--max-tokens", "600", "--max-epoch", "30", "--log-interval", "1", "--seed", "1",
                     "--best-checkpoint-metric", "pass_loss")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    epochs = [m for m in handler.messages if m.startswith("pass: epoch")]
    return save, _train_lines(handler.messages), epochs


def test_the_logged_target_is_the_schedule(annealed_run):
    _, rows, _ = annealed_run
    assert len(rows) >= 290
    for update, values in rows:  # logged after update n: the target of its forward pass, K_(n-1)
        assert values["pass_target"] == pytest.approx(scheduled_target(update - 1, 24, K, "linear", ANNEAL), abs=1e-3)


def test_the_expected_open_count_follows_the_target_and_the_run_ends_on_k(annealed_run):
    """The gates' expected open count (what R_pass acts on) stays within 5 of K_t after the
    first 25 updates; the deterministic open count dips further where the identical
    starting gates cross the z = 1 threshold together (docs/method.md, "Target schedule"),
    and is back within 2 of K_t from the end of the annealing on. The run ends with exactly
    K binary gates."""
    save, rows, _ = annealed_run
    after = [(u, v) for u, v in rows if u > 25]
    assert max(abs(v["pass_expected_open"] - v["pass_target"]) for _, v in after) < 5
    assert all(abs(v["pass_open"] - v["pass_target"]) <= 2 for u, v in after if u > ANNEAL)
    model = load_state(os.path.join(save, "checkpoint_last.pt"))["model"]
    z = torch.cat([torch.sigmoid(v) * 1.2 - 0.1 for k, v in model.items() if k.endswith("gate.log_alpha")]).clamp(0, 1)
    assert int((z == 1).sum()) == K and int((z == 0).sum()) == 24 - K


def test_lambda_grows_only_at_epoch_starts_where_the_gates_lag(annealed_run):
    """While the target falls, lambda doubles at an epoch start only when more heads are open
    than K_t; the epoch lines log the target beside the counts."""
    _, _, epochs = annealed_run
    parsed = [tuple(float(x) for x in re.match(r"pass: epoch (\d+): (\d+) open, .*target ([-0-9.e+]+), lambda ([-0-9.e+]+)",
                                               line).groups()) for line in epochs]
    assert len(parsed) == 30
    for (_, _, _, before), (epoch, opened, target, lam) in zip(parsed, parsed[1:]):
        if target > K and epoch >= 2:  # still annealing: lambda grows exactly where the gates lag
            assert (lam > before) == (opened > target + 1e-6), (epoch, opened, target, before, lam)
    assert any(lam > before and target > K for (*_, before), (_, _, target, lam) in zip(parsed, parsed[1:]))


def test_the_schedule_belongs_to_pass_only(toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train(toy_data, tmp_path, *TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-method", "dsp",
              "--pass-target-heads", "4", "--pass-target-schedule", "cubic", "--max-epoch", "1")
    assert e.value.code == 2
    assert "--pass-target-schedule cubic anneals the target of PASS's regulariser" in capsys.readouterr().err
