"""scripts/frozen_sweep.sh refuses bad input with one line before it makes a worktree (the
worktree, venv and sweep themselves are what results/deb-de-en-v2 was run with)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "frozen_sweep.sh")


@pytest.mark.parametrize("args, says", [
    (["HEAD"], "usage:"),
    (["HEAD", "results/no-such/sweep.json"], "results/no-such/sweep.json: no such sweep config"),
    (["not-a-commit", "results/deb-de-en-v2/sweep.json"], "not-a-commit: not a commit of this repository"),
])
def test_bad_input_is_one_line_and_makes_no_worktree(args, says):
    before = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout
    out = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and says in out.stderr
    assert subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout == before
