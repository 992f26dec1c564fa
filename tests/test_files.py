"""Writing a file whole or not at all (:mod:`pass_fairseq.files`)."""
import json
import os
import stat

import pytest
import torch

from pass_fairseq.checkpoints import save_atomic
from pass_fairseq.files import atomic_write, write_json


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


def test_binary_writes_checkpoints_and_json_are_whole_with_a_normal_files_mode(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    save_atomic({"model": {"w": torch.ones(2)}}, path)
    assert torch.load(path, weights_only=True)["model"]["w"].tolist() == [1.0, 1.0]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_write(path, "wb") as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert torch.load(path, weights_only=True)["model"]["w"].tolist() == [1.0, 1.0]
    write_json(str(tmp_path / "r.json"), {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "r.json"]
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(path, "a"):
            pass
