"""The ranges of the plugin's numeric ``--pass-*`` flags, checked when a run is built (the
model, task, criterion and optimizer each check their own flags), so that a value out of
range is one line before any update, not gates pushed the wrong way or a traceback deep
inside torch (``--pass-lambda-init nan``).

    check_flags({"--pass-gate-lr": (cfg.pass_gate_lr, POSITIVE)})   # raises FlagError

No fairseq; the fairseq build paths turn :class:`FlagError` into the one-line message.
"""
import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from pass_fairseq.errors import PassError


class FlagError(PassError):
    """A flag's value is outside its range: the message names the flag, the value and the range."""


class Range(NamedTuple):
    """What a flag accepts: finite values for which ``accepts`` holds, said as ``what``."""

    accepts: Callable[[float], bool]
    what: str


FINITE = Range(lambda v: True, "a finite number")
POSITIVE = Range(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = Range(lambda v: v >= 0, "a number >= 0")
AT_LEAST_ONE = Range(lambda v: v >= 1, "a number >= 1")
UNIT_INTERVAL = Range(lambda v: 0 < v <= 1, "a number in (0, 1]")


def check_flags(values: Dict[str, Tuple[Optional[float], Range]]) -> None:
    """Raise :class:`FlagError` for the first flag (``--name``: (value, range)) whose value
    is not finite or not in its range; a value of None (the flag not given, its default
    computed later) passes."""
    for flag, (value, allowed) in values.items():
        if value is None:
            continue
        number = float(value)
        if not math.isfinite(number) or not allowed.accepts(number):
            raise FlagError(f"{flag} {value}: out of range, give {allowed.what}")
