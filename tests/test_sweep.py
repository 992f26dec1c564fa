"""The sweep's config, its commands (the same fine-tune for every method) and the table and
plots built from made-up run results."""
import csv
import json
import os
import shutil
from dataclasses import replace

import pytest
import torch

from pass_fairseq.experiments.jobs import JobError
from pass_fairseq.files import write_json
from pass_fairseq.experiments.results_table import comparison_rows, load_runs, plot, summary_rows, write_table
from pass_fairseq.experiments.sweep_config import Sweep

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


def test_run_names_that_cannot_name_a_file_are_refused(tmp_path):
    config = dict(CONFIG, runs=CONFIG["runs"] + [{"method": "pass+conc", "heads": [8], "flags": []}])
    with pytest.raises(JobError, match=r"letters, digits.*\(pass\+conc-k8-s1\)"):
        Sweep.load(write_config(tmp_path, config))


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


def test_the_model_width_comes_from_the_config_for_the_base_and_every_fine_tune(tmp_path):
    def width(cmd):
        return [cmd[cmd.index(k) + 1] for k in ("--encoder-embed-dim", "--decoder-ffn-embed-dim")]

    default = Sweep.load(write_config(tmp_path))
    assert width(default.base_command()) == width(default.finetune_command(default.runs[1], "D", "b.pt", "o")) == [
        "128", "512"]
    wide = Sweep.load(write_config(tmp_path, dict(CONFIG, model={"embed_dim": 512, "ffn_embed_dim": 1024})))
    assert width(wide.base_command()) == width(wide.finetune_command(wide.runs[1], "DATA", "b.pt", "o")) == [
        "512", "1024"]
    with pytest.raises(JobError, match='"model" takes embed_dim and ffn_embed_dim, not heads'):
        Sweep.load(write_config(tmp_path, dict(CONFIG, model={"heads": 8})))


@pytest.mark.parametrize("change,message", [
    (lambda c: {}, 'missing key "corpus"'),
    (lambda c: {k: v for k, v in c.items() if k != "runs"}, 'missing key "runs" (the list of methods to run)'),
    (lambda c: dict(c, base={"dir": "b"}), '"base" is missing \'updates\''),
    (lambda c: dict(c, finetune={"lr": 1}), '"finetune" is missing \'shards\', \'epochs\', \'warmup\', \'max_tokens\''),
    (lambda c: dict(c, runs=[]), '"runs" must be a non-empty list'),
    (lambda c: dict(c, runs=[{"method": "pass"}]), "runs[0] (pass) is missing 'heads'"),
    (lambda c: dict(c, runs=[{"method": "pass", "heads": 16}]), 'pass: "heads" must be a list of head counts'),
    (lambda c: dict(c, runs=[{"method": "pass", "heads": [16], "flag": []}]), "pass: unknown key flag"),
    (lambda c: [], "a sweep config is a JSON object"),
])
def test_a_config_missing_a_key_says_which_in_words(tmp_path, capsys, change, message):
    from pass_fairseq.cli.sweep import main

    path = write_config(tmp_path, change(CONFIG))
    with pytest.raises(JobError) as e:
        Sweep.load(path)
    assert message in str(e.value)
    with pytest.raises(SystemExit) as exit_:
        main([path, "--list"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_config_that_is_not_json_is_one_line(tmp_path, capsys):
    from pass_fairseq.cli.sweep import main

    path = tmp_path / "sweep.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit) as e:
        main([str(path)])
    assert e.value.code == 2 and "sweep.json: not JSON" in capsys.readouterr().err


def test_a_config_without_bench_scores_but_never_times(tmp_path, monkeypatch, capsys):
    import pass_fairseq.experiments.sweep as sweep_module
    from pass_fairseq.cli.sweep import main

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path, dict(CONFIG, bench=False)))
    assert sweep.bench is None and Sweep.load(write_config(tmp_path)).bench == {}
    monkeypatch.setattr(sweep_module, "fine_tune", lambda sw, spec, data, work, result: "ckpt.pt")
    monkeypatch.setattr(sweep_module, "gate_summary", lambda ckpt, k: {"on_target": True, "kept": k})
    monkeypatch.setattr(sweep_module, "prune_and_score", lambda sw, spec, ckpt, how, work: {"kept_heads": 16})
    monkeypatch.setattr(sweep_module, "score", lambda sw, ckpt, work: {"test": {"sacrebleu": 1.0}})
    monkeypatch.setattr(sweep_module, "bench_ratios", lambda *a: pytest.fail("timed with \"bench\": false"))
    assert sweep_module.run_one(sweep, sweep.runs[1], "data")["bench"] == {}
    assert sweep_module.run_one(sweep, sweep.runs[0], "data")["bench"] == {}  # no 1.0 for the unpruned
    with pytest.raises(SystemExit) as e:
        main([write_config(tmp_path, dict(CONFIG, bench=False)), "--rebench"])
    assert e.value.code == 2 and "nothing to time" in capsys.readouterr().err
    with pytest.raises(JobError, match="\"bench\" must be pass-bench-inference's settings"):
        Sweep.load(write_config(tmp_path, dict(CONFIG, bench=True)))
    timing = Sweep.load(write_config(tmp_path, dict(CONFIG, bench={})))  # timed later: the controls get 1.0
    write_json(timing.result_path(timing.runs[0]), {"bench": {}, "test": {"sacrebleu": 1.0}})
    assert sweep_module.rebench(timing, ["control"]) == 0
    assert timing.result(timing.runs[0])["bench"] == {"speedup": 1.0}


