import pytest
import torch
from fairseq.modules.multihead_attention import MultiheadAttention

from pass_fairseq.modules.gated_attention import GatedMultiheadAttention

E, H, T, S, B = 16, 4, 5, 7, 3


def _pair(**kwargs):
    torch.manual_seed(0)
    stock = MultiheadAttention(E, H, dropout=0.0, **kwargs).eval()
    gated = GatedMultiheadAttention.from_attention(stock, gate_kwargs={"init": 10.0}).eval()
    return stock, gated


def _causal(t):
    return torch.triu(torch.full((t, t), float("-inf")), 1)


def _padding(b, s):
    mask = torch.zeros(b, s, dtype=torch.bool)
    mask[0, -2:] = True
    return mask


@pytest.mark.parametrize("need_weights", [False, True])
def test_open_gates_equal_stock_self_attention(need_weights):
    stock, gated = _pair(self_attention=True)
    x = torch.randn(T, B, E)
    kpm = _padding(B, T)
    ref, ref_w = stock(x, x, x, key_padding_mask=kpm, attn_mask=_causal(T), need_weights=need_weights)
    out, w = gated(x, x, x, key_padding_mask=kpm, attn_mask=_causal(T), need_weights=need_weights)
    assert torch.allclose(out, ref, atol=1e-5)
    if need_weights:
        assert torch.allclose(w, ref_w, atol=1e-5)


def test_open_gates_equal_stock_encoder_attention_and_training_path():
    stock, gated = _pair(encoder_decoder_attention=True)
    q, mem = torch.randn(T, B, E), torch.randn(S, B, E)
    kpm = _padding(B, S)
    ref, _ = stock(q, mem, mem, key_padding_mask=kpm, need_weights=False)
    assert torch.allclose(gated(q, mem, mem, key_padding_mask=kpm, need_weights=False)[0], ref, atol=1e-5)
    gated.train()  # sampled gates are exactly 1 at log_alpha = 10; explicit softmax path
    assert torch.allclose(gated(q, mem, mem, key_padding_mask=kpm, need_weights=False)[0], ref, atol=1e-5)
    assert int(gated.conf_count) == 1 and (gated.conf_mean > 0).all()


def test_closed_gate_removes_exactly_that_head():
    stock, gated = _pair(self_attention=True)
    with torch.no_grad():
        gated.gate.log_alpha[2] = -10.0
        d = E // H
        stock.out_proj.weight[:, 2 * d:3 * d] = 0.0  # head 2's contribution removed by hand
    x = torch.randn(T, B, E)
    ref, _ = stock(x, x, x, need_weights=False)
    out, _ = gated(x, x, x, need_weights=False)
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad():
        gated.gate.log_alpha[2] = 10.0
    assert not torch.allclose(gated(x, x, x, need_weights=False)[0], ref, atol=1e-3)


@torch.no_grad()
def test_evaluation_after_an_optimizer_update_uses_the_new_weights():
    """fairseq's optimizers write through ``.data`` (no version bump) between ``train()`` and
    the next ``eval()``: the weights prepared for evaluation must not outlive the update."""
    _, gated = _pair(self_attention=True)
    x = torch.randn(T, B, E)
    before = gated(x, x, x)[0]
    gated.train()
    gated.q_proj.weight.data.add_(0.5)  # as fairseq's Adam steps
    gated.eval()
    after = gated(x, x, x)[0]
    with torch.enable_grad():  # evaluation with gradients: the module's own parameters
        ref = gated(x, x, x)[0]
    assert not torch.allclose(after, before, atol=1e-3) and torch.allclose(after, ref, atol=1e-5)


def test_partial_gate_scales_head_output():
    stock, gated = _pair(self_attention=True)
    with torch.no_grad():
        gated.gate.log_alpha[1] = 0.0
        z = float(gated.gate.deterministic()[1])
        d = E // H
        stock.out_proj.weight[:, d:2 * d] *= z
    x = torch.randn(T, B, E)
    assert 0 < z < 1
    assert torch.allclose(gated(x, x, x)[0], stock(x, x, x)[0], atol=1e-5)


