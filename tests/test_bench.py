"""bench_inference runs end to end on a tiny gated checkpoint and writes its table."""
import csv
import os

import pytest
import torch

from pass_fairseq import bench

from pruning_fixtures import build_gated, checkpoint_state, make_data


@pytest.fixture(scope="module")
def gated_ckpt(tmp_path_factory):
    data = make_data(str(tmp_path_factory.mktemp("toy")))
    cfg, _, model = build_gated(data)
    path = str(tmp_path_factory.mktemp("ckpt") / "gated.pt")
    torch.save(checkpoint_state(cfg, model), path)
    return path


def test_bench_writes_table(gated_ckpt, tmp_path, capsys):
    work = str(tmp_path / "bench")
    assert bench.main([gated_ckpt, "--heads", "8", "--sentences", "4", "--batch-size", "2", "--out-len", "3",
                       "--repeats", "1", "--warmup", "0", "--threads", "1", "--work-dir", work]) == 0
    printed = capsys.readouterr().out
    assert "| pruned K=8 packed |" in printed and "| pruned K=8 topk |" in printed
    with open(os.path.join(work, "bench.csv")) as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"unpruned (stock transformer)", "gated (transformer_pass)", "no attention (all skipped)",
                         "pruned K=8 topk", "pruned K=8 packed"}
    assert float(rows["unpruned (stock transformer)"]["speedup"]) == 1.0
    assert int(rows["pruned K=8 packed"]["kept_heads"]) == 8
    assert int(rows["pruned K=8 packed"]["skipped_modules"]) == 4  # 24 heads, 6 modules of 4
    assert int(rows["no attention (all skipped)"]["skipped_modules"]) == 6
    assert float(rows["pruned K=8 topk"]["time_over_ideal"]) > 0
    assert float(rows["pruned K=8 packed"]["ideal_attn_speedup"]) > 1
    unpruned, pruned = int(rows["unpruned (stock transformer)"]["params"]), int(rows["pruned K=8 topk"]["params"])
    assert unpruned - pruned == 16 * (3 * (32 * 8 + 8) + 32 * 8)  # 16 heads of d=8 removed


def test_bench_rejects_bad_k(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main([gated_ckpt, "--heads", "30", "--work-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "out of range" in capsys.readouterr().err


def test_bench_rejects_data_without_the_split(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main([gated_ckpt, "--heads", "8", "--data", str(tmp_path), "--work-dir", str(tmp_path / "bench")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no test split" in err and "--data" in err and "Traceback" not in err


def test_attention_clock_times_cache_reorder_and_detaches(gated_ckpt):
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([gated_ckpt])
    model = models[0].eval()
    clock = bench.AttentionClock(model, bench.Timer(torch.device("cpu")))
    name, module = bench.attention_modules(model)[-1]
    state = {}
    module.reorder_incremental_state(state, torch.arange(2))
    assert clock.totals[name] > 0
    clock.remove()
    assert "reorder_incremental_state" not in vars(module)
