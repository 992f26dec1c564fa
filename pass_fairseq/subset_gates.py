"""Subset gates: one logit per head, exactly K heads of the whole model open (docs/method.md,
"Baselines": DSP and STE).

Pure torch: nothing here imports fairseq. Each gated attention module holds a
:class:`SubsetGate` with its heads' logits w (stored as ``<module>.gate.log_alpha``, so the
pruning tools find them, and with K recorded as ``<module>.gate.subset_k``); the model's
:class:`SubsetGroup` draws the gates of all its modules together:

* test time: z = 1 for the K largest logits of the model, 0 for the others
  (:func:`pass_fairseq.gates.gate_values`, the same rule the pruning tools apply);
* training, one joint draw per forward pass over all N heads (:meth:`SubsetGroup.draw`):

  - ``soft-top-k`` (DSP; Li, Cotterell and Sachan 2021), :func:`soft_top_k` of the logits
    plus Gumbel noise g_i = -log(-log u_i), u_i ~ U(0, 1), at temperature tau::

        r_1 = w + g,   p_j = softmax(r_j / tau),   r_{j+1} = r_j + log(max(1 - p_j, tiny)),
        z = sum_{j=1..K} p_j        (sum_i z_i = K; z -> the top-K mask of w + g as tau -> 0)

    (z_i >= 0 but not bounded by 1 away from tau -> 0: N = K = 2 at tau = 1 gives
    z = (a + 1/2, 3/2 - a) for p_1 = (a, 1 - a));

  - ``straight-through`` (STE), :func:`straight_through_top_k`: z = m + (w - sg(w)), m the
    top-K mask of w and sg the stop-gradient: the value is exactly m, and dL/dw = dL/dz
    (the identity surrogate);
  - with ``--pass-gate-noise none``: z = m, no gradient (a fixed mask).

* temperature, annealed geometrically over U updates (:func:`annealed_temperature`)::

      tau(u) = tau_0 (tau_1 / tau_0) ^ (min(u, U) / U)
"""
import contextlib
import math
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from pass_fairseq.gates import GATE_PARAM_GROUP, gate_values, init_log_alpha_, top_k_mask, worker_uniform

#: the smallest positive float64: the floor of 1 - p_j in the soft top-K (the DSP reference's)
TINY = torch.finfo(torch.float64).tiny
#: how the subset gates are drawn in training
RELAXATIONS = ("soft-top-k", "straight-through")


def gumbel_noise(shape: Sequence[int], device=None) -> torch.Tensor:
    """Standard Gumbel draws -log(-log u), u ~ U(tiny, 1), in float64 (this data-parallel
    worker's own: :func:`pass_fairseq.gates.worker_uniform`)."""
    u = worker_uniform(shape, device, torch.float64).clamp_min(TINY)
    return -torch.log(-torch.log(u))


