"""Writing a file whole or not at all, the one way the plugin writes results and checkpoints.

:func:`atomic_write` writes through a temporary file of its own beside the target and renames
it over the target once it is complete and on disk: a crash, an error or an interrupt leaves
the old file (or none), never half a file; writers of one path side by side (processes of a
sweep) each write their own temporary, and the last rename wins.
"""
import json
import os
import uuid
from contextlib import contextmanager
from typing import IO, Iterator, Optional


@contextmanager
def atomic_write(path: str, mode: str = "w", newline: Optional[str] = None) -> Iterator[IO]:
    """A file object to write ``path`` through (``mode`` ``"w"``: UTF-8 text, ``"wb"``: bytes);
    ``path``'s folder is made if missing. The file gets a normal file's permissions."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole file: mode 'w' or 'wb', not {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    binary = mode == "wb"
    try:
        with open(tmp, "xb" if binary else "x", newline=None if binary else newline,
                  encoding=None if binary else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj, indent: int = 2) -> None:
    """Write ``obj`` as JSON, atomically, with a final newline."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
