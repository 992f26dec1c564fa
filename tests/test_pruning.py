"""Pruning a gated checkpoint: head selection, exactness of the pruned and stock formats,
incremental decoding in pruned and skipped modules, and the converter's CLI errors."""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from pass_fairseq.cli import prune_checkpoint as pc
from pass_fairseq.modules.pruned_attention import PrunedMultiheadAttention
from pass_fairseq.pruning import (PruningError, packed_selection, removed_parameter_count,
                                  select_heads)

from pruning_fixtures import MASK, build_gated, checkpoint_state, log_probs, make_data, sample_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = ["-m", "pass_fairseq.cli.prune_checkpoint"]
EXPECTED_OPEN = {name: [h for h, v in enumerate(vals) if v > 0] for name, vals in MASK.items()}


# ---- pure head selection --------------------------------------------------------------
def test_select_top_k_ranks_by_log_alpha_with_ties_by_module_then_head():
    las = [torch.tensor([5.0, 5.0, -1.0]), torch.tensor([5.0, 7.0, 0.0])]
    assert select_heads(las, target_heads=1) == [[], [1]]
    assert select_heads(las, target_heads=3) == [[0, 1], [1]]
    assert select_heads(las, target_heads=4) == [[0, 1], [0, 1]]
    assert select_heads(las, target_heads=5) == [[0, 1], [0, 1, 2]]


def test_select_threshold_and_default_binary():
    las = [torch.tensor([6.0, -6.0, 0.5]), torch.tensor([-6.0, -6.0, 6.0])]
    assert select_heads(las, threshold=0.5) == [[0, 2], [2]]
    assert select_heads(las, threshold=0.7) == [[0], [2]]
    binary = [torch.tensor([6.0, -6.0]), torch.tensor([-6.0, -6.0])]
    assert select_heads(binary) == [[0], []]
    with pytest.raises(PruningError, match="neither 0 nor 1"):
        select_heads(las)


@pytest.mark.parametrize("k", [0, -1, 7])
def test_select_top_k_out_of_range(k):
    with pytest.raises(PruningError, match="out of range"):
        select_heads([torch.zeros(3), torch.zeros(3)], target_heads=k)


def test_packed_selection_fills_whole_modules():
    las = [torch.tensor([3.0, 3.0, 3.0, -5.0]), torch.tensor([4.0, -5.0, 4.0, -5.0]), torch.tensor([1.0, 1.0, 1.0, 1.0])]
    # sums: 4, -2, 4 -> module 0 then 2 (tie: earlier first), then 1
    assert packed_selection(las, 6) == [[0, 1, 2, 3], [], [0, 1]]


# ---- models built in process -----------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(str(tmp_path_factory.mktemp("toy")))


@pytest.fixture(scope="module")
def gated(data):
    cfg, task, model = build_gated(data)
    return cfg, task, model


@pytest.fixture(scope="module")
def gated_ckpt(gated, tmp_path_factory):
    cfg, _, model = gated
    path = str(tmp_path_factory.mktemp("ckpt") / "gated.pt")
    torch.save(checkpoint_state(cfg, model), path)
    return path


def load_pruned(path, data):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
    return models[0].eval(), task


