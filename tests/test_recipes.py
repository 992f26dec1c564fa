"""The demo and the sweep build their fairseq-train commands from one recipe module
(:mod:`pass_fairseq.experiments.recipes`): flag for flag the same, apart from the values a
sweep config sets (width, updates, learning rate, shards, epochs, seeds, method flags)."""
import os

import pytest

from pass_fairseq.experiments import demo, recipes
from pass_fairseq.experiments.sweep_config import Sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "results", "deb-de-en", "sweep.json")
#: flags whose values are where a run's data, start and outputs go
PLACES = {"--save-dir", "--finetune-from-model"}
#: flags whose values a sweep config sets (its "base" and "finetune"; "seeds" per run)
CONFIG_VALUES = {"--max-update", "--lr", "--warmup-updates", "--max-tokens", "--max-epoch", "--seed"}


def flags(cmd):
    """(data, {flag: value or None}) of a fairseq-train command; a flag given twice fails."""
    assert os.path.basename(cmd[0]) == "fairseq-train"
    data, rest, out = cmd[1], cmd[2:], {}
    for i, token in enumerate(rest):
        if token.startswith("--"):
            assert token not in out, f"{token} given twice"
            value = rest[i + 1] if i + 1 < len(rest) and not rest[i + 1].startswith("--") else None
            out[token] = value
    return data, out


def comparable(cmd, method_flags=()):
    """The command's flags without the places, the config's values and the method's own flags."""
    _, found = flags(cmd)
    own = {f for f in method_flags if f.startswith("--")}
    return {f: v for f, v in found.items() if f not in PLACES | CONFIG_VALUES | own}


@pytest.fixture
def both(tmp_path):
    args = demo.parse_args(["--heads", "16", "--workdir", str(tmp_path / "demo")])
    return args, Sweep.load(CONFIG)


def spec(sweep, method, k):
    return next(r for r in sweep.runs if r.method == method and r.target_heads == k and not r.tuning)


def test_the_base_is_the_same_command_in_the_demo_and_the_sweep(both):
    args, sweep = both
    ours, theirs = demo.demo_base_command(args), sweep.base_command()
    assert comparable(ours) == comparable(theirs)
    assert flags(ours)[1]["--max-update"] == str(args.base_updates)
    assert flags(theirs)[1]["--max-update"] == str(sweep.base["updates"])


def test_the_control_is_the_same_command_in_the_demo_and_the_sweep(both):
    args, sweep = both
    control = spec(sweep, "control", 72)
    ours = demo.control_command(args, "shards", "base.pt")
    theirs = sweep.finetune_command(control, "shards", "base.pt", "out")
    assert comparable(ours) == comparable(theirs)
    assert flags(ours)[1]["--arch"] == flags(theirs)[1]["--arch"] == "transformer_iwslt_de_en"
    assert flags(theirs)[1]["--lr"] == str(sweep.finetune["lr"])


def test_pass_is_the_same_fine_tune_in_the_demo_and_the_sweep_but_for_its_method_flags(both):
    args, sweep = both
    run = spec(sweep, "pass", 16)
    ours = demo.pass_command(args, "shards", "base.pt")
    theirs = sweep.finetune_command(run, "shards", "base.pt", "out")
    demo_method = recipes.pass_method_flags(16, demo.SCHEDULE)
    assert comparable(ours, demo_method) == comparable(theirs, run.all_flags)
    assert flags(ours)[1]["--arch"] == "transformer_pass_iwslt"
    # the method flags they share have the same values (the sweep leaves the rest at their defaults)
    shared = set(flags(["fairseq-train", "d", *demo_method])[1]) & set(flags(["fairseq-train", "d", *run.all_flags])[1])
    assert {"--pass-target-heads", "--pass-reg-scaling", "--pass-lambda-init", "--pass-no-reopen"} <= shared
    for flag in shared:
        assert flags(ours)[1][flag] == flags(theirs)[1][flag], flag


def test_the_control_and_pass_differ_only_in_model_and_method(both):
    args, _ = both
    control = flags(demo.control_command(args, "shards", "base.pt"))[1]
    passed = flags(demo.pass_command(args, "shards", "base.pt"))[1]
    model = {"--arch", "--criterion", "--optimizer", "--save-dir"}
    method = set(flags(["fairseq-train", "d", *recipes.pass_method_flags(16, demo.SCHEDULE)])[1])
    assert {f: v for f, v in control.items() if f not in model} == \
        {f: v for f, v in passed.items() if f not in model | method}
