"""Hard Concrete gates, one per attention head (Louizos et al., 2018; method.md, "Gates").

Pure torch: nothing here imports fairseq, so the distribution can be tested alone.

With location ``log_alpha``, temperature ``beta`` and stretch limits ``gamma < 0 < 1 < zeta``:

* training (stochastic), one ``u ~ U(eps, 1 - eps)`` per gate and per draw::

      s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
      z = clamp(s * (zeta - gamma) + gamma, 0, 1)

* evaluation (deterministic)::

      z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)

* closed forms of the stochastic gate::

      q0  = P(z = 0)     = sigmoid(beta * log(-gamma / zeta) - log_alpha)
      q1  = P(z = 1)     = sigmoid(log_alpha - beta * log((1 - gamma) / (zeta - 1)))
      pnb = P(0 < z < 1) = 1 - q0 - q1
"""
import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

#: Tag read by the ``pass_adam`` optimizer (and kept by fairseq's fp16 master copies).
GATE_PARAM_GROUP = "pass_gate"


class HardConcrete(nn.Module):
    """``num_gates`` independent Hard Concrete gates with learned ``log_alpha``.

    ``log_alpha`` is kept inside ``[clip_min, clip_max]`` by :meth:`clamp_`;
    ``reopen_pending`` marks gates to be reset to ``clip_max`` at the next update
    (selective reopening, see :mod:`pass_fairseq.gate_schedule`).
    """

    def __init__(
        self,
        num_gates: int,
        beta: float = 0.33,
        gamma: float = -0.1,
        zeta: float = 1.1,
        init: Union[str, float] = "xavier",
        clip_min: float = -10.0,
        clip_max: float = 10.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        if not (gamma < 0.0 and zeta > 1.0 and beta > 0.0):
            raise ValueError("HardConcrete needs gamma < 0, zeta > 1 and beta > 0")
        if not clip_min < clip_max:
            raise ValueError("HardConcrete needs clip_min < clip_max")
        self.num_gates = num_gates
        self.beta, self.gamma, self.zeta, self.eps = beta, gamma, zeta, eps
        self.clip_min, self.clip_max = clip_min, clip_max
        self.log_alpha = nn.Parameter(torch.empty(num_gates))
        self.log_alpha.param_group = GATE_PARAM_GROUP
        self.register_buffer("reopen_pending", torch.zeros(num_gates, dtype=torch.bool))
        self.reset_parameters(init)

    def reset_parameters(self, init: Union[str, float] = "xavier") -> None:
        """``"xavier"``: U(-b, b) with b = sqrt(6 / (1 + num_gates)), as the reference
        initialises a (1, heads) tensor; a number: every log_alpha set to it."""
        with torch.no_grad():
            if init == "xavier":
                bound = math.sqrt(6.0 / (1 + self.num_gates))
                self.log_alpha.uniform_(-bound, bound)
            else:
                self.log_alpha.fill_(float(init))

    # ---- closed forms -------------------------------------------------------------
    def _offset_closed(self) -> float:
        return self.beta * math.log(-self.gamma / self.zeta)

    def _offset_open(self) -> float:
        return self.beta * math.log((1.0 - self.gamma) / (self.zeta - 1.0))

    def prob_closed(self) -> torch.Tensor:
        """q0 = P(z = 0) = sigmoid(beta log(-gamma/zeta) - log_alpha), clamped to [eps, 1-eps]."""
        q0 = torch.sigmoid(self._offset_closed() - self.log_alpha.float())
        return q0.clamp(self.eps, 1.0 - self.eps)

    def prob_open(self) -> torch.Tensor:
        """q1 = P(z = 1) = sigmoid(log_alpha - beta log((1-gamma)/(zeta-1))), clamped."""
        q1 = torch.sigmoid(self.log_alpha.float() - self._offset_open())
        return q1.clamp(self.eps, 1.0 - self.eps)

    def prob_nonbinary(self) -> torch.Tensor:
        """pnb = P(0 < z < 1) = 1 - q0 - q1."""
        return 1.0 - self.prob_closed() - self.prob_open()

    # ---- gate values --------------------------------------------------------------
    def deterministic(self) -> torch.Tensor:
        """Evaluation gate: clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)."""
        z = deterministic_gates(self.log_alpha, self.gamma, self.zeta)
        return z.to(self.log_alpha.dtype)

    def sample(self, batch_shape: Sequence[int] = ()) -> torch.Tensor:
        """Stochastic gate of shape ``(*batch_shape, num_gates)`` (reparameterised)."""
        shape = tuple(batch_shape) + (self.num_gates,)
        u = torch.rand(shape, device=self.log_alpha.device, dtype=torch.float32)
        u = u.clamp(self.eps, 1.0 - self.eps)
        logits = (torch.log(u) - torch.log1p(-u) + self.log_alpha.float()) / self.beta
        s = torch.sigmoid(logits)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0).to(self.log_alpha.dtype)

    def forward(self, batch_size: Optional[int] = None) -> torch.Tensor:
        """Gates for one forward pass: sampled in training (one draw per gate, or per gate
        and example when ``batch_size`` is given), deterministic in evaluation."""
        if not self.training:
            return self.deterministic()
        return self.sample(() if batch_size is None else (batch_size,))

    # ---- constraints --------------------------------------------------------------
    def is_clipped_closed(self) -> torch.Tensor:
        """Gates sitting at the lower clip bound (the reference's hard 'closed' count)."""
        return self.log_alpha.detach() <= self.clip_min

    def extra_repr(self) -> str:
        return (
            f"num_gates={self.num_gates}, beta={self.beta}, gamma={self.gamma}, "
            f"zeta={self.zeta}, clip=[{self.clip_min}, {self.clip_max}]"
        )


def deterministic_gates(log_alpha: torch.Tensor, gamma: float = -0.1, zeta: float = 1.1) -> torch.Tensor:
    """The evaluation gate for a bare ``log_alpha`` tensor (as read from a checkpoint)."""
    s = torch.sigmoid(log_alpha.float())
    return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)
