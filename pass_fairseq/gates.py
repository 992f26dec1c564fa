"""Gates, one per attention head: the Hard Concrete gate (Louizos et al., 2018; docs/method.md,
"Gates") and the one rule that turns any model's log_alphas into deterministic gates, for
both gate types (Hard Concrete, and the subset gates of :mod:`pass_fairseq.subset_gates`).

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
from typing import List, NamedTuple, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

#: Hard Concrete stretch limits and temperature (Louizos et al. 2018; the reference's values).
GAMMA, ZETA, BETA = -0.1, 1.1, 0.33
#: default clip bounds of log_alpha (the reference clips to [-5, 5]; docs/method.md, "Clipping")
CLIP_MIN, CLIP_MAX = -10.0, 10.0
#: log_alpha of a gate missing from a loaded stock checkpoint: deterministic gate 1 (open)
MISSING_GATE_INIT = 3.0
#: a head is *kept* at test time when its deterministic gate exceeds this (docs/method.md, "Test time")
KEPT_THRESHOLD = 0.5
#: state-dict suffixes of a gate's entries, after its attention module's prefix
GATE_KEY = ".gate.log_alpha"
REOPEN_KEY = ".gate.reopen_pending"
#: a subset-gated module records the model's K here (docs/method.md, "Baselines")
SUBSET_K_KEY = ".gate.subset_k"
#: ``--pass-gate-noise``: one training draw per head and forward pass, per head and example,
#: or none (the deterministic gates in training too)
NOISE_MODES = ("batch", "example", "none")
#: Tag read by the ``pass_adam`` optimizer (and kept by fairseq's fp16 master copies).
GATE_PARAM_GROUP = "pass_gate"


def init_log_alpha_(log_alpha: torch.Tensor, init: Union[str, float] = "xavier") -> torch.Tensor:
    """In place, for one module's gates: ``"xavier"``: U(-b, b) with b = sqrt(6 / (1 + heads)),
    as the reference initialises a (1, heads) tensor; a number: every log_alpha set to it."""
    with torch.no_grad():
        if init == "xavier":
            bound = math.sqrt(6.0 / (1 + log_alpha.numel()))
            return log_alpha.uniform_(-bound, bound)
        return log_alpha.fill_(float(init))


def worker_uniform(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` for this data-parallel worker: the noise of the gates' training draws.

    fairseq seeds every worker's RNG alike (seed + update number), so a plain ``torch.rand``
    would give every worker the same gate noise: one draw per update where a single process
    with ``--update-freq W`` makes W. So each of W workers (torch.distributed's world) draws
    for all of them and keeps its own row: independent noise per worker, and every worker's
    RNG consumed alike. Outside torch.distributed (or W = 1) this is ``torch.rand(shape)``."""
    shape = tuple(shape)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand((dist.get_world_size(), *shape), device=device, dtype=dtype)[dist.get_rank()]


class HardConcrete(nn.Module):
    """``num_gates`` independent Hard Concrete gates with learned ``log_alpha``.

    ``log_alpha`` is kept inside ``[clip_min, clip_max]`` by the task's schedule;
    ``reopen_pending`` marks gates to be reset to ``clip_max`` at the next update
    (selective reopening, see :mod:`pass_fairseq.gate_schedule`). ``noise`` is one of
    :data:`NOISE_MODES`; ``missing_init`` is the log_alpha of a gate that a loaded checkpoint
    lacks (:meth:`missing_state`).
    """

    def __init__(
        self,
        num_gates: int,
        beta: float = BETA,
        gamma: float = GAMMA,
        zeta: float = ZETA,
        init: Union[str, float] = "xavier",
        clip_min: float = CLIP_MIN,
        clip_max: float = CLIP_MAX,
        noise: str = "batch",
        missing_init: float = MISSING_GATE_INIT,
        eps: float = 1e-6,
    ):
        super().__init__()
        if not (gamma < 0.0 and zeta > 1.0 and beta > 0.0):
            raise ValueError("HardConcrete needs gamma < 0, zeta > 1 and beta > 0")
        if not clip_min < clip_max:
            raise ValueError("HardConcrete needs clip_min < clip_max")
        if noise not in NOISE_MODES:
            raise ValueError(f"HardConcrete noise must be one of {NOISE_MODES}, got {noise!r}")
        self.num_gates = num_gates
        self.beta, self.gamma, self.zeta, self.eps = beta, gamma, zeta, eps
        self.clip_min, self.clip_max = clip_min, clip_max
        self.noise, self.missing_init = noise, missing_init
        self.log_alpha = nn.Parameter(torch.empty(num_gates))
        self.log_alpha.param_group = GATE_PARAM_GROUP
        self.register_buffer("reopen_pending", torch.zeros(num_gates, dtype=torch.bool))
        self.reset_parameters(init)

    def reset_parameters(self, init: Union[str, float] = "xavier") -> None:
        init_log_alpha_(self.log_alpha, init)

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
        """Evaluation gate: clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1), in float32
        whatever the model's dtype (the forward pass casts it where it multiplies)."""
        return deterministic_gates(self.log_alpha, self.gamma, self.zeta)

    def depends_on(self) -> List[torch.Tensor]:
        """The tensors :meth:`deterministic` reads."""
        return [self.log_alpha]

    def sample(self, batch_shape: Sequence[int] = ()) -> torch.Tensor:
        """Stochastic gate of shape ``(*batch_shape, num_gates)`` (reparameterised)."""
        shape = tuple(batch_shape) + (self.num_gates,)
        u = worker_uniform(shape, self.log_alpha.device)
        u = u.clamp(self.eps, 1.0 - self.eps)
        logits = (torch.log(u) - torch.log1p(-u) + self.log_alpha.float()) / self.beta
        s = torch.sigmoid(logits)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0).to(self.log_alpha.dtype)

    def forward(self, batch_size: Optional[int] = None) -> torch.Tensor:
        """Gates for one forward pass over ``batch_size`` examples: in training sampled once
        per gate (noise ``batch``) or per gate and example (``example``, shape
        ``(batch_size, num_gates)``); deterministic in evaluation and with noise ``none``."""
        if not self.training or self.noise == "none":
            return self.deterministic()
        per_example = self.noise == "example" and batch_size is not None
        return self.sample((batch_size,) if per_example else ())

    # ---- checkpoints --------------------------------------------------------------
    def missing_state(self) -> dict:
        """Entries for a checkpoint without gates (a stock model fine-tuned): every gate at
        ``missing_init`` (open by default: the model starts as the stock one), none pending."""
        return {"log_alpha": torch.full((self.num_gates,), float(self.missing_init)),
                "reopen_pending": torch.zeros(self.num_gates, dtype=torch.bool)}

    def run_state(self) -> dict:
        """Entries this run's configuration sets whatever a loaded checkpoint holds: none."""
        return {}

    # ---- constraints --------------------------------------------------------------
    def is_clipped_closed(self) -> torch.Tensor:
        """Gates sitting at the lower clip bound (the reference's hard 'closed' count)."""
        return self.log_alpha.detach() <= self.clip_min

    def extra_repr(self) -> str:
        return (
            f"num_gates={self.num_gates}, beta={self.beta}, gamma={self.gamma}, "
            f"zeta={self.zeta}, clip=[{self.clip_min}, {self.clip_max}], noise={self.noise}"
        )


