"""Head masks that train no gates (docs/method.md, "Baselines"): Michel et al. (2019, "Are
Sixteen Heads Really Better than One?") and random heads.

No fairseq here: the model's gates and the loss come in as modules and callables, so the
selection can be tested alone; ``pass-michel-prune`` (:mod:`pass_fairseq.cli.michel_prune`)
is the fairseq glue. Heads are numbered flat over the model's gated modules in state-dict
order (module sizes ``sizes``), as everywhere in the plugin.

* importance of head h with mask xi (xi_h = 1 for the heads present, 0 for those removed),
  from the loss L_b of each held-in batch b, the gate value z_h = xi_h standing for the head
  mask (Michel's eq. 2, one absolute value per batch, as their code accumulates it)::

      I_h = sum_b | dL_b / dxi_h |

* normalised per attention module over the heads still present (Michel's layer-wise l2
  normalisation), I_h / sqrt(sum_{j in module(h), present} I_j^2);
* pruning: from all N heads, remove the ``step`` present heads of lowest normalised
  importance (ties to the lower flat index), recompute the importance with the new mask, and
  go on; never past the next requested K, so every K is reached exactly and the masks are
  nested (the K = 8 mask is a subset of the K = 16 mask).
"""
import contextlib
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor, nn


def split_kept(mask: Tensor, sizes: Sequence[int]) -> List[List[int]]:
    """Kept head indices per module from a flat 0/1 (or bool) mask."""
    return [[h for h, v in enumerate(m.tolist()) if v] for m in mask.reshape(-1).split(list(sizes))]


def check_targets(total: int, targets: Iterable[int]) -> List[int]:
    """The requested target head counts K, largest first, each in 1..total (ValueError otherwise)."""
    checked = sorted({int(target_heads) for target_heads in targets}, reverse=True)
    if not checked or checked[-1] < 1 or checked[0] > total:
        raise ValueError(f"head counts must be in 1..{total}, got {sorted(set(targets))}")
    return checked


def normalise_per_module(importance: Tensor, present: Tensor, sizes: Sequence[int]) -> Tensor:
    """I_h / ||I of the present heads of h's module||_2 for present heads, 0 for the others
    (and for a module whose present heads all have importance 0)."""
    kept = importance.float() * present.float()
    parts = []
    for part in kept.split(list(sizes)):
        norm = part.norm()
        parts.append(part / norm if norm > 0 else torch.zeros_like(part))
    return torch.cat(parts)


def least_important(scores: Tensor, present: Tensor, n: int) -> Tensor:
    """Flat indices of the ``n`` present heads of lowest score (ties to the lower index)."""
    ranked = torch.where(present, scores.float(), torch.full_like(scores.float(), float("inf")))
    return torch.sort(ranked, stable=True).indices[:n]


def iterative_masks(importance_fn: Callable[[Tensor], Tensor], sizes: Sequence[int], targets: Iterable[int],
                    step: int) -> Tuple[Dict[int, Tensor], List[dict]]:
    """Michel's iterative pruning: ({K: flat bool mask of the kept heads}, the steps).

    ``importance_fn(mask)`` returns the flat importance I (module docstring) for a float
    mask; each step records the heads present before it, I, the normalised scores and the
    heads removed."""
    total = sum(sizes)
    targets = check_targets(total, targets)
    if step < 1:
        raise ValueError(f"remove at least one head per step, got {step}")
    present = torch.ones(total, dtype=torch.bool)
    masks: Dict[int, Tensor] = {}
    steps: List[dict] = []
    for target_heads in targets:
        while int(present.sum()) > target_heads:
            importance = importance_fn(present.float()).detach().cpu().float()
            scores = normalise_per_module(importance, present, sizes)
            removed = least_important(scores, present, min(step, int(present.sum()) - target_heads))
            steps.append({"heads": int(present.sum()), "importance": importance.tolist(),
                          "normalised": scores.tolist(), "removed": removed.tolist()})
            present[removed] = False
        masks[target_heads] = present.clone()
    return masks, steps


def random_masks(total: int, targets: Iterable[int], seed: int) -> Tuple[Dict[int, Tensor], List[int]]:
    """({K: flat bool mask}, the order): the first K heads of one seeded random permutation,
    so the masks are nested too."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    masks = {}
    for target_heads in check_targets(total, targets):
        mask = torch.zeros(total, dtype=torch.bool)
        mask[order[:target_heads]] = True
        masks[target_heads] = mask
    return masks, order.tolist()


@contextlib.contextmanager
def gates_replaced(gates: Sequence[nn.Module], values: Tensor) -> Iterator[None]:
    """Inside, every gate module returns its slice of the flat ``values`` instead of its own
    gates (a forward hook replaces its output), so the gradient reaches ``values``."""
    slices = values.split([g.num_gates for g in gates])
    handles = [g.register_forward_hook(lambda module, inputs, output, z=z: z) for g, z in zip(gates, slices)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_importance(gates: Sequence[nn.Module], loss_fn: Callable[[object], Tensor], batches: Sequence[object],
                    mask: Tensor) -> Tensor:
    """I_h = sum_b |dL_b / dxi_h| at xi = ``mask`` (flat float), over ``batches``;
    ``loss_fn(batch)`` runs the model (its gates replaced by xi) and returns the loss."""
    xi = mask.detach().float().clone().requires_grad_(True)
    total = torch.zeros_like(xi)
    with gates_replaced(gates, xi):
        for batch in batches:
            (grad,) = torch.autograd.grad(loss_fn(batch), xi)
            total += grad.abs()
    return total