@pytest.mark.parametrize("need_weights", [True, False])  # False: the decoding step's short path
@torch.no_grad()  # inference, as in fairseq-generate
def test_incremental_decoding_matches_full_forward(need_weights):
    torch.manual_seed(0)
    self_stock, self_gated = _pair(self_attention=True)
    cross_stock, cross_gated = _pair(encoder_decoder_attention=True)
    with torch.no_grad():
        for g in (self_gated, cross_gated):
            g.gate.log_alpha.copy_(torch.tensor([10.0, -10.0, 0.3, 10.0]))
    x, mem, kpm = torch.randn(T, B, E), torch.randn(S, B, E), _padding(B, S)
    full = self_gated(x, x, x, attn_mask=_causal(T))[0]
    full = cross_gated(full, mem, mem, key_padding_mask=kpm)[0]
    state, steps = {}, []
    for t in range(T):
        y = self_gated(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state, need_weights=need_weights)[0]
        y = cross_gated(y, mem, mem, key_padding_mask=kpm, incremental_state=state, static_kv=True,
                        need_weights=need_weights)[0]
        steps.append(y)
    assert torch.allclose(torch.cat(steps), full, atol=1e-5)
    # after a reorder (as beam search reorders hypotheses) the next self-attention step
    # equals the full forward over the reordered prefixes
    order = torch.tensor([2, 0, 1])
    self_gated.reorder_incremental_state(state, order)
    assert self_gated._get_input_buffer(state)["prev_kv"].shape == (B, 2, H, T, E // H)
    nxt = torch.randn(1, B, E)
    y = self_gated(nxt, nxt, nxt, incremental_state=state, need_weights=need_weights)[0]
    x2 = torch.cat([x[:, order], nxt])
    ref = self_gated(x2, x2, x2, attn_mask=_causal(T + 1))[0]
    assert torch.allclose(y[0], ref[-1], atol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_beamable_encoder_attention(need_weights):
    """With a beam size set, incremental encoder attention caches one copy per sentence,
    follows a beam reorder that drops a finished sentence, and gives the stock module's
    outputs (stock: one copy per hypothesis); a full forward never folds the batch."""
    stock, gated = _pair(encoder_decoder_attention=True)
    beam = 2
    mem = torch.randn(S, B, E).repeat_interleave(beam, dim=1)  # encoder output per hypothesis
    kpm = _padding(B, S).repeat_interleave(beam, dim=0)
    gated.set_beam_size(beam)
    with torch.no_grad():
        q = torch.randn(T, B * beam, E)
        assert torch.allclose(gated(q, mem, mem, key_padding_mask=kpm)[0],
                              stock(q, mem, mem, key_padding_mask=kpm)[0], atol=1e-5)
        states = {"stock": {}, "gated": {}}
        # sentence 1 finishes after step 0; the others continue with their beams swapped
        order = torch.tensor([1, 0, 5, 4])
        for step in range(2):
            rows = B * beam if step == 0 else len(order)
            x = torch.randn(1, rows, E)
            m, pad = (mem, kpm) if step == 0 else (mem[:, order], kpm[order])
            out = {name: module(x, m, m, key_padding_mask=pad, incremental_state=states[name], static_kv=True,
                                need_weights=need_weights)[0]
                   for name, module in (("stock", stock), ("gated", gated))}
            assert torch.allclose(out["gated"], out["stock"], atol=1e-5)
            assert gated._get_input_buffer(states["gated"])["prev_kv"].size(0) == rows // beam
            for name, module in (("stock", stock), ("gated", gated)):
                module.reorder_incremental_state(states[name], order)


def test_missing_gate_entries_are_filled_when_loading_stock_weights():
    stock, gated = _pair(self_attention=True)
    sd = {f"layer.attn.{k}": v for k, v in stock.state_dict().items()}
    gated.upgrade_state_dict_named(sd, "layer.attn")
    assert torch.equal(sd["layer.attn.gate.log_alpha"], torch.full((H,), 3.0))
    assert not sd["layer.attn.gate.reopen_pending"].any()


def test_confidence_statistic_stays_float32_in_a_half_model():
    """500 batches at confidence 0.3, then 4,500 at 0.7: the running mean is 0.66. In fp16
    the increments fall under its resolution and it would stop near 0.5."""
    _, gated = _pair(self_attention=True)
    gated.half()
    assert gated.conf_mean.dtype == torch.float32 and gated.q_proj.weight.dtype == torch.float16
    for value, n in ((0.3, 500), (0.7, 4500)):
        probs = torch.full((1, H, 1, 2), value, dtype=torch.float16)
        for _ in range(n):
            gated._track_confidence(probs)
    assert gated.conf_mean.tolist() == pytest.approx([0.66] * H, abs=1e-3)
    gated.float()
    assert gated.conf_mean.dtype == torch.float32


def test_per_example_gates_differ_across_the_batch():
    _, gated = _pair(self_attention=True)
    gated.gate.noise = "example"
    with torch.no_grad():
        gated.gate.log_alpha.fill_(0.0)  # z is far from saturated: draws differ
    gated.train()
    torch.manual_seed(0)
    z = gated.gate(B)
    assert z.shape == (B, H) and not torch.allclose(z[0], z[1])
    x = torch.randn(T, 1, E).expand(T, B, E)  # the same sentence three times
    out = gated(x, x, x, need_weights=False)[0]
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)
    gated.gate.noise = "batch"
    out = gated(x, x, x, need_weights=False)[0]
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5)


def test_eval_attention_weights_cover_only_heads_that_reach_the_output():
    _, gated = _pair(self_attention=True)
    with torch.no_grad():
        gated.gate.log_alpha[2] = -10.0
    x = torch.randn(T, B, E)
    per_head = gated.train()(x, x, x, need_head_weights=True)[1]  # every head: (heads, bsz, tgt, src)
    assert per_head.shape == (H, B, T, T)
    gated.eval()
    avg = gated(x, x, x, need_weights=True)[1]
    assert torch.allclose(avg, per_head[[0, 1, 3]].mean(dim=0), atol=1e-5)
    assert torch.allclose(gated(x, x, x, need_head_weights=True)[1], per_head[[0, 1, 3]], atol=1e-5)