def deterministic_gates(log_alpha: torch.Tensor, gamma: float = GAMMA, zeta: float = ZETA) -> torch.Tensor:
    """The Hard Concrete evaluation gate for a bare ``log_alpha`` tensor (as read from a
    checkpoint), float32."""
    s = torch.sigmoid(log_alpha.float())
    return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """float32 mask of ``scores``' shape with 1 at its ``k`` largest entries (flattened),
    ties to the lower flat index, so exactly ``k`` ones whatever the values."""
    flat = scores.detach().reshape(-1)
    if not 0 <= k <= flat.numel():
        raise ValueError(f"top-k mask: k = {k} is outside 0..{flat.numel()}")
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
    mask[order[:k]] = 1.0
    return mask.view_as(scores)


def gate_values(log_alphas: Sequence[torch.Tensor], target_heads: Optional[int] = None,
                gamma: float = GAMMA, zeta: float = ZETA) -> List[torch.Tensor]:
    """The one rule for the deterministic (test-time) gates of a model, one float32 tensor
    per module from its log_alpha: Hard Concrete's clamp(sigmoid(log_alpha) (zeta - gamma)
    + gamma, 0, 1) per head, or, for subset gates (``target_heads`` = their K), 1 for the K largest
    log_alpha over all modules (flattened in module order: ties to the earlier module, then
    the lower head) and 0 for the others."""
    if target_heads is None:
        return [deterministic_gates(la.detach(), gamma, zeta) for la in log_alphas]
    flat = torch.cat([la.detach().reshape(-1) for la in log_alphas])
    return list(top_k_mask(flat, int(target_heads)).split([la.numel() for la in log_alphas]))


class GateCounts(NamedTuple):
    """Deterministic gates of every module (float32) and their counts as 0-d tensors, so
    that the training loop can log them without a host sync. A head is *open* when z == 1,
    *closed* when z == 0, *non-binary* otherwise, *kept* when z > KEPT_THRESHOLD; a module is
    *active* when one of its gates is non-zero."""

    gates: List[torch.Tensor]
    open: torch.Tensor
    closed: torch.Tensor
    nonbinary: torch.Tensor
    kept: torch.Tensor
    modules_active: torch.Tensor

    @property
    def total(self) -> int:
        return sum(int(z.numel()) for z in self.gates)

    def on_target(self, target_heads: Optional[int]) -> torch.Tensor:
        """Binary gates with exactly ``target_heads`` open (any count when None), as a bool tensor."""
        binary = self.nonbinary == 0
        return binary if target_heads is None else binary & (self.open == target_heads)

    def as_ints(self) -> dict:
        """The counts as Python ints (one host sync)."""
        values = torch.stack([self.open, self.closed, self.nonbinary, self.kept, self.modules_active]).tolist()
        return dict(zip(("open", "closed", "nonbinary", "kept", "modules_active"), values), total=self.total)


def count_gates(log_alphas: Sequence[torch.Tensor], target_heads: Optional[int] = None,
                gamma: float = GAMMA, zeta: float = ZETA) -> GateCounts:
    """The one place that turns log_alphas (one tensor per module; ``target_heads`` = K for
    subset gates) into deterministic gates (:func:`gate_values`) and counts; computed in
    float32 whatever the model's dtype, so the training run, the gate report and the
    checkpoint converter always agree."""
    zs = gate_values(log_alphas, target_heads, gamma, zeta)
    z = torch.cat(zs)
    opened, closed = (z == 1).sum(), (z == 0).sum()
    active = torch.stack([(zm > 0).any() for zm in zs]).sum()
    return GateCounts(zs, opened, closed, z.numel() - opened - closed, (z > KEPT_THRESHOLD).sum(), active)
