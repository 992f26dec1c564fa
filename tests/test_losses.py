import math

import pytest
import torch

from pass_fairseq import losses
from pass_fairseq.gates import HardConcrete


def _gates(values):
    gate = HardConcrete(len(values))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor(values))
    return gate


def test_pass_terms_by_hand():
    gate = _gates([-5.0, -5.0, 5.0, 0.0])
    q0, q1, pnb = gate.prob_closed(), gate.prob_open(), gate.prob_nonbinary()
    nb, closed_gap, open_gap = losses.pass_terms(q0, q1, pnb, target_heads=1)
    a = 0.33 * math.log(11)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    q0_ref = [sig(-a + 5), sig(-a + 5), sig(-a - 5), sig(-a)]
    q1_ref = [sig(-5 - a), sig(-5 - a), sig(5 - a), sig(-a)]
    assert math.isclose(float(closed_gap), abs(3 - sum(q0_ref)), rel_tol=1e-5)
    assert math.isclose(float(open_gap), abs(1 - sum(q1_ref)), rel_tol=1e-5)
    assert math.isclose(float(nb), 4 - sum(q0_ref) - sum(q1_ref), rel_tol=1e-5)


def test_pass_terms_vanish_at_the_optimum():
    # saturated gates, exactly K = 2 open of 5: every term close to zero
    gate = _gates([-40.0, 40.0, -40.0, 40.0, -40.0])
    gate.eps = 0.0
    terms = losses.pass_terms(gate.prob_closed(), gate.prob_open(), gate.prob_nonbinary(), 2)
    assert all(float(t) < 1e-6 for t in terms)
    off = losses.pass_terms(gate.prob_closed(), gate.prob_open(), gate.prob_nonbinary(), 3)
    assert float(off[1]) > 0.99 and float(off[2]) > 0.99


def test_while_the_target_falls_the_gaps_only_push_gates_closed():
    gate = _gates([3.0, 3.0, 3.0, -3.0])  # about 2.7 heads expected open
    q0, q1, pnb = gate.prob_closed(), gate.prob_open(), gate.prob_nonbinary()
    above = losses.pass_terms(q0, q1, pnb, 3.5, ceiling=True)  # fewer open than K_t: no push
    assert float(above[1]) == 0.0 and float(above[2]) == 0.0
    below = losses.pass_terms(q0, q1, pnb, 1.5, ceiling=True)  # too many open: as the two-sided gaps
    both = losses.pass_terms(q0, q1, pnb, 1.5)
    assert all(torch.isclose(a, b) for a, b in zip(below, both)) and float(below[2]) > 0


def test_pass_gradient_closes_gates_when_too_many_open():
    gate = _gates([1.0, 1.0, 1.0, 1.0])
    q0, q1 = gate.prob_closed(), gate.prob_open()
    sum(losses.pass_terms(q0, q1, 1 - q0 - q1, target_heads=1)).backward()
    assert (gate.log_alpha.grad > 0).all()  # descent lowers every log_alpha


def test_pass_gradient_opens_gates_when_too_few_open():
    gate = _gates([-1.0, -1.0, -1.0, -1.0])
    q0, q1 = gate.prob_closed(), gate.prob_open()
    sum(losses.pass_terms(q0, q1, 1 - q0 - q1, target_heads=3)).backward()
    assert (gate.log_alpha.grad < 0).all()  # descent raises every log_alpha


def test_concentrator_by_hand_over_several_modules():
    """log_alpha = A - logit(q0) gives q0 exactly: modules with q0 (0.5, 0.5), (0.75, 0.25,
    0.5) and (0.75,): R_conc = (1 - 0.25) + (1 - 0.09375) + (1 - 0.75) = 1.90625."""
    a = -0.33 * math.log(11)  # beta log(-gamma/zeta)
    la = lambda q0: a - math.log(q0 / (1 - q0))  # noqa: E731
    gates = [_gates([la(0.5), la(0.5)]), _gates([la(0.75), la(0.25), la(0.5)]), _gates([la(0.75)])]
    q0s = [g.prob_closed() for g in gates]
    assert float(losses.concentrator(q0s)) == pytest.approx(1.90625, rel=1e-6)
    # lower bound: head 1 of module 2 is the only open one; q1 = sigmoid(log_alpha + a)
    q1s = [g.prob_open() for g in gates]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    q0_i, q1_i = 0.25, sig(la(0.25) + a)
    ref = 2 * max(1.0, q1_i * (1 - q1_i) / (q0_i * (1 - q0_i))) / (0.75 * 0.5)
    is_open = [torch.tensor([False, False]), torch.tensor([False, True, False]), torch.tensor([False])]
    assert float(losses.concentrator_weight_lower_bound(q0s, q1s, is_open, cap=500.0)) == pytest.approx(ref, rel=1e-6)


def test_concentrator_and_lower_bound():
    closed, mixed = _gates([-5.0, -5.0]), _gates([5.0, -5.0])
    q0s = [closed.prob_closed(), mixed.prob_closed()]
    q1s = [closed.prob_open(), mixed.prob_open()]
    conc = losses.concentrator(q0s)
    expected = (1 - float(q0s[0].prod())) + (1 - float(q0s[1].prod()))
    assert math.isclose(float(conc), expected, rel_tol=1e-6)
    is_open = [torch.tensor([False, False]), torch.tensor([True, False])]
    lb = losses.concentrator_weight_lower_bound(q0s, q1s, is_open, cap=500.0)
    q0, q1 = float(q0s[1][0]), float(q1s[1][0])
    ref = 2 * max(1.0, q1 * (1 - q1) / (q0 * (1 - q0))) / float(q0s[1][1])
    assert math.isclose(float(lb), min(ref, 500.0), rel_tol=1e-6)
    assert float(losses.concentrator_weight_lower_bound(q0s, q1s, [torch.tensor([False] * 2)] * 2, 500.0)) == 500.0


def test_expected_l0():
    gate = _gates([0.0, 0.0])
    assert math.isclose(float(losses.expected_l0(gate.prob_closed())), 2 * (1 - float(gate.prob_closed()[0])), rel_tol=1e-6)
