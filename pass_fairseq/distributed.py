"""Data-parallel training on several CPU processes: fairseq's own distributed engine with
torch.distributed's gloo backend (docs/distributed.md).

fairseq 0.12's launch paths assume a GPU per process. On a CPU machine:

* its torchrun detection (``infer_init_method`` when torchrun's RANK, WORLD_SIZE,
  MASTER_ADDR and MASTER_PORT are set) computes ``device_id = rank % torch.cuda.device_count()``,
  a ZeroDivisionError without a GPU;
* given ``--distributed-init-method`` but not ``--distributed-no-spawn``, it spawns
  ``min(torch.cuda.device_count(), world size)`` processes: none, and exits 0 without training;
* ``--ddp-backend pytorch_ddp`` (c10d) hands torch's DistributedDataParallel CUDA
  ``device_ids``, which it refuses for a CPU module.

So every process, started by torchrun, runs fairseq-train with :func:`rank_flags`: the rank and
world size from torchrun's environment, ``env://`` init, no spawning, gloo, and fairseq's
``legacy_ddp`` wrapper (it all-reduces the gradients itself, with no device ids)::

    torchrun --nproc-per-node 2 -m pass_fairseq.distributed DATA --user-dir pass_fairseq ...

``pass-train-distributed --nproc 2 -- DATA ...`` (:mod:`pass_fairseq.cli.train_distributed`)
runs that command on one machine. fairseq's GPU path (NCCL, one process per GPU) needs none
of this: fairseq-train alone spawns it.
"""
import logging
import os
import sys
from typing import List, Mapping, Optional, Sequence

from pass_fairseq.errors import PassError, fail

#: fairseq flags that :func:`rank_flags` sets for every process (besides ``--cpu``)
OWNED_FLAGS = ("--distributed-world-size", "--distributed-rank", "--distributed-init-method",
               "--distributed-backend", "--distributed-no-spawn", "--ddp-backend", "--device-id")
#: what every process runs under torchrun
RANK_ENTRY = ["-m", "pass_fairseq.distributed"]


class LaunchError(PassError):
    """A distributed run that cannot start as asked; the message is one line for the user."""


def check_fairseq_args(args: Sequence[str]) -> None:
    """A :class:`LaunchError` when ``args`` (fairseq-train's) set a flag the recipe owns."""
    given = sorted({a.split("=", 1)[0] for a in args} & set(OWNED_FLAGS))
    if given:
        raise LaunchError(f"{', '.join(given)}: set by the distributed launcher for every process (gloo on CPU);"
             " drop them from the fairseq-train arguments")


def rank_flags(environ: Mapping[str, str]) -> List[str]:
    """fairseq-train flags for the process torchrun started with ``environ``."""
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        raise LaunchError("RANK and WORLD_SIZE are not set: start this module with torchrun, or use pass-train-distributed")
    return ["--cpu", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
            "--distributed-init-method", "env://", "--distributed-no-spawn",
            "--distributed-world-size", str(world), "--distributed-rank", str(rank), "--device-id", "0"]


def worker_env(environ: Mapping[str, str], threads: int) -> dict:
    """``environ`` for the torchrun processes: ``threads`` torch threads each, and this
    ``pass_fairseq`` importable (also from a checkout that is not pip-installed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    return dict(environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=path)


def torchrun_command(nproc: int, fairseq_args: Sequence[str], entry: Optional[Sequence[str]] = None) -> List[str]:
    """The torchrun command that runs ``entry`` (default :data:`RANK_ENTRY`) with
    ``fairseq_args`` in ``nproc`` processes on this machine (``--standalone``: a free
    rendezvous port on localhost)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            *(entry or RANK_ENTRY), *fairseq_args]


def fairseq_train_logging() -> None:
    """fairseq-train's log lines on stdout. fairseq_cli.train configures them when imported
    first; here the plugin's import came first, and fairseq's speech tasks had already
    configured logging their way."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        level=os.environ.get("LOGLEVEL", "INFO").upper(), stream=sys.stdout, force=True)


def train_rank(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> None:
    """fairseq-train with ``args`` as this torchrun process: fairseq_cli.train.cli_main's
    parsing and ``call_main``, with :func:`rank_flags` appended."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train

    check_fairseq_args(args)
    flags = rank_flags(environ)
    fairseq_train_logging()
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [*args, *flags]))
    distributed_utils.call_main(cfg, train.main)


if __name__ == "__main__":
    try:
        train_rank(sys.argv[1:])
    except LaunchError as e:
        fail(str(e))
