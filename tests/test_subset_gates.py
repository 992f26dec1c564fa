"""Subset gates alone (pure torch): the soft top-K, the straight-through top-K, the
temperature, the joint draw, and the one deterministic rule the pruning tools share."""
import math

import pytest
import torch

from pass_fairseq.gate_report import gate_report
from pass_fairseq.gates import count_gates, gate_values, top_k_mask
from pass_fairseq.pruning import PruningError, module_gates, select_heads, state_dict_gates
from pass_fairseq.subset_gates import (SubsetGate, SubsetGroup, annealed_temperature, gumbel_noise, soft_top_k,
                                       straight_through_top_k)


def test_top_k_mask_keeps_exactly_k_whatever_the_values():
    assert top_k_mask(torch.tensor([1.0, 3.0, 2.0, 3.0]), 2).tolist() == [0, 1, 0, 1]
    assert top_k_mask(torch.zeros(5), 3).tolist() == [1, 1, 1, 0, 0]  # ties: lower index first
    torch.manual_seed(0)
    for values in (torch.randn(72) * 100, torch.full((72,), -1e9), torch.randint(-2, 2, (72,)).float()):
        for k in (1, 16, 72):
            assert int(top_k_mask(values, k).sum()) == k
    with pytest.raises(ValueError):
        top_k_mask(torch.zeros(3), 4)


def test_soft_top_k_sums_to_k_and_tends_to_the_hard_top_k():
    torch.manual_seed(0)
    scores = torch.randn(24, dtype=torch.float64)
    hard = top_k_mask(scores, 8)
    for tau in (10.0, 1.0, 0.1, 1e-3, 1e-8):
        z = soft_top_k(scores, 8, tau)
        assert z.dtype == torch.float64 and float(z.sum()) == pytest.approx(8.0, abs=1e-9)
        assert float(z.min()) >= 0.0  # but z_i may exceed 1: N = K = 2 gives (a + 1/2, 3/2 - a)
    errors = [float((soft_top_k(scores, 8, tau) - hard).abs().max()) for tau in (1.0, 0.1, 1e-2, 1e-3, 1e-5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6
    assert torch.equal(soft_top_k(scores, 8, 1e-8), hard.double())
    assert torch.allclose(soft_top_k(torch.zeros(6), 2, 1.0), torch.full((6,), 1 / 3, dtype=torch.float64),
                          atol=0.1)  # equal scores: K spread over all


def test_soft_top_k_has_a_gradient_and_the_gumbel_draw_varies():
    scores = torch.tensor([0.5, 0.1, -0.2, 0.3], requires_grad=True)
    soft_top_k(scores, 2, 0.5)[0].backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    torch.manual_seed(0)
    g = gumbel_noise((10000,))
    assert torch.isfinite(g).all() and float(g.mean()) == pytest.approx(0.5772, abs=0.03)  # Euler's gamma


def test_straight_through_is_the_hard_mask_forward_and_the_identity_backward():
    w = torch.tensor([0.2, -1.0, 3.0, 0.1], requires_grad=True)
    z = straight_through_top_k(w, 2)
    assert z.tolist() == [1.0, 0.0, 1.0, 0.0]
    (z * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_temperature_anneals_geometrically():
    assert annealed_temperature(0, 0.1, 1e-8, 100) == pytest.approx(0.1)
    assert annealed_temperature(50, 0.1, 1e-8, 100) == pytest.approx(math.sqrt(0.1 * 1e-8))
    assert annealed_temperature(100, 0.1, 1e-8, 100) == pytest.approx(1e-8)
    assert annealed_temperature(10 ** 6, 0.1, 1e-8, 100) == pytest.approx(1e-8)
    assert annealed_temperature(0, 0.1, 1e-8, 0) == pytest.approx(1e-8)


def _group(sizes=(4, 4, 4), k=5, **kwargs):
    torch.manual_seed(0)
    gates = [SubsetGate(n) for n in sizes]
    return gates, SubsetGroup(gates, k, **kwargs)


@pytest.mark.parametrize("fill", [None, 0.0, 7.0, -1e6])
def test_subset_gates_keep_exactly_k_at_test_time_whatever_the_logits(fill):
    gates, group = _group()
    if fill is not None:
        with torch.no_grad():
            for g in gates:
                g.log_alpha.fill_(fill)
    zs = [g.eval()() for g in gates]
    assert sum(float(z.sum()) for z in zs) == 5 and all(set(z.tolist()) <= {0.0, 1.0} for z in zs)
    assert [z.tolist() for z in zs] == [z.tolist() for z in gate_values([g.log_alpha for g in gates], 5)]
    counts = count_gates([g.log_alpha for g in gates], target_heads=5).as_ints()
    assert (counts["open"], counts["nonbinary"], counts["kept"]) == (5, 0, 5)


def test_the_training_draw_is_joint_and_only_inside_a_forward_pass():
    gates, group = _group(relaxation="soft-top-k", temperature=0.5)
    for g in gates:
        g.train()
    with pytest.raises(RuntimeError, match="once per forward pass"):
        gates[0]()
    with group.draw():
        first = torch.cat([g() for g in gates])
    assert float(first.sum()) == pytest.approx(5.0, abs=1e-5) and first.dtype == torch.float32
    with group.draw():
        assert not torch.equal(first, torch.cat([g() for g in gates]))  # fresh Gumbel noise
    first.sum().backward()
    assert all(g.log_alpha.grad is not None for g in gates)
    _, fixed = _group(noise="none", relaxation=None)
    assert torch.equal(fixed.sample(), torch.cat(fixed.deterministic()))
    _, ste = _group(relaxation="straight-through")
    assert torch.equal(ste.sample().detach(), torch.cat(ste.deterministic()))
    with pytest.raises(ValueError, match="outside 1..12"):
        _group(k=13)


def _state_dict(log_alphas, k):
    state = {}
    for i, la in enumerate(log_alphas):
        state[f"encoder.layers.{i}.self_attn.gate.log_alpha"] = la
        state[f"encoder.layers.{i}.self_attn.gate.subset_k"] = torch.tensor(k)
    return state


def test_the_pruning_tools_read_k_from_the_state_dict():
    torch.manual_seed(1)
    las = [torch.randn(4) for _ in range(3)]
    state = _state_dict(las, 5)
    prefixes, _, k = state_dict_gates(state)
    assert k == 5 and len(prefixes) == 3
    kept = select_heads(las, subset_target_heads=5)
    assert kept == select_heads(las, target_heads=5) and sum(map(len, kept)) == 5
    report = gate_report(state)
    assert (report["open"], report["nonbinary"], report["kept"], report["subset_k"]) == (5, 0, 5, 5)
    assert sum(float(z.sum()) for z in module_gates(state).values()) == 5
    state["encoder.layers.2.self_attn.gate.subset_k"] = torch.tensor(4)
    with pytest.raises(PruningError, match="inconsistent K"):
        state_dict_gates(state)
