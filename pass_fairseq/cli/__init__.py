"""The plugin's command-line tools, installed as console scripts by ``setup.py``
(``pass-prune-checkpoint``, ``pass-inspect-gates``, ``pass-michel-prune``,
``pass-bench-inference``, ``pass-bench-training``, ``pass-flags``); ``scripts/*.py`` are the
same commands for a checkout without ``pip install``."""
import logging


def quiet_fairseq_logging() -> None:
    """fairseq's speech tasks call ``logging.basicConfig(INFO)`` when fairseq is imported;
    a command-line tool keeps stderr to its own lines (warnings and errors still show)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
