"""The gate schedule's state and steps: clipping and selective reopening of gates
(docs/method.md, "Clipping and selective reopening").

Pure torch, no fairseq. The task calls these at epoch starts and after every update.
"""
from typing import Optional

import torch

#: the schedule's state, kept as buffers of the gated model because fairseq restores the model
#: on resume but not the task (:class:`pass_fairseq.models.gating.GatedModelMixin`): the last
#: epoch whose start was handled, how often lambda has been multiplied, and the updates of this run
SCHEDULE_BUFFERS = ("pass_epoch", "pass_lambda_steps", "pass_num_updates")


def reopen_probabilities(confidence: torch.Tensor, closed: torch.Tensor, epoch: int,
                         decay: float) -> torch.Tensor:
    """p_i = c_i / max_j c_j * decay^(epoch - 2) for closed gates i, 0 for the others.

    ``confidence`` holds every head's attention confidence c (all modules, flat);
    ``closed`` marks the gates sitting at the lower clip bound.
    """
    top = confidence.max()
    if not bool(closed.any()) or top <= 0:
        return torch.zeros_like(confidence)
    p = confidence / top * decay ** max(epoch - 2, 0)
    return torch.where(closed, p.clamp(0.0, 1.0), torch.zeros_like(p))


def sample_reopen(probabilities: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """Bernoulli draws from a CPU generator seeded by (seed, epoch), so that every
    distributed worker, given the same all-reduced probabilities, decides the same."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    u = torch.rand(probabilities.shape, generator=generator)
    return u < probabilities.detach().cpu().float()


@torch.no_grad()
def constrain_(log_alpha: torch.Tensor, reopen: Optional[torch.Tensor], clip_min: float,
               clip_max: float, clamp: bool = True) -> torch.Tensor:
    """In place: reset the gates marked in ``reopen`` to ``clip_max``, then (``clamp``)
    clamp all of ``log_alpha`` to [clip_min, clip_max]."""
    if reopen is not None:
        log_alpha.masked_fill_(reopen.to(log_alpha.device), clip_max)
    return log_alpha.clamp_(clip_min, clip_max) if clamp else log_alpha

