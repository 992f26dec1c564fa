import math

import pytest
import torch

from pass_fairseq.gates import GATE_PARAM_GROUP, HardConcrete, deterministic_gates


def test_closed_forms_match_monte_carlo():
    torch.manual_seed(0)
    gate = HardConcrete(7)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-4.0, -2.0, -0.5, 0.0, 0.7, 2.0, 4.0]))
    z = gate.sample((200_000,))
    assert torch.allclose((z == 0).float().mean(0), gate.prob_closed(), atol=4e-3)
    assert torch.allclose((z == 1).float().mean(0), gate.prob_open(), atol=4e-3)
    nonbinary = ((z > 0) & (z < 1)).float().mean(0)
    assert torch.allclose(nonbinary, gate.prob_nonbinary(), atol=4e-3)


def test_closed_forms_equal_reference_offsets():
    # with gamma = -0.1, zeta = 1.1 both offsets are beta * log 11
    gate = HardConcrete(3, beta=0.33)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.0, 1.5]))
    a = 0.33 * math.log(11)
    assert torch.allclose(gate.prob_closed(), torch.sigmoid(-a - gate.log_alpha.detach()))
    assert torch.allclose(gate.prob_open(), torch.sigmoid(gate.log_alpha.detach() - a))


def test_deterministic_thresholds_and_eval_mode():
    gate = HardConcrete(4)
    t = math.log(11)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-t - 1e-3, -t + 0.1, t - 0.1, t + 1e-3]))
    gate.eval()
    z = gate()
    assert z[0] == 0 and 0 < z[1] < 1 and 0 < z[2] < 1 and z[3] == 1
    assert torch.equal(z, gate())  # deterministic in eval
    assert torch.equal(z, deterministic_gates(gate.log_alpha.detach()))


def test_training_samples_are_stochastic_and_shaped():
    torch.manual_seed(0)
    gate = HardConcrete(4, init=0.0).train()
    assert gate().shape == (4,) and gate(batch_size=3).shape == (4,)  # noise batch: one draw per pass
    assert not torch.equal(gate(), gate())
    assert HardConcrete(4, init=0.0, noise="example").train()(batch_size=3).shape == (3, 4)


def test_noise_none_trains_with_the_deterministic_gates():
    gate = HardConcrete(3, noise="none").train()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([10.0, -10.0, 0.5]))
    assert torch.equal(gate(batch_size=5), deterministic_gates(gate.log_alpha.detach()))
    assert gate(batch_size=5).tolist()[:2] == [1.0, 0.0]


def test_init_and_tag():
    torch.manual_seed(0)
    gate = HardConcrete(4)
    bound = math.sqrt(6 / 5)
    assert gate.log_alpha.abs().max() <= bound
    assert gate.log_alpha.param_group == GATE_PARAM_GROUP
    assert torch.equal(HardConcrete(4, init=3.0).log_alpha.detach(), torch.full((4,), 3.0))


def test_gradient_flows_through_sample():
    gate = HardConcrete(5, init=0.0).train()
    gate.sample((64,)).sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        HardConcrete(2, gamma=0.1)
    with pytest.raises(ValueError):
        HardConcrete(2, clip_min=1.0, clip_max=0.0)
    with pytest.raises(ValueError):
        HardConcrete(2, noise="sometimes")