@pytest.fixture(scope="module")
def pruned_ckpt(gated_ckpt, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pruned") / "pruned.pt")
    assert pc.main([gated_ckpt, out, "--threshold", "0.5"]) == 0
    return out


def test_pruned_checkpoint_structure(gated, gated_ckpt, pruned_ckpt, data):
    _, _, gated_model = gated
    state = torch.load(pruned_ckpt, weights_only=True)
    assert state["last_optimizer_state"] is None
    assert not any("gate" in k or "conf_" in k or k.startswith("pass_") for k in state["model"])
    kept = json.loads(state["cfg"]["model"].pass_pruned_heads)
    expected = {name: [h for h, v in enumerate(vals) if v > 0] for name, vals in MASK.items()}
    assert kept == expected
    model, _ = load_pruned(pruned_ckpt, data)
    assert type(model).__name__ == "TransformerPassPrunedModel"
    modules = dict(model.pruned_attentions())
    assert [n for n, m in modules.items() if m.skipped] == [
        "encoder.layers.0.self_attn", "decoder.layers.0.encoder_attn", "decoder.layers.1.self_attn"]
    assert modules["decoder.layers.1.encoder_attn"].q_proj.weight.shape == (3 * 8, 32)
    # parameters: unpruned minus exactly the removed heads' q/k/v rows and out_proj columns
    gated_sd = gated_model.state_dict()
    dense = sum(p.numel() for n, p in gated_model.named_parameters() if "gate" not in n)
    removed = removed_parameter_count(gated_sd, expected)
    assert sum(p.numel() for p in model.parameters()) == dense - removed
    assert os.path.getsize(pruned_ckpt) < os.path.getsize(gated_ckpt)


def test_pruned_log_probs_equal_gated(gated, pruned_ckpt, data):
    _, task, gated_model = gated
    model, _ = load_pruned(pruned_ckpt, data)
    batch = sample_batch(task)
    assert batch["net_input"]["src_tokens"].eq(task.source_dictionary.pad()).any(), "want padding in the batch"
    ref, got = log_probs(gated_model, batch), log_probs(model, batch)
    keep = batch["target"].ne(task.target_dictionary.pad())
    assert (ref - got)[keep].abs().max().item() < 1e-5
    # the mask matters: an unmasked (all heads open) model gives other outputs
    _, _, dense = build_gated(data, mask={n: [6.0] * 4 for n in MASK})
    assert (log_probs(dense, batch) - ref)[keep].abs().max().item() > 1e-2


def _generate(task, model, batch, beam=5):
    gen = task.build_generator([model], _gen_args(beam))
    with torch.no_grad():
        hypos = task.inference_step(gen, [model], batch)
    return [[(h["tokens"].tolist(), h["score"].item()) for h in sent] for sent in hypos]


def _assert_same_beams(ref, got):
    """The same hypotheses (tokens) for every sentence, scores within 1e-4."""
    assert [[t for t, _ in s] for s in got] == [[t for t, _ in s] for s in ref]
    for rs, gs in zip(ref, got):
        for (_, a), (_, b) in zip(rs, gs):
            assert abs(a - b) < 1e-4


def _gen_args(beam):
    from argparse import Namespace

    return Namespace(beam=beam, max_len_a=0, max_len_b=12, min_len=1, unnormalized=False, lenpen=1.0, unkpen=0.0,
                     temperature=1.0, match_source_len=False, no_repeat_ngram_size=0, sampling=False,
                     sampling_topk=-1, sampling_topp=-1.0, diverse_beam_groups=-1, diverse_beam_strength=0.5,
                     diversity_rate=-1.0, constraints=None, prefix_size=0, print_alignment=None, score_reference=False,
                     iter_decode_max_iter=10, iter_decode_eos_penalty=0.0, iter_decode_force_max_iter=False,
                     iter_decode_with_beam=1, iter_decode_with_external_reranker=False, retain_iter_history=False,
                     retain_dropout=False, decoding_format=None, nbest=beam)


def test_pruned_beam_search_equals_gated(gated, pruned_ckpt, data):
    _, task, gated_model = gated
    model, _ = load_pruned(pruned_ckpt, data)
    batch = sample_batch(task, n=8)
    _assert_same_beams(_generate(task, gated_model, batch), _generate(task, model, batch))


def test_beam_search_shares_the_encoder_rows_and_matches_stock(gated, gated_ckpt, data, tmp_path):
    """fairseq's generator gives the plugin's models the beam size (the stock transformer
    has no set_beam_size): their encoder attention keeps one copy per sentence, and beam
    search still gives the stock model's hypotheses and scores (a finished sentence leaving
    the batch: test_gated_attention). A full forward afterwards (training, validation) does
    not fold the batch."""
    _, task, gated_model = gated
    stock_path = str(tmp_path / "stock.pt")
    assert pc.main([gated_ckpt, stock_path, "--threshold", "0.5", "--format", "stock"]) == 0
    stock, _ = load_pruned(stock_path, data)
    assert type(stock).__name__ == "TransformerModel"
    batch = sample_batch(task, n=8)
    before = log_probs(gated_model, batch)
    ref, got = _generate(task, stock, batch), _generate(task, gated_model, batch)
    cross = [m for n, m in gated_model.named_modules() if n.endswith("encoder_attn")]
    assert cross and all(m.beam_size == 5 for m in cross)
    assert all(m.beam_size == 1 for n, m in stock.named_modules() if n.endswith("encoder_attn"))
    _assert_same_beams(ref, got)
    assert torch.equal(log_probs(gated_model, batch), before)


def test_incremental_decoding_matches_full_forward(pruned_ckpt, data):
    """Step-by-step decoding with the key/value cache (pruned and skipped modules), with a
    beam reorder in the middle, equals the full teacher-forced forward."""
    model, task = load_pruned(pruned_ckpt, data)
    batch = sample_batch(task, n=4)
    net = batch["net_input"]
    # target histories without padding (padding is masked differently in a full pass)
    vocab = task.target_dictionary
    gen = torch.Generator().manual_seed(0)
    prev = torch.randint(vocab.nspecial, len(vocab), (net["src_tokens"].size(0), 7), generator=gen)
    prev[:, 0] = vocab.eos()
    beam = 2
    with torch.no_grad():
        enc = model.encoder(net["src_tokens"], net["src_lengths"])
        order = torch.arange(prev.size(0)).repeat_interleave(beam)
        enc = model.encoder.reorder_encoder_out(enc, order)
        prev = prev.index_select(0, order)
        # beams of a sentence swap their histories at step 3
        swap = torch.arange(prev.size(0)).view(-1, beam).flip(1).reshape(-1)
        history = prev.clone()
        history[:, :3] = prev.index_select(0, swap)[:, :3]
        full = model.decoder(history, encoder_out=enc)[0]
        model.decoder.set_beam_size(beam)
        state = {}
        steps = []
        for t in range(prev.size(1)):
            if t == 3:
                model.decoder.reorder_incremental_state_scripting(state, swap)
                steps = [s.index_select(0, swap) for s in steps]
            tokens = (prev if t < 3 else history)[:, : t + 1]
            steps.append(model.decoder(tokens, encoder_out=enc, incremental_state=state)[0])
        inc = torch.cat(steps, dim=1)
    assert (full - inc).abs().max().item() < 1e-5
    assert any(m.skipped for _, m in model.pruned_attentions())


def test_skipped_module_returns_its_bias():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "zero-element tensors" warning on every load of a pruned model
        m = PrunedMultiheadAttention(16, [], head_dim=4, self_attention=True).eval()
    torch.nn.init.normal_(m.out_proj.bias)
    out, w = m(torch.randn(5, 3, 16), None, None)
    assert w is None and out.shape == (5, 3, 16)
    assert torch.equal(out, m.out_proj.bias.expand(5, 3, 16))
    assert sum(p.numel() for p in m.parameters()) == 16


# ---- stock format ----------------------------------------------------------------------
STOCK_LOADER = textwrap.dedent("""
    import sys, torch
    from fairseq import checkpoint_utils
    ckpt, data, batch_path, out_path = sys.argv[1:]
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data})
    assert not any(m.startswith("pass_fairseq") for m in sys.modules), "the plugin was imported"
    model = models[0].eval()
    assert type(model).__name__ == "TransformerModel", type(model)
    net = torch.load(batch_path)
    with torch.no_grad():
        out = model(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"])
        torch.save(model.get_normalized_probs(out, log_probs=True), out_path)
""")


def test_stock_checkpoint_loads_without_plugin_and_matches(gated, gated_ckpt, data, tmp_path):
    _, task, gated_model = gated
    out = str(tmp_path / "stock.pt")
    assert pc.main([gated_ckpt, out, "--threshold", "0.5", "--format", "stock"]) == 0
    state = torch.load(out, weights_only=True)
    assert isinstance(state["cfg"]["model"], dict) and state["cfg"]["model"]["_name"] == "transformer"
    batch = sample_batch(task)
    torch.save(batch["net_input"], tmp_path / "batch.pt")
    env = dict(os.environ, PYTHONPATH="")  # nothing that would bring the plugin in
    proc = subprocess.run([sys.executable, "-c", STOCK_LOADER, out, data, str(tmp_path / "batch.pt"),
                           str(tmp_path / "lp.pt")], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "lp.pt")
    keep = batch["target"].ne(task.target_dictionary.pad())
    assert (got - log_probs(gated_model, batch))[keep].abs().max().item() < 1e-5


# ---- converter errors --------------------------------------------------------------------
def _fails(capsys, argv, pattern):
    with pytest.raises(SystemExit) as exc:
        pc.main([*argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pass_fairseq: error: "), err
    assert pattern in err[0], err[0]


def test_converter_errors(gated_ckpt, tmp_path, capsys):
    out = str(tmp_path / "out.pt")
    _fails(capsys, [gated_ckpt, out, "--heads", "0"], "out of range")
    _fails(capsys, [gated_ckpt, out, "--heads", "25"], "out of range")
    _fails(capsys, [gated_ckpt, out], "neither 0 nor 1")
    _fails(capsys, [gated_ckpt, gated_ckpt, "--heads", "4"], "OUT is IN")
    _fails(capsys, [gated_ckpt, out, "--heads", "4", "--threshold", "0.5"], "not allowed with")
    stock = str(tmp_path / "stock.pt")
    assert pc.main([gated_ckpt, stock, "--heads", "4", "--format", "stock"]) == 0
    capsys.readouterr()
    _fails(capsys, [stock, out, "--heads", "4"], "no gates")
    assert not os.path.exists(out)
    assert sorted(os.listdir(tmp_path)) == ["stock.pt"]  # no temp file left behind


def test_top_k_conversion_keeps_k_heads(gated_ckpt, tmp_path):
    out = str(tmp_path / "k5.pt")
    assert pc.main([gated_ckpt, out, "--heads", "5"]) == 0
    state = torch.load(out, weights_only=True)
    assert sum(len(v) for v in state["pass_pruned_heads"].values()) == 5


def test_cli_script_runs(gated_ckpt, tmp_path):
    before = os.path.getmtime(gated_ckpt)
    out = str(tmp_path / "cli.pt")
    proc = subprocess.run([sys.executable, *SCRIPT, gated_ckpt, out, "--heads", "99"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "pass_fairseq: error: --heads 99 is out of range: the model has 24 heads, give 1..24"], proc.stderr
    proc = subprocess.run([sys.executable, *SCRIPT, gated_ckpt, out, "--threshold", "0.5"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(out) and os.path.getmtime(gated_ckpt) == before


def _cli_generate(data, ckpt, *extra):
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-generate")
    return subprocess.run([exe, data, "--user-dir", os.path.join(ROOT, "pass_fairseq"), "--path", ckpt,
                           "--task", "translation", "--source-lang", "src", "--target-lang", "tgt",
                           "--gen-subset", "test", "--beam", "5", "--nbest", "5", "--batch-size", "16",
                           "--max-len-a", "0", "--max-len-b", "12", "--num-workers", "0",
                           "--required-batch-size-multiple", "1", *extra],
                          capture_output=True, text=True)


def _cli_hypotheses(data, ckpt):
    proc = _cli_generate(data, ckpt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hyps = sorted(line.split("\t")[::2] for line in proc.stdout.splitlines() if line.startswith("H-"))
    assert len(hyps) == 12 * 5
    return hyps


def test_fairseq_generate_alignments_of_gated_and_pruned_agree(gated_ckpt, pruned_ckpt, data):
    """--print-alignment soft: both average the alignment layer's weights over the heads
    that reach the output (heads 0, 1 and 3 of the last encoder attention)."""
    lines = {}
    for name, ckpt in (("gated", gated_ckpt), ("pruned", pruned_ckpt)):
        proc = _cli_generate(data, ckpt, "--print-alignment", "soft")
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines[name] = sorted(line.split("\t") for line in proc.stdout.splitlines() if line.startswith("A-"))
    assert len(lines["gated"]) == 12 * 5 and len(lines["pruned"]) == 12 * 5
    def weights(text):  # one comma-separated row of source weights per target token
        return torch.tensor([[float(v) for v in row.split(",")] for row in text.split()])

    for (gid, gated), (pid, pruned) in zip(lines["gated"], lines["pruned"]):
        assert gid == pid and torch.allclose(weights(gated), weights(pruned), atol=2e-6)  # printed to 6 places


def test_alignment_from_a_skipped_alignment_layer_is_a_one_line_error(data, tmp_path, capsys):
    from omegaconf import OmegaConf

    mask = dict(MASK, **{"decoder.layers.1.encoder_attn": [-6.0] * 4})
    cfg, _, model = build_gated(data, mask=mask)
    path = str(tmp_path / "gated.pt")
    torch.save(checkpoint_state(cfg, model), path)
    assert pc.main([path, str(tmp_path / "pruned.pt"), "--threshold", "0.5"]) == 0
    capsys.readouterr()
    pruned, _ = load_pruned(str(tmp_path / "pruned.pt"), data)
    generation = OmegaConf.create({"generation": {"print_alignment": "hard", "beam": 5}})
    for m in (model, pruned):
        with pytest.raises(SystemExit) as e:
            m.prepare_for_inference_(generation)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--print-alignment needs the attention weights" in err and err.count("\n") == 1


def test_fairseq_generate_cli_same_hypotheses(gated_ckpt, pruned_ckpt, data):
    """fairseq-generate --user-dir pass_fairseq, beam 5: the pruned checkpoint gives the
    gated checkpoint's hypotheses (ids and tokens; scores are printed rounded)."""
    assert _cli_hypotheses(data, pruned_ckpt) == _cli_hypotheses(data, gated_ckpt)
