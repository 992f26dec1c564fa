"""Library code raises typed errors (:class:`pass_fairseq.errors.PassError`); only the tools
and fairseq's build paths turn them into the one-line message and exit 2."""
import pytest
import torch

from pass_fairseq.checkpoints import CheckpointError, load_checkpoint
from pass_fairseq.cli import inspect_gates, prune_checkpoint
from pass_fairseq.distributed import LaunchError, check_fairseq_args
from pass_fairseq.errors import PassError
from pass_fairseq.gate_report import gate_report
from pass_fairseq.pruning import PruningError


def test_the_library_raises_typed_errors_not_exits(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read it as a fairseq checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    torch.save({"weights": {}}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        load_checkpoint(str(tmp_path / "nomodel.pt"))
    with pytest.raises(PruningError, match="no gates in this checkpoint"):
        gate_report({"encoder.embed_tokens.weight": torch.zeros(2, 2)})
    with pytest.raises(LaunchError, match="--distributed-world-size: set by the distributed launcher"):
        check_fairseq_args(["data", "--distributed-world-size", "2"])
    for error in (CheckpointError, PruningError, LaunchError):
        assert issubclass(error, PassError)


@pytest.mark.parametrize("main,argv", [(inspect_gates.main, ["{missing}"]),
                                       (prune_checkpoint.main, ["{missing}", "{out}"])])
def test_the_tools_turn_them_into_one_line(tmp_path, capsys, main, argv):
    paths = {"missing": str(tmp_path / "missing.pt"), "out": str(tmp_path / "out.pt")}
    with pytest.raises(SystemExit) as e:
        main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"pass_fairseq: error: {paths['missing']}: no such checkpoint\n"
    assert not (tmp_path / "out.pt").exists()
