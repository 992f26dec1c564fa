"""Reading fairseq-train's ``--log-format simple`` logs (one home for the patterns)."""
import re
from typing import List, Tuple

_UPDATES = re.compile(r"num_updates (\d+)")
_VALID = re.compile(r"\| valid on 'valid' subset \| loss ([0-9.]+) \| nll_loss ([0-9.]+) \| ppl ([0-9.]+)"
                    r".*?\| num_updates (\d+)")


def last_update(text: str) -> int:
    """The highest update number the log mentions (0 when none)."""
    return max([int(m) for m in _UPDATES.findall(text)] or [0])


def valid_curve(text: str) -> List[Tuple[int, float, float, float]]:
    """(updates, valid loss, nll loss, perplexity) of every validation in the log, by update;
    a validation repeated after a resume counts once (the later line wins)."""
    points = {int(n): (float(loss), float(nll), float(ppl)) for loss, nll, ppl, n in _VALID.findall(text)}
    return [(n, *points[n]) for n in sorted(points)]