def soft_top_k(scores: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """The relaxed top-K of a flat ``scores`` vector: K successive softmaxes at temperature
    ``tau``, each softly masking what the previous ones chose (module docstring), summed.
    Computed in float64; the result sums to K and tends to the top-K mask as tau -> 0."""
    if not 1 <= k <= scores.numel():
        raise ValueError(f"soft top-k: k = {k} is outside 1..{scores.numel()}")
    if not tau > 0:
        raise ValueError(f"soft top-k: the temperature must be positive, got {tau}")
    r = scores.double()
    total = torch.zeros_like(r)
    for step in range(k):
        p = torch.softmax(r / tau, dim=-1)
        total = total + p
        if step < k - 1:
            r = r + torch.log((1.0 - p).clamp_min(TINY))
    return total


def straight_through_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The hard top-K mask of ``logits`` in the forward pass, the identity in the backward
    pass: m + (w - sg(w))."""
    return top_k_mask(logits, k).to(logits.dtype) + (logits - logits.detach())


def annealed_temperature(update: int, start: float, end: float, updates: int) -> float:
    """tau(u) = start (end / start) ^ (min(u, updates) / updates); ``end`` from the start
    when ``updates`` is 0."""
    if not (start > 0 and end > 0):
        raise ValueError(f"the temperatures must be positive, got {start} and {end}")
    if updates <= 0:
        return float(end)
    return float(start * math.exp(min(max(update, 0), updates) / updates * math.log(end / start)))


class SubsetGate(nn.Module):
    """The logits of one attention module's heads; its gates come from its model's
    :class:`SubsetGroup` (training draw or test-time top-K)."""

    def __init__(self, num_gates: int, init: Union[str, float] = "xavier"):
        super().__init__()
        self.num_gates = num_gates
        self.log_alpha = nn.Parameter(init_log_alpha_(torch.empty(num_gates), init))
        self.log_alpha.param_group = GATE_PARAM_GROUP
        self.register_buffer("subset_k", torch.zeros((), dtype=torch.long))
        self.group: Optional["SubsetGroup"] = None  # set by SubsetGroup (a plain reference)
        self.index = 0

    def _group(self) -> "SubsetGroup":
        if self.group is None:
            raise RuntimeError("a SubsetGate draws its gates through a SubsetGroup of its model's gates")
        return self.group

    def deterministic(self) -> torch.Tensor:
        """Test-time gates: 1 for this module's heads among the model's top K logits (float32)."""
        return self._group().deterministic()[self.index]

    def depends_on(self) -> List[torch.Tensor]:
        """The tensors :meth:`deterministic` reads: every logit of the model's group."""
        return [g.log_alpha for g in self._group().gates]

    def forward(self, batch_size: Optional[int] = None) -> torch.Tensor:
        """This module's slice of the model's current training draw; deterministic in
        evaluation. ``batch_size`` is not used (one draw per forward pass)."""
        if not self.training:
            return self.deterministic()
        return self._group().drawn(self.index)

    # ---- checkpoints --------------------------------------------------------------
    def missing_state(self) -> dict:
        """Entries for a checkpoint without gates: this gate's own initial logits (equal
        logits would make the hard top-K pick the first K heads by index), and K."""
        return {"log_alpha": self.log_alpha.detach().clone(), **self.run_state()}

    def run_state(self) -> dict:
        """Entries this run's configuration sets whatever a loaded checkpoint holds: K."""
        return {"subset_k": self.subset_k.clone()}

    def extra_repr(self) -> str:
        return f"num_gates={self.num_gates}, target_heads={int(self.subset_k)}"


class SubsetGroup:
    """The subset gates of one model, drawn together: exactly ``target_heads`` of all their heads.

    A plain object referenced by its gates (not a module: the logits stay in the gates' own
    state-dict entries). ``relaxation`` (:data:`RELAXATIONS`) gives the training draw;
    ``noise`` "none" trains with the test-time mask (no relaxation needed). ``temperature`` is the soft top-K's
    tau, set by the training task from the update number.
    """

    def __init__(self, gates: Sequence[SubsetGate], target_heads: int, relaxation: Optional[str] = "soft-top-k",
                 noise: str = "batch", temperature: Optional[float] = None):
        total = sum(g.num_gates for g in gates)
        if not 1 <= target_heads <= total:
            raise ValueError(f"subset gates: K = {target_heads} is outside 1..{total}, the model's heads")
        if noise not in ("batch", "none"):
            raise ValueError(f"subset gates draw once per forward pass (noise batch) or not at all"
                             f" (none), got {noise!r}")
        if noise != "none" and relaxation not in RELAXATIONS:
            raise ValueError(f"subset gates: relaxation must be one of {RELAXATIONS}, got {relaxation!r}")
        self.gates: List[SubsetGate] = list(gates)
        self.target_heads, self.relaxation, self.noise, self.temperature = int(target_heads), relaxation, noise, temperature
        self._drawn: Optional[List[torch.Tensor]] = None
        for index, gate in enumerate(self.gates):
            gate.group, gate.index = self, index
            gate.subset_k.fill_(self.target_heads)

    def logits(self) -> torch.Tensor:
        return torch.cat([g.log_alpha.reshape(-1) for g in self.gates])

    def deterministic(self) -> List[torch.Tensor]:
        """Test-time gates of every module (:func:`pass_fairseq.gates.gate_values`)."""
        return gate_values([g.log_alpha for g in self.gates], self.target_heads)

    def sample(self) -> torch.Tensor:
        """One joint training draw over all heads, flat, float32."""
        w = self.logits()
        if self.noise == "none":
            return top_k_mask(w, self.target_heads)
        if self.relaxation == "straight-through":
            return straight_through_top_k(w.float(), self.target_heads)
        if self.temperature is None:
            raise RuntimeError("the soft top-K needs a temperature: the PASS tasks (translation_pass,"
                               " language_modeling_pass) set it")
        return soft_top_k(w.double() + gumbel_noise(w.shape, w.device), self.target_heads, self.temperature).float()

    @contextlib.contextmanager
    def draw(self) -> Iterator[None]:
        """Draw the gates of one training forward pass; the gates read their slices inside."""
        self._drawn = list(self.sample().split([g.num_gates for g in self.gates]))
        try:
            yield
        finally:
            self._drawn = None

    def drawn(self, index: int) -> torch.Tensor:
        if self._drawn is None:
            raise RuntimeError("subset gates are drawn once per forward pass of the whole model: in training,"
                               " call the model, not its encoder or decoder alone")
        return self._drawn[index]
