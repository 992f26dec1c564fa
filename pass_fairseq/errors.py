"""Errors for the user, in one line: what is wrong and how to fix it, no traceback.

Library code raises a :class:`PassError` (:class:`~pass_fairseq.pruning.PruningError`,
:class:`~pass_fairseq.checkpoints.CheckpointError`, :class:`~pass_fairseq.flag_checks.FlagError`,
...); only the command-line tools (:func:`pass_fairseq.cli.one_line_errors`) and the fairseq
build paths (a task, model, criterion or optimizer being built) turn it into the message,
with :func:`fail`.
"""
import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn


class PassError(ValueError):
    """Bad input found by the library; the message is one line meant for the user."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``pass_fairseq: error: MESSAGE`` on stderr and exit with ``code``."""
    print(f"pass_fairseq: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Where a library error ends the program (a tool's ``main``, a fairseq build path): a
    :class:`PassError` inside becomes its one-line message and exit 2."""
    try:
        yield
    except PassError as e:
        fail(str(e))
