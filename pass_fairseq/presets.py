"""``--pass-preset``: named sets of schedule settings (docs/method.md, "Presets").

Each setting below is also a flag of its own, whose default ``None`` means "as the preset
says"; a flag given explicitly wins over the preset. The preset is a task flag; the model,
criterion and optimizer read it through the task (or the task's config).

* ``plugin`` (default): this plugin's choices, each argued in docs/method.md.
* ``reference``: the encoder-decoder schedule of the reference code as it actually runs
  (DujianDing/PASS @ 3800a9e, ``fairseq/examples/pruning/run_pass.py``, ``fairseq/trainer.py``,
  ``fairseq/fairseq/optim/adam.py``): log_alpha clamped to [-5, 5] at epoch starts only,
  lambda doubled at every epoch start (the first included) while the number of gates at the
  lower bound differs from N - K, reopening at every epoch start, attention confidences that
  include the validation passes, and the main weight decay on the gates (their learning rate
  stays the constant 0.2 in both presets).
"""
from typing import Any, Optional

#: setting -> value, per preset
PRESETS = {
    "plugin": {
        "clip_min": -10.0,
        "clip_max": 10.0,
        "clip_when": "update",
        "lambda_rule": "on-target",
        "reopen_until": "half",
        "confidence": "train",
        "gate_weight_decay": 0.0,
    },
    "reference": {
        "clip_min": -5.0,
        "clip_max": 5.0,
        "clip_when": "epoch",
        "lambda_rule": "clipped-count",
        "reopen_until": "all",
        "confidence": "train-valid",
        "gate_weight_decay": "main",
    },
}
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "plugin"


def preset_value(preset: Optional[str], setting: str, given: Any = None) -> Any:
    """``given`` when the user set it (not None), else the preset's value of ``setting``."""
    if given is not None:
        return given
    return PRESETS[str(preset or DEFAULT_PRESET)][setting]
