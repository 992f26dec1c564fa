"""PASS's target schedule (``--pass-target-schedule``): the number of open heads that R_pass
asks for at each update, annealed from all N heads down to K and then held at K
(docs/method.md, "Target schedule").

    K_t = K + (N - K) * (1 - min(t, T) / T) ** p        p = 1 (linear) or 3 (cubic)

t counts the updates of this run and T is ``--pass-target-anneal-updates``; ``constant``
(K_t = K from the first update) is the paper's. The cubic form is the gradual-pruning schedule
of Zhu & Gupta (2017, eq. 1), written for a count of heads instead of a sparsity. Why: with a
constant target, both gap terms of R_pass push every gate down alike while too many heads are
open, so in a short fine-tune the whole population slides below K together and which heads
survive is decided by the collapse, not by their importance; a target that falls slowly lets
the translation loss tell the gates apart on the way down.

Pure Python, no torch and no fairseq.
"""

#: ``--pass-target-schedule``'s choices -> the exponent p of the annealing (None: no annealing)
TARGET_SCHEDULES = {"constant": None, "linear": 1, "cubic": 3}


def scheduled_target(update: int, num_heads: int, target_heads: int, schedule: str, anneal_updates: int) -> float:
    """K_t, the target of open heads after ``update`` updates of this run (the module
    docstring): ``num_heads`` is N, ``target_heads`` K, ``anneal_updates`` T. A float: R_pass
    takes a fractional target, so the pull on the gates changes smoothly."""
    power = TARGET_SCHEDULES[schedule]
    if power is None or anneal_updates <= 0 or update >= anneal_updates:
        return float(target_heads)
    remaining = 1.0 - max(update, 0) / anneal_updates
    return target_heads + (num_heads - target_heads) * remaining ** power


def annealing(update: int, schedule: str, anneal_updates: int) -> bool:
    """Whether the target is still falling after ``update`` updates (K_t > K)."""
    return TARGET_SCHEDULES[schedule] is not None and update < anneal_updates