MODULES = [f"{side}.layers.{i}.{attn}" for side, attn in (("encoder", "self_attn"), ("decoder", "self_attn"),
                                                          ("decoder", "encoder_attn")) for i in range(2)]


def _pruned(heads):
    """K heads, four a module in MODULES order: K = 8 is all encoder, K = 16 encoder and decoder self."""
    return {name: list(range(min(4, max(0, heads - 4 * i)))) for i, name in enumerate(MODULES)}


def _run(method, heads, seed, test, label=None, speedup=None, kept=None, pruned=True):
    """A run's result; its gates keep all 24 heads by themselves, its pruned model K (``pruned_heads``)."""
    run = {"method": method, "label": label or method, "heads": heads, "seed": seed, "kept_heads": kept or heads,
           "modules_active": 6, "on_target": True, "valid": {"sacrebleu": test - 1},
           "test": {"sacrebleu": test, "by_origin": {"ding_sentences": test - 5, "libreoffice": test + 5}},
           "finetune_seconds": 600.0, "updates": 541, "selected": "checkpoint_best.pt",
           "gates": {"kept": 24, "modules_active": 6, "modules": [
               {"name": name, "kept": [0, 1, 2, 3], "gates": [1.0] * 4} for name in MODULES]}}
    if pruned:
        run["pruned_heads"] = _pruned(heads)
    if speedup:
        run["bench"] = {"speedup": speedup, "time_over_ideal": 1.04}
    return run


