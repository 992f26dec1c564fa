"""Every flag of the plugin (``--pass-*``, and ``--kd-*`` for distillation) with its help text.

``fairseq-train --help`` prints its help at the first of its two parsing passes, before it
adds the flags of the chosen model, task, criterion and optimizer, so the plugin's flags
never show there. ``pass-flags`` prints them, grouped by where they live.
"""
import argparse
import sys
from typing import List, Optional

from fairseq.dataclass.utils import gen_parser_from_dataclass

from pass_fairseq.cli import quiet_fairseq_logging
from pass_fairseq.criterions.distillation import DistillationConfig
from pass_fairseq.criterions.pass_regularizer import PassRegularizerConfig
from pass_fairseq.models.gating import add_gate_args
from pass_fairseq.models.pruned import add_pruned_args
from pass_fairseq.optim.pass_adam import PassAdamConfig
from pass_fairseq.tasks.pass_schedule import PassScheduleConfig


#: the prefixes of the plugin's own flags
PREFIXES = ("--pass-", "--kd-")


def _plugin_actions(add) -> List[argparse.Action]:
    """The plugin's options (:data:`PREFIXES`) that ``add(parser)`` puts on a fresh parser."""
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    return [a for a in parser._actions if any(s.startswith(PREFIXES) for s in a.option_strings)]


#: (group title, what adds the group's flags); translation and language models share them
SOURCES = [
    ("model --arch transformer_pass / transformer_pass_iwslt / transformer_lm_pass / transformer_lm_pass_gpt2_tiny",
     add_gate_args),
    ("model --arch transformer_pass_pruned / transformer_lm_pass_pruned (written by pass-prune-checkpoint)",
     add_pruned_args),
    ("task --task translation_pass / language_modeling_pass",
     lambda p: gen_parser_from_dataclass(p, PassScheduleConfig())),
    ("criterion --criterion pass_label_smoothed_cross_entropy / pass_cross_entropy",
     lambda p: gen_parser_from_dataclass(p, PassRegularizerConfig())),
    ("criterion --criterion pass_label_smoothed_cross_entropy / label_smoothed_cross_entropy_kd (distillation)",
     lambda p: gen_parser_from_dataclass(p, DistillationConfig())),
    ("optimizer --optimizer pass_adam", lambda p: gen_parser_from_dataclass(p, PassAdamConfig())),
]


def build_parser() -> argparse.ArgumentParser:
    """A parser whose help lists the plugin's flags, one group per component."""
    parser = argparse.ArgumentParser(prog="pass-flags", description=__doc__.split("\n\n")[0])
    for title, add in SOURCES:
        group = parser.add_argument_group(title)
        for action in _plugin_actions(add):
            if action.default not in (None, False, argparse.SUPPRESS) and "default" not in (action.help or ""):
                action.help = f"{action.help} (default: {action.default})"
            group._add_action(action)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    quiet_fairseq_logging()
    parser = build_parser()
    parser.parse_args(argv)  # --help prints and exits; nothing else is accepted
    parser.print_help()
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.pass_flags
    sys.exit(main())
