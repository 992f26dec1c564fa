"""The plugin's command-line tools, installed as console scripts by ``setup.py``
(``pass-prune-checkpoint``, ``pass-inspect-gates``, ``pass-michel-prune``,
``pass-bench-inference``, ``pass-bench-training``, ``pass-profile-step``, ``pass-flags``, ``pass-sweep``,
``pass-train-distributed``, ``pass-convert-bert``); each also runs as ``python -m
pass_fairseq.cli.<module>``, e.g. where nothing is pip-installed and the checkout is on
``PYTHONPATH``."""
import argparse
import logging
import functools
from typing import Callable, List, Optional

from pass_fairseq.errors import exit_on_error, fail


def quiet_fairseq_logging() -> None:
    """fairseq's speech tasks call ``logging.basicConfig(INFO)`` when fairseq is imported;
    a command-line tool keeps stderr to its own lines (warnings and errors still show)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)


def parse_cli(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """What every tool's ``main`` does first: quiet fairseq's logging, and parse ``argv``
    with usage errors as one line (exit 2)."""
    quiet_fairseq_logging()
    parser.error = lambda message: fail(message)
    return parser.parse_args(argv)


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """A tool's ``main`` whose library errors (:class:`~pass_fairseq.errors.PassError`) end
    in the one-line message and exit 2, never a traceback."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        with exit_on_error():
            return main(*args, **kwargs)
    return wrapped


def parse_int_list(text: str, flag: str) -> List[int]:
    """A comma-separated list of positive integers (``64,1``) given to ``flag``; one-line
    error otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        fail(f"{flag} {text}: give positive integers, comma-separated (e.g. 64,1)")
    return values