def test_table_and_plots_come_from_the_run_files(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    made = [_run("control", 72, 1, 16.8, speedup=1.0), _run("base", 72, 1, 14.6, speedup=1.0),
            _run("pass", 16, 1, 15.0, speedup=1.3), _run("pass", 16, 2, 15.4, speedup=1.32),
            _run("pass", 8, 1, 13.0, speedup=1.5), _run("dsp", 16, 1, 14.0, speedup=1.25),
            _run("voita", 16, 1, 12.0, pruned=False)]
    for r in made:
        (runs / f"{r['method']}-k{r['heads']}-s{r['seed']}.json").write_text(json.dumps(r))
    rows = write_table(str(tmp_path))
    with open(tmp_path / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == 7
    summary = {(r["method"], r["K"]): r for r in summary_rows(rows)}
    assert summary[("pass", 16)]["test BLEU"] == "15.20 (15.00-15.40, n=2)"
    assert summary[("pass", 16)]["Ding"] == "10.20 (10.00-10.40, n=2)"
    assert summary[("control", 72)]["speed-up"] == "1.00"
    compared = {(r["method"], r["K"]): r for r in comparison_rows(load_runs(str(tmp_path)))}
    assert list(compared) == [("pass", 8), ("pass", 16), ("dsp", 16), ("voita", 16)]  # best first per K
    assert compared[("dsp", 16)]["test - pass"] == "-1.20 (-1.40 to -1.00)"  # 14.0 against seeds 15.0, 15.4
    assert compared[("dsp", 16)]["test - control"] == "-2.80"
    assert compared[("pass", 16)]["test - pass"] == "-"
    kinds = "heads: encoder self / decoder self / decoder cross"
    assert compared[("pass", 8)][kinds] == "8 / 0 / 0" and compared[("pass", 16)][kinds] == "8 / 8 / 0"
    assert compared[("voita", 16)][kinds] == "-"  # pruned heads not recorded and its own 24 are not its K
    assert "| 16 | dsp | 1 | 14.00 | -1.20" in (tmp_path / "comparison.md").read_text()
    md = (tmp_path / "table.md").read_text()
    assert md.count("\n") == 2 + 6 and "| dsp | 16 | 1 |" in md
    assert not (tmp_path / "tuning.md").exists()  # no tuning runs, no tuning table
    (tmp_path / "base_curve.csv").write_text("updates,valid_loss,valid_nll_loss,valid_ppl\n448,8.1,7.2,150.0\n"
                                             "896,7.0,6.0,64.0\n")
    (tmp_path / "finetune_curves.csv").write_text(
        "run,method,label,heads,seed,updates,nll_loss,pass_open,pass_nonbinary\n"
        "control-k72-s1,control,control,72,1,25,4.4,,\ncontrol-k72-s1,control,control,72,1,50,4.3,,\n"
        "pass-k16-s1,pass,pass,16,1,25,4.9,13.8,58.2\npass-k16-s1,pass,pass,16,1,50,5.6,6.8,15\n")
    written = plot(str(tmp_path), rows)
    assert [os.path.basename(p) for p in written] == ["bleu_vs_k.png", "bleu_vs_speedup.png", "gates_k16.png",
                                                      "base_valid.png", "finetune_k16.png"]
    assert all(os.path.getsize(p) > 1000 for p in written)
    for name in os.listdir(runs):  # a sweep with "bench": false: no speed-up plot
        r = json.loads((runs / name).read_text())
        (runs / name).write_text(json.dumps(dict(r, bench={})))
    assert "bleu_vs_speedup.png" not in [os.path.basename(p) for p in plot(str(tmp_path))]


def test_committed_config_loads():
    sweep = Sweep.load(os.path.join(ROOT, "results", "deb-de-en", "sweep.json"))
    assert {"base", "control", "pass", "passconc"} <= {r.method for r in sweep.runs}
    assert {r.target_heads for r in sweep.runs if r.method == "pass"} == {8, 16, 32}


TUNED = dict(CONFIG, runs=[
    {"method": "pass", "heads": [16, 8], "flags": ["--pass-target-heads", "{K}"],
     "tries": {"a": [], "b": ["--pass-gate-lr", "0.05"]}},
    {"method": "passconc", "heads": [16], "flags": ["--pass-target-heads", "{K}", "--pass-concentrator"],
     "tries_from": "pass"},
    {"method": "voita", "heads": [16, 8], "flags": ["--pass-method", "voita"], "choose": "own_count",
     "tries": {"p1": ["--pass-l0-penalty", "0.01"], "p3": ["--pass-l0-penalty", "0.03"]}},
])


def test_tuning_tries_run_first_and_fine_tunes_are_shared_only_when_k_is_not_in_the_flags(tmp_path):
    sweep = Sweep.load(write_config(tmp_path, TUNED))
    assert [r.name for r in sweep.runs] == [
        "pass.a-k16-s1", "pass.b-k16-s1", "pass-k16-s1", "passconc-k16-s1",
        "voita.p1-k16-s1", "voita.p3-k16-s1", "voita-k16-s1", "pass-k8-s1", "voita-k8-s1"]
    runs = {r.name: r for r in sweep.runs}
    assert runs["pass.b-k16-s1"].all_flags == ["--pass-target-heads", "16", "--pass-gate-lr", "0.05"]
    assert runs["pass.b-k16-s1"].finetune_name == "pass.b-k16-s1"  # {K} in the flags: one per K
    assert runs["voita.p3-k16-s1"].finetune_name == "voita.p3-s1"  # one fine-tune serves every K
    assert runs["passconc-k16-s1"].tries == runs["pass-k16-s1"].tries and runs["passconc-k16-s1"].choose == "valid"
    assert runs["pass-k8-s1"].try_name is None  # chosen when it runs


def _tuning_result(sweep, name, valid, own_kept):
    spec = next(r for r in sweep.runs if r.name == name)
    os.makedirs(os.path.dirname(sweep.result_path(spec)), exist_ok=True)
    result = {"method": spec.method, "heads": spec.target_heads, "seed": spec.seed, "try": spec.try_name, "tuning": True,
              "tuning_method": spec.method, "choose": spec.choose, "try_flags": spec.tries[spec.try_name],
              "valid": {"sacrebleu": valid}, "test": {"sacrebleu": valid}, "own_kept": own_kept}
    with open(sweep.result_path(spec), "w") as f:
        json.dump(result, f)


def test_runs_use_the_try_chosen_on_valid_and_voita_chooses_by_its_own_count(tmp_path, monkeypatch):
    from pass_fairseq.experiments.sweep import resolve_try, reuse_tuning_run

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path, TUNED))
    runs = {r.name: r for r in sweep.runs}
    assert resolve_try(sweep, runs["pass-k8-s1"]) is None  # tuning not finished: waits
    _tuning_result(sweep, "pass.a-k16-s1", 14.0, 16)
    _tuning_result(sweep, "pass.b-k16-s1", 14.5, 16)
    _tuning_result(sweep, "voita.p1-k16-s1", 15.0, 30)
    _tuning_result(sweep, "voita.p3-k16-s1", 13.0, 12)
    pass8 = resolve_try(sweep, runs["pass-k8-s1"])
    assert pass8.try_name == "b" and pass8.all_flags[-2:] == ["--pass-gate-lr", "0.05"]
    assert resolve_try(sweep, runs["passconc-k16-s1"]).try_name == "b"  # PASS's tuning decides
    assert resolve_try(sweep, runs["voita-k16-s1"]).try_name == "p1"  # 30 >= 16 (12 is not)
    assert resolve_try(sweep, runs["voita-k8-s1"]).try_name == "p3"  # the fewest at or above 8
    reused = reuse_tuning_run(sweep, resolve_try(sweep, runs["pass-k16-s1"]))
    assert reused["try"] == "b" and reused["tuning"] is False and reused["reused"] == "pass.b-k16-s1"
    assert reuse_tuning_run(sweep, pass8) is None and reuse_tuning_run(sweep, resolve_try(sweep, runs["passconc-k16-s1"])) is None


def test_choose_try_rules():
    from pass_fairseq.experiments.tuning import choose_try

    r = {"x": {"valid": {"sacrebleu": 10.0}, "own_kept": 5}, "y": {"valid": {"sacrebleu": 12.0}, "own_kept": 7},
         "z": {"valid": {"sacrebleu": 11.0}, "own_kept": 7}}
    assert choose_try(r, "valid", 16) == "y"
    assert choose_try(r, "own_count", 6) == "y"  # 7 >= 6, the better valid of the two 7s
    assert choose_try(r, "own_count", 5) == "x"
    assert choose_try(r, "own_count", 16) == "y"  # none reaches 16: the most heads
    with pytest.raises(ValueError, match="choose"):
        choose_try(r, "test", 16)


def test_bad_tuning_config_is_refused(tmp_path):
    bad = dict(CONFIG, runs=[{"method": "pass", "heads": [16], "flags": [], "tries_from": "dsp"}])
    with pytest.raises(JobError, match="tries_from dsp: no such method with tries"):
        Sweep.load(write_config(tmp_path, bad))
    bad = dict(CONFIG, runs=[{"method": "pass", "heads": [16], "flags": [], "tries": {"a": []}, "choose": "test"}])
    with pytest.raises(JobError, match="choose must be one of valid, own_count"):
        Sweep.load(write_config(tmp_path, bad))


