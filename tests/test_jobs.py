"""The job helpers: finding the console scripts."""
import os
import stat

import pytest

from pass_fairseq.experiments.jobs import JobError, tool


def test_tool_is_found_beside_python_else_on_path(tmp_path, monkeypatch):
    assert os.path.isfile(tool("fairseq-train"))  # beside the interpreter (the environment's own)
    script = tmp_path / "pass-made-up-tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tool("pass-made-up-tool") == str(script)  # a pip --target install puts its scripts in a folder of its own
    with pytest.raises(JobError, match="pass-missing-tool not found next to .* nor on PATH"):
        tool("pass-missing-tool")
