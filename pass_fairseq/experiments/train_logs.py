"""Reading fairseq-train's ``--log-format simple`` logs (one home for the patterns)."""
import re
from typing import Dict, List, Sequence, Tuple

_UPDATES = re.compile(r"num_updates (\d+)")
_TRAIN_INNER = re.compile(r"\| train_inner \| .*")
_KEY_VALUE = re.compile(r"(\w+)=(-?[0-9][0-9.e+-]*|inf|nan)")
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


def train_curve(text: str, keys: Sequence[str]) -> List[Tuple[int, Dict[str, float]]]:
    """(updates, {key: value}) of every ``train_inner`` line (the means over its
    ``--log-interval``) that has all of ``keys``, by update; a line repeated after a resume
    counts once (the later line wins)."""
    points = {}
    for line in _TRAIN_INNER.findall(text):
        values = dict(_KEY_VALUE.findall(line))
        if "num_updates" in values and all(k in values for k in keys):
            points[int(values["num_updates"])] = {k: float(values[k]) for k in keys}
    return [(n, points[n]) for n in sorted(points)]