def test_tuning_runs_stay_out_of_the_table_and_are_listed_with_their_users(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    made = [dict(_run("pass", 16, 1, 15.0), tuning=True, tuning_method="pass", choose="valid", **{"try": "a"}),
            dict(_run("pass", 16, 1, 15.5), tuning=True, tuning_method="pass", choose="valid", **{"try": "b"},
                 try_flags=["--pass-gate-lr", "0.05"], own={"valid": {"sacrebleu": 13.9}, "test": {"sacrebleu": 14.2}}),
            dict(_run("pass", 16, 1, 15.5), tuning=False, tuning_method="pass", **{"try": "b"}),
            dict(_run("passconc", 16, 1, 15.1), tuning=False, tuning_method="pass", **{"try": "b"})]
    for i, r in enumerate(made):
        (runs / f"{i}.json").write_text(json.dumps(r))
    rows = write_table(str(tmp_path))
    assert len(rows) == 4
    md = (tmp_path / "table.md").read_text()
    assert md.count("| pass | 16 | 1 |") == 1 and "passconc" in md
    tuning = (tmp_path / "tuning.md").read_text()
    assert "| pass | b | valid | 16 | 14.5 |" in tuning and "pass K=16 s1, passconc K=16 s1" in tuning
    assert "--pass-gate-lr 0.05" in tuning and "| 13.9 / 14.2 |" in tuning


LOG = """2026-11-26 06:31:52 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 6.758 | nll_loss 5.696 | ppl 51.82 | wps 2204.7 | wpb 2362.1 | bsz 142.9 | num_updates 1344 | best_loss 6.758
2026-11-26 06:32:11 | INFO | train_inner | epoch 004:      6 / 448 loss=7.19, nll_loss=6.204, ppl=73.7, num_updates=1350
2026-11-26 06:20:00 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 7.5 | nll_loss 6.5 | ppl 90.5 | wps 2204.7 | num_updates 896 | best_loss 7.5
2026-11-26 06:40:00 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 6.7 | nll_loss 5.6 | ppl 50.1 | wps 2204.7 | num_updates 1344 | best_loss 6.7
"""


def test_train_logs_read_the_valid_curve_and_the_last_update():
    from pass_fairseq.experiments.train_logs import last_update, valid_curve

    assert valid_curve(LOG) == [(896, 7.5, 6.5, 90.5), (1344, 6.7, 5.6, 50.1)]  # a resumed epoch counts once
    assert last_update(LOG) == 1344 and last_update("nothing") == 0


def test_train_logs_read_the_training_curve():
    from pass_fairseq.experiments.train_logs import train_curve

    resumed = LOG + "2026-11-26 06:33:00 | INFO | train_inner | epoch 004:      6 / 448 loss=7.1, nll_loss=6.1, " \
                    "num_updates=1350\n"
    assert train_curve(resumed, ["nll_loss"]) == [(1350, {"nll_loss": 6.1})]  # the later line wins
    assert train_curve(LOG, ["nll_loss", "pass_open"]) == []  # a stock run's log has no gate counts


def test_finetune_curves_come_from_the_logs_and_survive_a_checkout_without_them(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path))
    runs = {r.name: r for r in sweep.runs}
    logs = {  # run -> (the fine-tune its result names, its one train_inner line): pass-k8-s1 reused pass-k16-s1's
        "control-k72-s1": ("control-s1", "loss=5.1, nll_loss=4.4, ppl=21.1, num_updates=25"),
        "pass-k16-s1": ("pass-tuned", "nll_loss=4.9, pass_open=13.76, pass_nonbinary=58.24, num_updates=25"),
        "pass-k8-s1": ("pass-k8-own", "nll_loss=5.5, pass_open=8, pass_nonbinary=0, pass_target=9.5, num_updates=25"),
        "pass-k8-s2": ("elsewhere", "nll_loss=9.9, pass_open=1, pass_nonbinary=0, num_updates=25")}
    for name, (finetune, line) in logs.items():
        os.makedirs(os.path.join("work", "finetunes", finetune))
        with open(os.path.join("work", "finetunes", finetune, "train.log"), "w") as f:
            f.write(f"2026-11-26 08:18:36 | INFO | train_inner | epoch 001:     25 / 69 {line}\n")
        if name != "pass-k8-s2":  # not finished: its log is not read
            _finished(sweep, name, 14.0)
            write_json(sweep.result_path(runs[name]), dict(sweep.result(runs[name]), finetune=finetune))
    path = sweep_module.write_finetune_curves(sweep)
    with open(path) as f:
        made = list(csv.DictReader(f))
    assert [tuple(r.values()) for r in made] == [
        ("control-k72-s1", "control", "control", "72", "1", "25", "4.4", "", "", ""),
        ("pass-k16-s1", "pass", "pass", "16", "1", "25", "4.9", "13.76", "58.24", ""),  # a log from before pass_target
        ("pass-k8-s1", "pass", "pass", "8", "1", "25", "5.5", "8.0", "0.0", "9.5")]
    shutil.rmtree(sweep.workdir)  # a clean checkout: no logs, the committed rows stay
    sweep_module.write_finetune_curves(sweep)
    with open(path) as f:
        assert list(csv.DictReader(f)) == made
    os.remove(sweep.result_path(runs["pass-k8-s1"]))  # --redo: its old curve goes
    sweep_module.write_finetune_curves(sweep)
    with open(path) as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["control-k72-s1", "pass-k16-s1"]


