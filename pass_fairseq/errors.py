"""One-line usage errors: what is wrong and how to fix it, no traceback."""
import sys
from typing import NoReturn


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``pass_fairseq: error: MESSAGE`` on stderr and exit with ``code``."""
    print(f"pass_fairseq: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
