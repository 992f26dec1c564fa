"""``--pass-method``: what each pruning method trains, in one table (docs/method.md, "Baselines").

The model reads it for its defaults (gate type, training noise, frozen gates), the criterion
for its regulariser, the task for the schedule it runs (lambda, clipping, reopening for
Hard Concrete gates; the temperature for the soft top-K). No fairseq here.
"""
from typing import NamedTuple, Optional

GATE_TYPES = ("hard-concrete", "subset")


class Method(NamedTuple):
    #: the gate type it trains (None: either; the default is hard-concrete)
    gate_type: Optional[str]
    #: the gates get gradients and the gate learning rate (else frozen: requires_grad False)
    trains_gates: bool
    #: the regulariser R added to the loss: "pass" (R_pass, R_conc), "l0" (Voita) or None
    regulariser: Optional[str]
    #: needs --pass-target-heads K
    needs_target: bool
    #: the Hard Concrete schedule: clipping and selective reopening of log_alpha
    clips_and_reopens: bool
    #: subset gates in training (:data:`pass_fairseq.subset_gates.RELAXATIONS`), else None
    relaxation: Optional[str] = None


METHODS = {
    "pass": Method("hard-concrete", True, "pass", True, True),
    "voita": Method("hard-concrete", True, "l0", False, True),
    "dsp": Method("subset", True, None, True, False, "soft-top-k"),
    "ste": Method("subset", True, None, True, False, "straight-through"),
    "fixed": Method(None, False, None, False, False),
}
METHOD_NAMES = tuple(METHODS)
DEFAULT_METHOD = "pass"


def method(name: Optional[str]) -> Method:
    """The method called ``name`` (the default method when None)."""
    return METHODS[str(name or DEFAULT_METHOD)]
