"""Running the external commands of a long job (the demo, a sweep): each command's output is
echoed without fairseq's console noise and copied whole to a log; a failure becomes a
:class:`JobError`, one line for the user."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import List, Optional


class JobError(Exception):
    """A step of a job cannot go on: the message is one line (what failed, where its log is)."""


#: console noise (the full output still goes to the log): Python warnings, hydra's
#: deprecation notes, fairseq's one-line config dump and the model printout
_NOISE = re.compile(r"Warning:|^See https://hydra|^The version_base|^Please specify a compat|^Will assume default"
                    r"|^'config' is validated|^This behavior is deprecated|^The strict flag|^DEBUG:hydra"
                    r"|tensorboardX|\{'_name': |can_reuse_epoch_itr|reuse_dataloader = |rebuild_batches = |^\)$")


def tool(name: str) -> str:
    """The path of the console script ``name`` (fairseq-train, pass-prune-checkpoint, ...)
    installed beside the running interpreter, else the one on ``PATH`` (an install with
    ``pip --target``, whose scripts land in a folder of their own)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if found is None:
        raise JobError(f"{name} not found next to {sys.executable} nor on PATH: install the environment first"
                       " (make venv)")
    return found


def run(cmd: List[str], log_path: Optional[str] = None, append: bool = False, show: bool = True) -> int:
    """Run ``cmd`` in the current directory, echo its output (without the noise, long lines
    cut) and copy all of it to ``log_path``. Returns the exit status; on failure the last
    lines of output go to stderr."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    log = open(log_path, "a" if append else "w", encoding="utf-8", buffering=1) if log_path else None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env, errors="replace")
    except OSError as e:
        if log:
            log.close()
        raise JobError(f"cannot start {cmd[0]}: {e}")
    tail = []
    for line in proc.stdout:
        if log:
            log.write(line)
        text = line.rstrip("\n")
        tail = (tail + [text])[-15:]
        if show and text.strip() and not text[0].isspace() and not _NOISE.search(text):
            print(text if len(text) <= 240 else text[:237] + "...", flush=True)
    rc = proc.wait()
    if log:
        log.close()
    if rc != 0:
        print("\n".join("  | " + t for t in tail[-10:]), file=sys.stderr)
    return rc


def check(rc: int, what: str, log_path: Optional[str] = None) -> None:
    """Raise :class:`JobError` when ``rc`` (of :func:`run`) is not 0."""
    if rc != 0:
        where = f"; full log: {log_path}" if log_path else ""
        raise JobError(f"{what} failed (exit status {rc}){where}")
