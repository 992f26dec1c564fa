"""pass-bench-training: a few updates of a tiny stock and PASS model on the toy task."""
import csv
import math

import pytest

from pass_fairseq.bench.training import summarize
from pass_fairseq.cli import bench_training

TINY = ["--layers", "2", "--width", "64", "--ffn", "128", "--target-heads", "4", "--max-tokens", "500"]


def test_bench_training_table(toy_data, tmp_path, capsys):
    out = tmp_path / "train.csv"
    assert bench_training.main([toy_data, *TINY, "--updates", "2", "--repeats", "2", "--warmup", "1",
                                "--threads", "1", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| stock (transformer_iwslt_de_en, adam) |" in printed
    assert "| PASS (transformer_pass_iwslt, pass_adam) |" in printed
    assert "device cpu, threads 1, fp32; 2+2 layers" in printed
    with open(out) as f:
        stock, gated = csv.DictReader(f)
    assert float(stock["time_over_stock"]) == 1.0
    ratio = float(gated["time_over_stock"])
    assert math.isfinite(ratio) and ratio > 0
    assert printed.rstrip().endswith(f"PASS update / stock update: {gated['time_over_stock']}")


def test_bench_training_times_distillation_as_a_third_model(toy_data, tmp_path, capsys):
    out = tmp_path / "train.csv"
    assert bench_training.main([toy_data, *TINY, "--kd", "--updates", "2", "--repeats", "2", "--warmup", "1",
                                "--threads", "1", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == bench_training.LABELS
    kd, gated = float(rows[2]["time_over_stock"]), float(rows[1]["time_over_stock"])
    assert f"PASS + KD update / stock update: {rows[2]['time_over_stock']}; / PASS update: {round(kd / gated, 3)}" \
        in printed


@pytest.mark.parametrize("argv, message", [
    (["--target-heads", "25"], "the model has 24 heads"),
    (["--fp16"], "--fp16 needs --device cuda"),
    (["--width", "66"], "not a multiple of --heads"),
    (["--stock-no-flatten-grads"], "add --fp16"),
])
def test_bench_training_rejects_bad_flags(toy_data, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench_training.main([toy_data, "--layers", "2", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_training_needs_a_train_split(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_training.main([str(tmp_path)])
    assert exc.value.code == 2
    assert "no train split" in capsys.readouterr().err


def test_training_summary():
    """10 updates of 5,000 tokens; stock repeats 1.0, 1.2, 1.1 s (median 1.1), PASS 1.2,
    1.1, 1.155 s (median 1.155): 105 % of the stock update."""
    stock, gated = summarize(["stock", "PASS"], [[1.0, 1.2, 1.1], [1.2, 1.1, 1.155]], updates=10, tokens=5000)
    assert stock == {"model": "stock", "ms_per_update": 110.0, "tok_per_s": 4545, "time_over_stock": 1.0,
                     "spread": round(0.2 / 1.1, 3)}
    assert gated["ms_per_update"] == 115.5 and gated["time_over_stock"] == 1.05
    assert gated["tok_per_s"] == round(5000 / 1.155) and gated["spread"] == round(0.1 / 1.155, 3)