def test_rebench_times_the_runs_of_each_k_side_by_side_and_keeps_their_scores(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path))
    runs = {r.name: r for r in sweep.runs}
    for name in ("control-k72-s1", "pass-k16-s1", "pass-k16-s2", "pass-k8-s2"):
        spec = runs[name]
        os.makedirs(os.path.dirname(sweep.result_path(spec)), exist_ok=True)
        with open(sweep.result_path(spec), "w") as f:
            json.dump({"finetune": spec.finetune_name, "selected": "checkpoint_best.pt", "bench": {"speedup": 9.0},
                       "test": {"sacrebleu": 15.0}}, f)
    timed = []

    def bench_ratios(sw, checkpoints, k, work, tables):
        timed.append((list(checkpoints), k, tables))
        assert checkpoints[timed[-1][0][0]] == os.path.join("work", "finetunes", timed[-1][0][0], "checkpoint_best.pt")
        return {name: {"speedup": 1.3 + i} for i, name in enumerate(checkpoints)}

    monkeypatch.setattr(sweep_module, "bench_ratios", bench_ratios)
    assert sweep_module.rebench(sweep) == 3  # the unpruned control has no pruned model to time
    assert timed == [(["pass-k8-s2"], 8, os.path.join("results", "speed_k8")),
                     (["pass-k16-s1", "pass-k16-s2"], 16, os.path.join("results", "speed_k16"))]
    assert sweep.result(runs["pass-k16-s2"]) == {"finetune": "pass-k16-s2", "selected": "checkpoint_best.pt",
                                                 "bench": {"speedup": 2.3}, "test": {"sacrebleu": 15.0}}
    timed.clear()
    assert sweep_module.rebench(sweep, ["control", "pass-k8-s1"]) == 0  # --only: neither is a finished pruned run
    assert sweep_module.rebench(sweep, ["pass-k16-s2"]) == 2  # --only picks K's: the whole K is timed together
    assert timed == [(["pass-k16-s1", "pass-k16-s2"], 16, os.path.join("results", "speed_k16"))]


def test_bench_ratios_reads_every_named_checkpoint_from_one_real_benchmark_run(tmp_path, monkeypatch):
    """The real pass-bench-inference on two tiny gated checkpoints with different masks."""
    import pass_fairseq.experiments.sweep as sweep_module
    from pruning_fixtures import CLOSED, MASK, OPEN, build_gated, checkpoint_state, make_data

    data = make_data(str(tmp_path / "toy"))
    paths = {}
    for name, mask in (("a", MASK), ("b", {m: [OPEN, OPEN, CLOSED, CLOSED] for m in MASK})):
        cfg, _, model = build_gated(data, mask=mask)
        paths[name] = str(tmp_path / f"{name}.pt")
        torch.save(checkpoint_state(cfg, model), paths[name])
    config = dict(CONFIG, corpus=os.path.dirname(data), bench={"sentences": 2, "repeats": 1})
    sweep = Sweep.load(write_config(tmp_path, config))
    ratios = sweep_module.bench_ratios(sweep, paths, 4, str(tmp_path / "work"), str(tmp_path / "speed_k4"))
    assert list(ratios) == ["a", "b"] and all(set(r) == {"speedup", "time_over_ideal", "attn_speedup", "spread"}
                                              for r in ratios.values())
    with open(tmp_path / "speed_k4.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["pruned K=4 topk a"]["skipped_modules"] == "3" and rows["pruned K=4 topk b"]["skipped_modules"] == "4"
    assert float(rows["pruned K=4 topk b"]["speedup"]) == ratios["b"]["speedup"]


def test_bench_ratios_without_a_run_s_row_is_a_one_line_error(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path))
    (tmp_path / "speed_k4.csv").write_text("model,speedup,time_over_ideal,attn_speedup,spread\n"
                                           "pruned K=4 topk a,1.5,1.0,3.0,0.1\n")
    monkeypatch.setattr(sweep_module, "run", lambda cmd, log, show: 0)  # the benchmark "ran"
    with pytest.raises(JobError, match=r"speed_k4.csv has no row 'pruned K=4 topk b'; see .*bench.log$"):
        sweep_module.bench_ratios(sweep, {"a": "a.pt", "b": "b.pt"}, 4, "work", "speed_k4")


def test_prune_and_score_prunes_to_k_or_to_the_own_heads_into_a_new_folder(tmp_path, monkeypatch):
    """The real pass-prune-checkpoint on a gated checkpoint with non-binary gates: its own
    heads are z > 0.5 (7 here), or the K largest log_alpha; scoring is left out."""
    import pass_fairseq.experiments.sweep as sweep_module
    from pruning_fixtures import build_gated, checkpoint_state, make_data

    cfg, _, model = build_gated(make_data(str(tmp_path / "toy")))
    ckpt = str(tmp_path / "gated.pt")
    torch.save(checkpoint_state(cfg, model), ckpt)
    monkeypatch.setattr(sweep_module, "score", lambda sweep, checkpoint, work: {"scored": os.path.basename(checkpoint)})
    sweep = Sweep.load(write_config(tmp_path))
    spec = next(r for r in sweep.runs if r.name == "pass-k8-s1")
    own = sweep_module.prune_and_score(sweep, spec, ckpt, "gates", str(tmp_path / "new" / "own"))
    pruned_heads = own.pop("pruned_heads")
    assert own == {"scored": "pruned.pt", "kept_heads": 7, "modules_active": 3}
    assert sum(map(len, pruned_heads.values())) == 7 and sum(1 for v in pruned_heads.values() if v) == 3
    assert os.path.isfile(tmp_path / "new" / "own" / "pruned.pt")
    cut = sweep_module.prune_and_score(sweep, spec, ckpt, "heads", str(tmp_path / "new" / "cut"))
    assert cut["kept_heads"] == sum(map(len, cut["pruned_heads"].values())) == 8
    assert all(set(pruned_heads[m]) <= set(cut["pruned_heads"][m]) for m in pruned_heads)  # the own 7 among the top 8


