"""Pure tensor regularisers of PASS, PASSCONC and Voita et al. (docs/method.md).

Inputs are per-head closed forms (``q0 = P(z=0)``, ``q1 = P(z=1)``, ``pnb = P(0<z<1)``),
flat over all N heads or as one tensor per attention module. No fairseq here.
"""
import math
from typing import List, Sequence

import torch


def pass_terms(q0: torch.Tensor, q1: torch.Tensor, pnb: torch.Tensor, target_heads: float, ceiling: bool = False):
    """The three PASS terms for a target of K = ``target_heads`` open heads of N (a float
    during :mod:`pass_fairseq.target_schedule`'s annealing, K_t):

    * ``nonbinary``  = sum_i pnb_i
    * ``closed_gap`` = | s N - sum_i q0_i |, with s N = N - K
    * ``open_gap``   = | (1 - s) N - sum_i q1_i |, with (1 - s) N = K

    With ``ceiling`` (while the target is annealed down) K is an upper bound: the gaps count
    only in the direction of too many open heads, max(0, s N - sum_i q0_i) and
    max(0, sum_i q1_i - (1 - s) N), so gates that are already fewer than K_t are not pushed open.

    Returns the three scalars; R_pass = lambda * (nonbinary + closed_gap + open_gap).
    """
    n = q0.numel()
    nonbinary = pnb.sum()
    closed_gap = float(n - target_heads) - q0.sum()
    open_gap = q1.sum() - float(target_heads)
    if ceiling:
        return nonbinary, closed_gap.clamp(min=0.0), open_gap.clamp(min=0.0)
    return nonbinary, closed_gap.abs(), open_gap.abs()


def concentrator(q0_per_module: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_l (1 - prod_{i in H_l} q0_i): the expected number of modules not entirely
    closed. R_conc = lambda * lambda_c * concentrator(...)."""
    return sum((1.0 - q0.prod()) for q0 in q0_per_module)


def concentrator_weight_lower_bound(
    q0_per_module: Sequence[torch.Tensor],
    q1_per_module: Sequence[torch.Tensor],
    open_per_module: Sequence[torch.Tensor],
    cap: float,
) -> torch.Tensor:
    """lambda_c, the reference's lower bound: the minimum over open heads i (module l) of

        lb_i = 2 max(1, q1_i (1 - q1_i) / (q0_i (1 - q0_i))) / prod_{j in H_l, j != i} q0_j

    capped at ``cap`` (``cap`` when no head is open). ``open_per_module`` holds boolean masks of
    the heads that count as open: this plugin passes deterministic gate z > 0 (a head that
    still reaches the output at test time), where the reference takes log_alpha above the
    lower clip bound (docs/method.md, "Concentrator"). A 0-d float64 tensor, no host sync.
    """
    bounds = []
    for q0, q1, is_open in zip(q0_per_module, q1_per_module, open_per_module):
        q0, q1 = q0.detach().double(), q1.detach().double()
        ratio = (q1 * (1 - q1)) / (q0 * (1 - q0))
        others = q0.prod() / q0  # prod_{j != i} q0_j (q0 is clamped away from 0)
        lb = 2.0 * ratio.clamp(min=1.0) / others
        bounds.append(torch.where(is_open.to(lb.device), lb, torch.full_like(lb, math.inf)))
    return torch.cat(bounds).min().clamp(max=cap)


def expected_l0(q0: torch.Tensor) -> torch.Tensor:
    """Voita et al.'s penalty: the expected number of non-zero gates, sum_i (1 - q0_i)."""
    return (1.0 - q0).sum()


def flat(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-module tensors into one flat per-head tensor."""
    return torch.cat([t.reshape(-1) for t in tensors])
