"""Every numeric ``--pass-*`` and ``--kd-*`` flag is checked when the run is built (model, task, criterion,
optimizer, as fairseq-train builds them): a value out of range or not finite is one line
naming the flag, exit 2, before any update. One case per flag at least, and a check that
no numeric flag is left without one."""
import argparse

import pytest

from conftest import PASS_CRITERION, TINY_MODEL, USER_DIR
from pass_fairseq.cli import pass_flags
from pass_fairseq.flag_checks import POSITIVE, FlagError, check_flags

#: (flag, a value out of its range, extra flags the case needs)
BAD = [
    ("--pass-beta", "0", ()),
    ("--pass-beta", "nan", ()),
    ("--pass-gate-init", "nan", ()),
    ("--pass-missing-gate-init", "inf", ()),
    ("--pass-clip-min", "nan", ()),
    ("--pass-clip-max", "inf", ()),
    ("--pass-reopen-decay", "0", ()),
    ("--pass-reopen-decay", "1.5", ()),
    ("--pass-reopen-until-epoch", "-1", ()),
    ("--pass-dsp-temp-start", "-1", ()),
    ("--pass-dsp-temp-end", "0", ()),
    ("--pass-dsp-anneal-updates", "-5", ()),
    ("--pass-target-heads", "0", ()),
    ("--pass-target-anneal-updates", "-1", ("--pass-target-schedule", "linear")),
    ("--pass-lambda-init", "-1", ()),
    ("--pass-lambda-init", "nan", ()),
    ("--pass-lambda-factor", "0.5", ()),
    ("--pass-l0-penalty", "-0.1", ("--pass-method", "voita")),
    ("--pass-conc-weight", "-1", ("--pass-concentrator",)),
    ("--pass-conc-weight-cap", "0", ("--pass-concentrator",)),
    ("--pass-conc-start-epoch", "0", ("--pass-concentrator",)),
    ("--pass-conc-end-epoch", "0", ("--pass-concentrator",)),
    ("--pass-gate-lr", "-1", ()),
    ("--pass-gate-lr", "nan", ()),
    ("--pass-gate-weight-decay", "-1", ()),
    ("--kd-weight", "1.5", ()),
    ("--kd-weight", "0", ()),
    ("--kd-temperature", "0", ()),
]
#: flags that take a value but not a number in a range: a head list, a checkpoint
NOT_RANGES = {"--pass-pruned-heads", "--kd-teacher"}


def build_run(data, *extra):
    """Parse and build task, model, criterion and optimizer as fairseq-train does."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    argv = [data, "--user-dir", USER_DIR, "--task", "translation_pass", *TINY_MODEL, *PASS_CRITERION,
            "--pass-target-heads", "8", "--optimizer", "pass_adam", "--lr", "0.001", "--cpu", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion).optimizer


@pytest.mark.parametrize("flag,value,extra", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_a_numeric_flag_out_of_range_is_one_line_before_training(toy_data, capsys, flag, value, extra):
    with pytest.raises(SystemExit) as e:
        build_run(toy_data, *extra, f"{flag}={value}")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"pass_fairseq: error: {flag} ") and value in err[-1], err[-1:]


def test_the_defaults_and_in_range_values_build(toy_data):
    assert build_run(toy_data) is not None
    assert build_run(toy_data, "--pass-lambda-init", "0.5", "--pass-gate-lr", "0.05", "--pass-reopen-decay", "1",
                     "--pass-concentrator", "--pass-conc-weight", "0", "--pass-clip-min", "-3",
                     "--pass-clip-max", "3") is not None


def test_every_numeric_flag_has_a_case():
    numeric = set()
    for _, add in pass_flags.SOURCES:
        for action in pass_flags._plugin_actions(add):
            flag = action.option_strings[0]
            takes_value = not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            if takes_value and not action.choices and flag not in NOT_RANGES:
                numeric.add(flag)
    assert numeric == {f for f, _, _ in BAD}


def test_check_flags_names_the_flag_and_its_range():
    check_flags({"--pass-gate-lr": (0.2, POSITIVE), "--pass-conc-weight": (None, POSITIVE)})
    with pytest.raises(FlagError, match=r"--pass-gate-lr -1: out of range, give a number > 0"):
        check_flags({"--pass-gate-lr": (-1, POSITIVE)})
