"""pass-bench-inference: end to end on a tiny gated checkpoint, and its summary arithmetic
on made-up timings."""
import csv
import math
import os

import pytest
import torch

from pass_fairseq.bench.summary import ModelTiming, summarize
from pass_fairseq.bench.timing import AttentionClock, Timer, attention_modules
from pass_fairseq.gates import REOPEN_KEY, SUBSET_K_KEY
from pass_fairseq.cli import bench_inference

from pruning_fixtures import CLOSED, MASK, OPEN, build_gated, checkpoint_state, make_data


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return make_data(str(tmp_path_factory.mktemp("toy")))


def _save_gated(data, path, **kwargs):
    cfg, _, model = build_gated(data, **kwargs)
    torch.save(checkpoint_state(cfg, model), path)
    return path


@pytest.fixture(scope="module")
def gated_ckpt(toy_data, tmp_path_factory):
    return _save_gated(toy_data, str(tmp_path_factory.mktemp("ckpt") / "gated.pt"))


def test_bench_writes_table(gated_ckpt, tmp_path, capsys):
    work = str(tmp_path / "bench")
    assert bench_inference.main([gated_ckpt, "--heads", "8", "--sentences", "4,2", "--batch-size", "2,1", "--out-len",
                                 "3", "--repeats", "1", "--warmup", "0", "--threads", "1", "--work-dir", work]) == 0
    printed = capsys.readouterr().out
    assert "| pruned K=8 packed |" in printed and "| pruned K=8 topk |" in printed
    assert "### Batch 2" in printed and "### Batch 1" in printed and printed.count("| decoder cross |") == 2
    with open(os.path.join(work, "bench.csv")) as f:
        every = list(csv.DictReader(f))
    assert [r["batch"] for r in every] == ["2"] * 5 + ["1"] * 5
    rows = {r["model"]: r for r in every if r["batch"] == "2"}
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


def test_bench_times_other_checkpoints_pruned_with_their_own_gates_in_the_same_run(gated_ckpt, toy_data, tmp_path,
                                                                                   capsys):
    packed = {name: [OPEN] * 4 if name == "encoder.layers.0.self_attn" else [CLOSED] * 4 for name in MASK}
    packed["decoder.layers.1.encoder_attn"] = [OPEN, CLOSED, CLOSED, CLOSED]
    other = _save_gated(toy_data, str(tmp_path / "other.pt"), mask=packed, seed=1)
    state = torch.load(other, weights_only=False)  # as subset gates (DSP, STE) hold it: other buffers
    for name in MASK:
        del state["model"][name + REOPEN_KEY]
        state["model"][name + SUBSET_K_KEY] = torch.tensor(5)
    torch.save(state, other)
    work = str(tmp_path / "bench")
    assert bench_inference.main([gated_ckpt, "--name", "a", "--also", f"b={other}", "--heads", "5", "--layouts",
                                 "topk", "--sentences", "2", "--out-len", "2", "--repeats", "1", "--warmup", "0",
                                 "--threads", "1", "--work-dir", work]) == 0
    with open(os.path.join(work, "bench.csv")) as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"unpruned (stock transformer)", "gated (transformer_pass)", "no attention (all skipped)",
                         "pruned K=5 topk a", "pruned K=5 topk b"}
    # a: the five open heads of MASK, in 3 modules; b: its own five, in 2 (the other 4 skipped)
    assert [rows[f"pruned K=5 topk {n}"]["skipped_modules"] for n in "ab"] == ["3", "4"]
    assert all(float(rows[f"pruned K=5 topk {n}"]["time_over_ideal"]) > 0 for n in "ab")
    assert os.path.isfile(os.path.join(work, "pruned_k5_topk_b.pt"))