STRONGEST = dict(CONFIG, runs=CONFIG["runs"] + [
    {"method": "dsp", "heads": [16, 8], "flags": ["--pass-method", "dsp"]},
    {"method": "ste", "heads": [16], "flags": ["--pass-method", "ste"]},
], strongest_baseline={"among": ["dsp", "ste"], "heads": 16, "seeds": [2, 3]})


def _finished(sweep, name, valid):
    spec = next(r for r in sweep.all_runs() if r.name == name)
    write_json(sweep.result_path(spec), {"method": spec.method, "heads": spec.target_heads, "seed": spec.seed,
                                          "valid": {"sacrebleu": valid}, "test": {"sacrebleu": valid},
                                          "kept_heads": spec.target_heads})


def test_the_strongest_baseline_on_valid_gets_more_seeds_once_its_rivals_have_finished(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path, STRONGEST))
    assert sweep.all_runs() == sweep.runs and sweep.strongest_baseline() is None
    for name in ("control-k72-s1", "pass-k16-s1", "pass-k16-s2", "pass-k8-s1", "pass-k8-s2", "dsp-k16-s1"):
        _finished(sweep, name, 14.0)
    assert sweep.strongest_baseline() is None  # ste has not run yet

    done = []

    def fake_run(sw, spec, data):  # ste scores better on valid than dsp
        done.append(spec.name)
        valid = {"ste": 15.0, "dsp": 14.0}.get(spec.method, 1.0)
        return {"valid": {"sacrebleu": valid}, "test": {"sacrebleu": valid}, "kept_heads": spec.target_heads}

    for name in ("ensure_base", "check_base", "write_base_curve"):
        monkeypatch.setattr(sweep_module, name, lambda sw: None)
    monkeypatch.setattr(sweep_module, "shard_data", lambda sw: "data")
    monkeypatch.setattr(sweep_module, "run_one", fake_run)
    assert sweep_module.run_sweep(sweep) == 0
    assert done == ["ste-k16-s1", "dsp-k8-s1", "ste-k16-s2", "ste-k16-s3"]  # the seeds picked up while running
    assert sweep.strongest_baseline() == "ste"
    assert [r.name for r in sweep.all_runs()][-2:] == ["ste-k16-s2", "ste-k16-s3"]


def test_only_runs_the_named_runs_and_methods_in_the_order_named(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path))
    _finished(sweep, "pass-k16-s1", 14.0)
    done = []
    for name in ("ensure_base", "check_base", "write_base_curve"):
        monkeypatch.setattr(sweep_module, name, lambda sw: None)
    monkeypatch.setattr(sweep_module, "shard_data", lambda sw: "data")
    monkeypatch.setattr(sweep_module, "run_one", lambda sw, spec, data: done.append(spec.name) or
                        {"valid": {"sacrebleu": 1.0}, "test": {"sacrebleu": 1.0}, "kept_heads": spec.target_heads})
    assert sweep_module.run_sweep(sweep, ["pass-k8-s2", "control", "pass-k16-s1"]) == 0
    assert done == ["pass-k8-s2", "control-k72-s1"]  # pass-k16-s1 had finished; pass-k16-s2, pass-k8-s1 not named
    assert [s.name for s in sweep_module.selected_runs(sweep.runs, ["pass-k8-s2", "pass"])] == [
        "pass-k8-s2", "pass-k16-s1", "pass-k16-s2", "pass-k8-s1"]  # a named run before its method's others, once


