"""The sweep's config, its commands (the same fine-tune for every method) and the table and
plots built from made-up run results."""
import csv
import json
import os

import pytest

from pass_fairseq.commands import JobError
from pass_fairseq.results_table import plot, summary_rows, write_table
from pass_fairseq.sweep import Sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {
    "corpus": "corpus", "workdir": "work", "results": "results",
    "base": {"dir": "work/base", "updates": 100},
    "finetune": {"shards": 2, "epochs": 3, "lr": 0.0005, "warmup": 5, "max_tokens": 1000},
    "runs": [
        {"method": "control", "heads": [72], "arch": "stock", "prune": None, "select": "last", "flags": []},
        {"method": "pass", "heads": [16, 8], "seeds": [1, 2], "flags": ["--pass-target-heads", "{K}", "--seed-x", "{seed}"]},
    ],
}


def write_config(tmp_path, config=CONFIG):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_config_expands_runs_and_fills_k_and_seed(tmp_path):
    sweep = Sweep.load(write_config(tmp_path))
    assert [r.name for r in sweep.runs] == ["control-k72-s1", "pass-k16-s1", "pass-k16-s2", "pass-k8-s1", "pass-k8-s2"]
    run = sweep.runs[3]
    assert run.flags == ["--pass-target-heads", "8", "--seed-x", "1"]
    assert sweep.result_path(run) == os.path.join("results", "runs", "pass-k8-s1.json")


def test_duplicate_runs_are_refused(tmp_path):
    config = dict(CONFIG, runs=CONFIG["runs"] + [{"method": "pass", "heads": [8], "flags": []}])
    with pytest.raises(JobError, match="runs listed twice: pass-k8-s1"):
        Sweep.load(write_config(tmp_path, config))


def test_every_method_gets_the_same_fine_tune(tmp_path):
    sweep = Sweep.load(write_config(tmp_path))
    control, pass_run = sweep.runs[0], sweep.runs[1]
    a = sweep.finetune_command(control, "DATA", "base.pt", "out")
    b = sweep.finetune_command(pass_run, "DATA", "base.pt", "out")

    def values(cmd):
        return [cmd[cmd.index(k) + 1] for k in shared]

    shared = ("--lr", "--lr-scheduler", "--warmup-updates", "--max-tokens", "--max-epoch", "--dropout",
              "--finetune-from-model", "--seed")
    assert values(a) == values(b) == [
        "0.0005", "fixed", "5", "1000", "3", "0.1", "base.pt", "1"]
    assert "transformer_iwslt_de_en" in a and "label_smoothed_cross_entropy" in a
    assert "transformer_pass_iwslt" in b and b[-4:] == ["--pass-target-heads", "16", "--seed-x", "1"]


def _run(method, heads, seed, test, label=None, speedup=None, kept=None):
    run = {"method": method, "label": label or method, "heads": heads, "seed": seed, "kept_heads": kept or heads,
           "modules_active": 6, "on_target": True, "valid": {"sacrebleu": test - 1},
           "test": {"sacrebleu": test, "by_origin": {"ding_sentences": test - 5, "libreoffice": test + 5}},
           "finetune_seconds": 600.0, "updates": 541, "selected": "checkpoint_best.pt",
           "gates": {"kept": heads, "modules_active": 6, "modules": [
               {"name": f"{side}.layers.{i}.{attn}", "kept": list(range(min(4, heads)))}
               for side, attn in (("encoder", "self_attn"), ("decoder", "self_attn"), ("decoder", "encoder_attn"))
               for i in range(2)]}}
    if speedup:
        run["bench"] = {"speedup": speedup, "time_over_ideal": 1.04}
    return run


def test_table_and_plots_come_from_the_run_files(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    made = [_run("control", 72, 1, 16.8, speedup=1.0), _run("base", 72, 1, 14.6, speedup=1.0),
            _run("pass", 16, 1, 15.0, speedup=1.3), _run("pass", 16, 2, 15.4, speedup=1.32),
            _run("pass", 8, 1, 13.0, speedup=1.5), _run("dsp", 16, 1, 14.0, speedup=1.25)]
    for r in made:
        (runs / f"{r['method']}-k{r['heads']}-s{r['seed']}.json").write_text(json.dumps(r))
    rows = write_table(str(tmp_path))
    with open(tmp_path / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    summary = {(r["method"], r["K"]): r for r in summary_rows(rows)}
    assert summary[("pass", 16)]["test BLEU"] == "15.20 (15.00-15.40, n=2)"
    assert summary[("pass", 16)]["Ding"] == "10.20 (10.00-10.40, n=2)"
    assert summary[("control", 72)]["speed-up"] == "1.00"
    md = (tmp_path / "table.md").read_text()
    assert md.count("\n") == 2 + 5 and "| dsp | 16 | 1 |" in md
    written = plot(str(tmp_path), rows)
    assert [os.path.basename(p) for p in written] == ["bleu_vs_k.png", "bleu_vs_speedup.png", "gates_k16.png"]
    assert all(os.path.getsize(p) > 1000 for p in written)


def test_committed_config_loads():
    sweep = Sweep.load(os.path.join(ROOT, "results", "deb-de-en", "sweep.json"))
    assert {"base", "control", "pass", "passconc"} <= {r.method for r in sweep.runs}
    assert {r.heads for r in sweep.runs if r.method == "pass"} == {8, 16, 32}
