"""scripts/gpu_sweep.sh, with a stand-in pass-sweep on PATH that logs its calls (and hands
``--independent-methods`` to the real one): the first method runs alone, the others side by
side after it, the table once at the end; configs whose methods depend on each other are
refused."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_sweep.sh")
#: logs "start ARGS" and "end ARGS" (the base one after a pause), and fails for method "bad"
FAKE = """#!/bin/sh
case "$*" in *--independent-methods*)
  exec "$PYTHON" -c 'import sys; from pass_fairseq.cli.sweep import main; sys.exit(main())' "$@";;
esac
echo "start $*" >> "$CALLS"
case "$*" in *"--only base"*) sleep 1;; esac
echo "end $*" >> "$CALLS"
case "$*" in *"--only bad"*) exit 1;; esac
exit 0
"""


def _run(tmp_path, runs, **config):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)  # the stand-in first on PATH
    fake = bin_dir / "pass-sweep"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    cfg = tmp_path / "sweep.json"
    paths = {k: str(tmp_path / k) for k in ("corpus", "workdir", "results")}
    cfg.write_text(json.dumps({**paths, "base": {"dir": str(tmp_path / "base"), "updates": 1},
                               "finetune": {"shards": 1, "epochs": 1, "lr": 1e-3, "warmup": 1, "max_tokens": 100},
                               **config, "runs": runs}))
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls), PYTHON=sys.executable)
    proc = subprocess.run(["bash", SCRIPT, str(tmp_path / "logs"), str(cfg)], env=env, capture_output=True, text=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [line.replace(f" {cfg}", "") for line in lines]


def test_the_base_runs_alone_first_then_the_others_side_by_side_then_the_table(tmp_path):
    runs = [{"method": m, "heads": [16]} for m in ("pass", "base", "control", "michel")]
    runs[3]["prepare"] = "michel"
    proc, calls = _run(tmp_path, runs)
    assert proc.returncode == 0, proc.stderr
    assert calls[:2] == ["start --only base --no-table", "end --only base --no-table"]
    assert sorted(calls[2:-2]) == sorted(f"{e} --only {m} --no-table" for m in ("pass", "control", "michel")
                                         for e in ("start", "end"))
    assert calls[-2:] == ["start --table", "end --table"]


def test_a_failed_first_method_stops_the_rest_and_a_failed_other_is_reported(tmp_path):
    proc, calls = _run(tmp_path, [{"method": "bad", "heads": [16]}, {"method": "pass", "heads": [16]}])
    assert proc.returncode == 1 and "bad failed (the others need its base and shards)" in proc.stderr
    assert calls == ["start --only bad --no-table", "end --only bad --no-table"]
    proc, calls = _run(tmp_path, [{"method": "base", "heads": [72]}, {"method": "bad", "heads": [16]}])
    assert proc.returncode == 1 and calls[-2:] == ["start --table", "end --table"]


def test_methods_that_depend_on_each_other_are_refused(tmp_path):
    runs = [{"method": "pass", "heads": [16], "tries": {"a": []}}, {"method": "passconc", "heads": [16],
                                                                    "tries_from": "pass"},
            {"method": "michel", "heads": [16], "prepare": "michel"},
            {"method": "michel-as-is", "heads": [16], "prepare": "michel"}]
    proc, calls = _run(tmp_path, runs, strongest_baseline={"among": ["michel"], "heads": 16, "seeds": [2]})
    assert proc.returncode == 2 and calls == []
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("pass_fairseq: error: ") and "run them in one pass-sweep" in err
    assert "pass has tuning tries; passconc takes pass's tuning tries" in err
    assert "several methods prepare michel masks" in err and "strongest_baseline adds runs" in err


def test_the_committed_gpu_config_runs_side_by_side(tmp_path):
    with open(os.path.join(ROOT, "results", "deb-de-en-512", "sweep.json"), encoding="utf-8") as f:
        config = json.load(f)
    proc, calls = _run(tmp_path, config.pop("runs"), **config)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "start --only base --no-table" and len(calls) == 2 * 5 + 2