@pytest.mark.parametrize("argv, message", [
    (["--only", "pass,nope"], "--only nope: no such method or run"),
    (["--only", "pass-k16-s1", "--table"], "--table rebuilds the table from every finished run"),
    (["--table", "--no-table"], "--table and --no-table: choose one"),
])
def test_bad_only_is_a_one_line_error(tmp_path, capsys, argv, message):
    from pass_fairseq.cli.sweep import main

    with pytest.raises(SystemExit) as e:
        main([write_config(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_bad_strongest_baseline_config_is_refused(tmp_path):
    bad = dict(STRONGEST, strongest_baseline={"among": ["dsp", "random"], "heads": 16, "seeds": [2]})
    with pytest.raises(JobError, match="no run of random at K = 16"):
        Sweep.load(write_config(tmp_path, bad))


def test_the_strongest_baselines_seeds_that_its_entry_lists_already_are_not_added_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = dict(STRONGEST, strongest_baseline={"among": ["dsp", "ste"], "heads": 16, "seeds": [2, 3]})
    config["runs"] = [dict(r, seeds_at={"16": [1, 2]}) if r["method"] == "dsp" else r for r in config["runs"]]
    sweep = Sweep.load(write_config(tmp_path, config))
    _finished(sweep, "dsp-k16-s1", 15.0)
    _finished(sweep, "ste-k16-s1", 14.0)
    names = [r.name for r in sweep.all_runs()]
    assert names.count("dsp-k16-s2") == 1 and names[-1] == "dsp-k16-s3"


def test_a_prepared_mask_scored_as_is_shares_the_fine_tuned_runs_mask_and_trains_nothing(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    config = dict(CONFIG, runs=[
        {"method": "michel", "heads": [16, 8], "prepare": "michel", "prune": "gates", "flags": []},
        {"method": "michel-as-is", "heads": [16, 8], "prepare": "michel", "train": False, "prune": "gates",
         "flags": []}])
    sweep = Sweep.load(write_config(tmp_path, config))
    runs = {r.name: r for r in sweep.runs}
    mask = os.path.join("work", "masks", "michel-s1", "michel_k16.pt")
    os.makedirs(os.path.dirname(mask))
    torch.save({"model": {}, "optimizer_history": [{"num_updates": 100}]}, mask)
    assert sweep_module.starting_checkpoint(sweep, runs["michel-k16-s1"]) == mask
    assert sweep_module.starting_checkpoint(sweep, runs["michel-as-is-k16-s1"]) == mask

    def no_fine_tune(*args):
        raise AssertionError("a run with train false was fine-tuned")

    monkeypatch.setattr(sweep_module, "fine_tune", no_fine_tune)
    monkeypatch.setattr(sweep_module, "gate_summary", lambda ckpt, k: {"on_target": True, "kept": k, "ckpt": ckpt})
    monkeypatch.setattr(sweep_module, "prune_and_score", lambda sw, spec, ckpt, how, work: {"pruned": (ckpt, how)})
    monkeypatch.setattr(sweep_module, "bench_ratios", lambda sw, ckpts, k, work: {n: {"speedup": 1.5} for n in ckpts})
    result = sweep_module.run_one(sweep, runs["michel-as-is-k16-s1"], "data")
    assert result["selected"] == "michel_k16.pt" and result["finetune_seconds"] == 0.0 and result["updates"] == 100
    assert result["pruned"] == (mask, "gates") and result["gates"]["ckpt"] == mask
    monkeypatch.setattr(sweep_module, "bench_ratios", lambda sw, ckpts, k, work, tables: {n: {"timed": c}
                                                                                         for n, c in ckpts.items()})
    write_json(sweep.result_path(runs["michel-as-is-k16-s1"]), result)
    assert sweep_module.rebench(sweep, ["michel-as-is"]) == 1  # no fine-tune to find: the mask is timed
    assert sweep.result(runs["michel-as-is-k16-s1"])["bench"] == {"timed": mask}


def test_masks_of_one_kind_take_the_same_steps_at_every_seed_and_are_never_remade(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    config = dict(CONFIG, runs=[
        {"method": "michel", "heads": [16, 8], "seeds_at": {"16": [1, 2]}, "prepare": "michel", "prune": "gates",
         "flags": []},
        {"method": "michel-as-is", "heads": [16, 4], "prepare": "michel", "train": False, "prune": "gates",
         "flags": []}])
    sweep = Sweep.load(write_config(tmp_path, config))
    runs = {r.name: r for r in sweep.runs}
    commands = []
    monkeypatch.setattr(sweep_module, "run", lambda cmd, log=None, **kw: commands.append(cmd) or 0)
    monkeypatch.setattr(sweep_module, "check", lambda rc, what, log=None: None)
    path = sweep_module.prepare_mask(sweep, runs["michel-k16-s2"])
    assert path == os.path.join("work", "masks", "michel-s2", "michel_k16.pt")
    cmd = commands[0]
    assert cmd[cmd.index("--heads") + 1] == "16,8,4" and cmd[cmd.index("--seed") + 1] == "2"
    with open(os.path.join("work", "masks", "michel-s2", "michel_k16.pt"), "w") as f:
        f.write("made")
    with pytest.raises(JobError, match="holds masks made without K = 8"):
        sweep_module.prepare_mask(sweep, replace(runs["michel-k16-s2"], target_heads=8))
    assert sweep_module.prepare_mask(sweep, runs["michel-k16-s2"]) == path and len(commands) == 1


def test_no_table_leaves_the_table_to_one_later_call(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module
    from pass_fairseq.cli.sweep import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep_module, "ensure_base", lambda sw: None)
    monkeypatch.setattr(sweep_module, "check_base", lambda sw: None)
    monkeypatch.setattr(sweep_module, "write_base_curve", lambda sw: None)
    monkeypatch.setattr(sweep_module, "shard_data", lambda sw: "data")
    done = []
    monkeypatch.setattr(sweep_module, "_run_and_record", lambda sw, spec, data: done.append(spec.name) or True)
    assert main([write_config(tmp_path), "--only", "control", "--no-table"]) == 0
    assert done == ["control-k72-s1"] and not os.path.exists("results")


def test_base_placeholder_and_own_epochs_give_kd_and_longer_fine_tunes(tmp_path):
    config = dict(CONFIG, runs=CONFIG["runs"] + [
        {"method": "pass-kd", "heads": [16], "flags": ["--pass-target-heads", "{K}", "--kd-teacher", "{base}"]},
        {"method": "control-16ep", "heads": [72], "arch": "stock", "prune": None, "epochs": 16, "flags": []}])
    sweep = Sweep.load(write_config(tmp_path, config))
    runs = {r.name: r for r in sweep.runs}
    assert runs["pass-kd-k16-s1"].flags == ["--pass-target-heads", "16", "--kd-teacher",
                                            os.path.join("work", "base", "checkpoint_last.pt")]
    longer = sweep.finetune_command(runs["control-16ep-k72-s1"], "DATA", "base.pt", "out")
    plain = sweep.finetune_command(runs["control-k72-s1"], "DATA", "base.pt", "out")
    assert longer[longer.index("--max-epoch") + 1] == "16" and plain[plain.index("--max-epoch") + 1] == "3"
    assert [a for a in longer if a != "16"] == [a for a in plain if a != "3"]
    bad = dict(CONFIG, runs=[dict(CONFIG["runs"][0], epochs=0)])
    with pytest.raises(JobError, match='"epochs" must be a number of epochs >= 1'):
        Sweep.load(write_config(tmp_path, bad))


def test_the_strongest_baseline_also_runs_at_other_ks_and_with_a_longer_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = [dict(r, label="ste, tuned") if r["method"] == "ste" else r for r in STRONGEST["runs"]]
    config = dict(STRONGEST, runs=runs, strongest_baseline=dict(STRONGEST["strongest_baseline"], also_heads=[8, 32],
                                                                also_epochs=[6]))
    sweep = Sweep.load(write_config(tmp_path, config))
    _finished(sweep, "dsp-k16-s1", 14.0)
    _finished(sweep, "ste-k16-s1", 15.0)
    extra = [r for r in sweep.all_runs() if r not in sweep.runs]
    assert [r.name for r in extra] == ["ste-k16-s2", "ste-k16-s3", "ste-k8-s1", "ste-k32-s1", "ste-6ep-k16-s1"]
    longer = extra[-1]
    command = sweep.finetune_command(longer, "DATA", "base.pt", "out")
    ste = next(r for r in sweep.runs if r.name == "ste-k16-s1")
    assert command[command.index("--max-epoch") + 1] == "6" and longer.flags == ste.flags
    assert (longer.label, ste.label) == ("ste, tuned, 6 epochs", "ste, tuned")  # its own row in tables and plots
    for bad, says in (({"also_heads": "8"}, '"also_heads" must be a list of numbers >= 1'),
                      ({"also_epoch": [6]}, "not also_epoch")):
        config = dict(STRONGEST, strongest_baseline=dict(STRONGEST["strongest_baseline"], **bad))
        with pytest.raises(JobError, match=says):
            Sweep.load(write_config(tmp_path, config))


def test_the_base_is_fingerprinted_once_and_a_different_base_is_refused(tmp_path, monkeypatch):
    import pass_fairseq.experiments.sweep as sweep_module

    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(write_config(tmp_path))
    os.makedirs("work/base")
    weights = {"w": torch.ones(3)}
    torch.save({"model": weights, "optimizer_history": [{"num_updates": 100}]}, sweep.base_checkpoint)
    first = sweep_module.check_base(sweep)
    with open("results/base.json") as f:
        recorded = json.load(f)
    assert recorded["weights_sha256"] == first and recorded["updates"] == 100
    assert sweep_module.check_base(sweep) == first  # the same base again (another session's, say)
    weights["w"][0] = 2.0
    torch.save({"model": weights, "optimizer_history": [{"num_updates": 100}]}, sweep.base_checkpoint)
    with pytest.raises(JobError, match="is not the one the finished runs in results/runs were fine-tuned from"):
        sweep_module.check_base(sweep)
    os.remove("results/base.json")  # finished runs, but no record of their base: refused too
    _finished(sweep, "control-k72-s1", 14.0)
    with pytest.raises(JobError, match="base.json is missing, but 1 finished runs"):
        sweep_module.check_base(sweep)


def test_longer_budgets_are_compared_with_pass_and_the_control_of_the_same_budget():
    runs = [_run("control", 72, 1, 20.0, pruned=False), _run("control-16ep", 72, 1, 21.0, pruned=False),
            _run("control-kd", 72, 1, 20.5, label="control + KD", pruned=False), _run("pass", 16, 1, 17.0),
            _run("pass-16ep", 16, 1, 19.0), _run("michel-16ep", 16, 1, 18.5), _run("michel", 16, 1, 17.5)]
    rows = {r["method"]: r for r in comparison_rows(runs)}
    assert set(rows) == {"pass", "pass-16ep", "michel-16ep", "michel"}  # the controls are no pruned rows
    assert (rows["michel-16ep"]["test - pass"], rows["michel-16ep"]["test - control"]) == ("-0.50", "-2.50")
    assert (rows["michel"]["test - pass"], rows["michel"]["test - control"]) == ("+0.50", "-2.50")
    assert (rows["pass-16ep"]["test - pass"], rows["pass-16ep"]["test - control"]) == ("-", "-2.00")


def test_the_second_sweeps_config_loads_and_its_tables_rebuild_from_its_run_files(tmp_path):
    results = os.path.join(ROOT, "results", "deb-de-en-v2")
    sweep = Sweep.load(os.path.join(results, "sweep.json"))
    assert {"control", "pass", "pass-constant", "michel", "control-kd"} <= {r.method for r in sweep.runs}
    copy = tmp_path / "v2"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("*.png"))
    write_table(str(copy))
    for name in ("table.md", "table.csv", "tuning.md", "comparison.md"):
        assert (copy / name).read_bytes() == open(os.path.join(results, name), "rb").read(), name
