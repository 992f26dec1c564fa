"""The job helpers: finding the console scripts, writing files whole."""
import os
import stat

import pytest

from pass_fairseq.experiments.jobs import JobError, tool
from pass_fairseq.files import atomic_write


def test_tool_is_found_beside_python_else_on_path(tmp_path, monkeypatch):
    assert os.path.isfile(tool("fairseq-train"))  # beside the interpreter (the environment's own)
    script = tmp_path / "pass-made-up-tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tool("pass-made-up-tool") == str(script)  # a pip --target install puts its scripts in a folder of its own
    with pytest.raises(JobError, match="pass-missing-tool not found next to .* nor on PATH"):
        tool("pass-missing-tool")


def test_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = str(tmp_path / "sub" / "out.csv")
    with atomic_write(path) as f:
        f.write("one\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert open(path).read() == "one\n" and os.listdir(tmp_path / "sub") == ["out.csv"]
    with atomic_write(path) as first:  # two writers of one path at once (processes side by side)
        with atomic_write(path) as second:
            second.write("second\n")
        first.write("first\n")
    assert open(path).read() == "first\n" and os.listdir(tmp_path / "sub") == ["out.csv"]