@pytest.mark.parametrize("also, message", [
    ("b", "give NAME=GATED.pt"), ("a b=x.pt", "give NAME=GATED.pt"), ("a={gated}", "the name a is used twice"),
    ("b=missing.pt", "no such checkpoint"), ("b={reshaped}", "shapes differ"), ("a/b={gated}", "give NAME=GATED.pt"),
])
def test_bench_rejects_bad_also(gated_ckpt, toy_data, tmp_path, capsys, also, message):
    state = torch.load(gated_ckpt, weights_only=False)
    state["model"]["encoder.embed_tokens.weight"] = state["model"]["encoder.embed_tokens.weight"][:, :16]
    torch.save(state, tmp_path / "reshaped.pt")
    also = also.format(gated=gated_ckpt, reshaped=tmp_path / "reshaped.pt")
    with pytest.raises(SystemExit) as exc:
        bench_inference.main([gated_ckpt, "--name", "a", "--also", also, "--heads", "8", "--work-dir",
                              str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1


def test_bench_rejects_a_name_that_cannot_name_a_file(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_inference.main([gated_ckpt, "--name", "../a", "--heads", "8", "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--name ../a: give letters, digits" in err and err.count("\n") == 1


def test_bench_rejects_mismatched_batch_and_sentence_lists(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_inference.main([gated_ckpt, "--batch-size", "64,1", "--sentences", "8,8,8", "--work-dir", str(tmp_path)])
    assert exc.value.code == 2 and "one per --batch-size" in capsys.readouterr().err


def test_bench_rejects_bad_k(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_inference.main([gated_ckpt, "--heads", "30", "--work-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "out of range" in capsys.readouterr().err


def test_bench_rejects_data_without_the_split(gated_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_inference.main([gated_ckpt, "--heads", "8", "--data", str(tmp_path), "--work-dir",
                              str(tmp_path / "bench")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no test split" in err and "--data" in err and "Traceback" not in err


def test_attention_clock_times_cache_reorder_and_detaches(gated_ckpt):
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([gated_ckpt])
    model = models[0].eval()
    clock = AttentionClock(model, Timer(torch.device("cpu")))
    name, module = attention_modules(model)[-1]
    state = {}
    module.reorder_incremental_state(state, torch.arange(2))
    assert clock.totals[name] > 0
    clock.remove()
    assert "reorder_incremental_state" not in vars(module)


def timing(label, kind, e2e, attn, per_module, kept, calls=None):
    return ModelTiming(label, kind, e2e, attn, per_module, tokens=300, kept=kept, params=1000, file_bytes=2**20,
                       calls=calls or {})


def test_cost_model_fits_fixed_and_per_head_cost_per_module_kind():
    """Decoder cross modules cost 30 + 10 x heads us per call (100 calls a pass), the stock
    4-head module 80 us, a skipped one 2 us; encoder modules have a single point (no fit)."""
    from pass_fairseq.bench.summary import cost_model, fit_line

    cross, enc = [f"decoder.layers.{i}.encoder_attn" for i in range(3)], "encoder.layers.0.self_attn"
    heads = dict({m: 4 for m in cross}, **{enc: 4})
    calls = dict({m: 100 for m in cross}, **{enc: 2})

    def secs(us_per_call, n):
        return [us_per_call * n / 1e6] * 3

    stock = timing("unpruned", "unpruned", [1.0] * 3, [0.1] * 3, dict({m: secs(80, 100) for m in cross},
                   **{enc: secs(50, 2)}), None, calls)
    pruned = timing("pruned", "pruned", [1.0] * 3, [0.1] * 3,
                    {cross[0]: secs(40, 100), cross[1]: secs(60, 100), cross[2]: secs(2, 100), enc: secs(20, 2)},
                    {cross[0]: 1, cross[1]: 3, cross[2]: 0, enc: 1}, calls)
    gated = timing("gated", "gated", [1.0] * 3, [0.1] * 3, dict({m: secs(65, 100) for m in cross},
                   **{enc: secs(45, 2)}), None, calls)
    rows = {r["kind"]: r for r in cost_model([stock, gated, pruned], heads)}
    assert (rows["decoder cross"]["fixed_us"], rows["decoder cross"]["per_head_us"]) == (30.0, 10.0)
    assert rows["decoder cross"]["gated_us"] == 65.0 and rows["encoder self"]["gated_us"] == 45.0
    assert rows["decoder cross"]["fit_full_us"] == 70.0 and rows["decoder cross"]["stock_us"] == 80.0
    assert rows["decoder cross"]["skipped_us"] == 2.0 and rows["decoder cross"]["calls"] == 100
    assert rows["encoder self"]["fixed_us"] == "" and rows["encoder self"]["points"] == 1
    assert "decoder self" not in rows
    assert fit_line([(1, 1.0), (1, 2.0)]) is None


def test_summary_on_made_up_timings():
    """Unpruned: 10 s, 4 s of it attention, 2 s in each of two 4-head modules A and B;
    no attention: 6 s; pruned, 2 heads kept in A and none in B: 7.5 s, 1.25 s attention.
    Ideal attention = 2 x 2/4 + 2 x 0/4 = 1 s, ideal = 6 + 1 = 7 s. Medians of 3 repeats."""
    heads = {"A": 4, "B": 4}
    timings = [
        timing("unpruned", "unpruned", [11.0, 10.0, 9.0], [4.0, 4.5, 3.5], {"A": [2.0, 2.5, 1.5], "B": [2.0] * 3},
               None),
        timing("no attention", "noattn", [6.0, 6.5, 5.5], [0.0] * 3, {}, {"A": 0, "B": 0}),
        timing("pruned", "pruned", [7.0, 7.5, 8.0], [1.25] * 3, {"A": [1.25] * 3}, {"A": 2, "B": 0}),
    ]
    summary = summarize(timings, heads, sentences=50)
    base, noattn, pruned = summary.rows
    assert summary.base_attn_share == pytest.approx(0.4)
    assert summary.noattn_over_base == pytest.approx(0.6)
    assert (base["kept_heads"], base["skipped_modules"], base["speedup"], base["attn_share"]) == (8, 0, 1.0, 0.4)
    assert (base["sent_per_s"], base["tok_per_s"], base["file_MB"]) == (5.0, 30.0, 1.0)
    assert base["time_over_ideal"] == base["ideal_speedup"] == ""  # ideal columns: pruned models only
    assert (noattn["kept_heads"], noattn["skipped_modules"], noattn["speedup"]) == (0, 2, 1.667)
    assert math.isinf(noattn["attn_speedup"])
    assert (pruned["kept_heads"], pruned["skipped_modules"]) == (2, 1)
    assert pruned["speedup"] == round(10 / 7.5, 3) == 1.333
    assert pruned["attn_speedup"] == 3.2  # 4 / 1.25
    assert pruned["attn_share"] == round(1.25 / 7.5, 3)
    assert pruned["ideal_attn_speedup"] == 4.0  # 4 / 1
    assert pruned["ideal_speedup"] == round(10 / 7, 3) == 1.429
    assert pruned["time_over_ideal"] == round(7.5 / 7, 3) == 1.071
    assert (base["spread"], pruned["spread"]) == (0.2, round(1.0 / 7.5, 3))  # (max - min) / median
    assert pruned["time_over_gated_ideal"] == ""  # no gated model in this run
    # with a gated model whose module A takes 1 s (its own path, faster than stock's 2 s):
    # gated ideal = 6 + 1 x 2/4 + 2 x 0/4 = 6.5 s
    gated = timing("gated", "gated", [9.0] * 3, [3.0] * 3, {"A": [1.0] * 3, "B": [2.0] * 3}, None)
    rows = summarize([*timings, gated], heads, sentences=50).rows
    assert rows[2]["time_over_gated_ideal"] == round(7.5 / 6.5, 3) and rows[2]["time_over_ideal"] == 1.071
    assert rows[3]["time_over_gated_ideal"] == ""  # ideal columns: pruned models only
