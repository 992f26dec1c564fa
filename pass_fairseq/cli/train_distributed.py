"""``pass-train-distributed [--nproc N] [--threads T] -- FAIRSEQ_TRAIN_ARGS``: fairseq-train in N
data-parallel processes on this machine's CPUs (torch.distributed, gloo). It runs torchrun,
which starts :mod:`pass_fairseq.distributed` (fairseq-train with the flags that make fairseq's
distributed engine work on CPU) in every process."""
import argparse
import os
import subprocess
import sys
from typing import List, Optional, Tuple

from pass_fairseq.cli import one_line_errors, parse_cli
from pass_fairseq.distributed import OWNED_FLAGS, check_fairseq_args, torchrun_command, worker_env
from pass_fairseq.errors import fail


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pass-train-distributed",
        usage="pass-train-distributed [--nproc N] [--threads T] -- DATA --user-dir pass_fairseq ...",
        description="fairseq-train in N data-parallel CPU processes on this machine (torch.distributed with"
                    " gloo, fairseq's legacy_ddp gradient all-reduce), started by torchrun. Everything after"
                    " -- goes to fairseq-train in every process; the launcher adds "
                    + ", ".join(OWNED_FLAGS) + " and --cpu. Exit status: torchrun's. GPUs: fairseq-train alone.")
    p.add_argument("--nproc", type=int, default=2, metavar="N",
                   help="processes, one data-parallel worker each (default 2); a batch of --max-tokens per"
                        " process, so an update holds N x --update-freq batches")
    p.add_argument("--threads", type=int, metavar="T",
                   help="torch threads per process (OMP_NUM_THREADS; default: CPU cores / N, at least 1)")
    return p


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """The launcher's own arguments and fairseq-train's, split at the first ``--``."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    own, fairseq_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    args = parse_cli(build_parser(), own)
    if args.nproc < 1 or (args.threads is not None and args.threads < 1):
        fail("--nproc and --threads must be at least 1")
    if not fairseq_args:
        fail("no fairseq-train arguments: give them after --, e.g. pass-train-distributed --nproc 2 --"
             " DATA --user-dir pass_fairseq --task translation_pass ...")
    check_fairseq_args(fairseq_args)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
    return subprocess.call(torchrun_command(args.nproc, fairseq_args), env=worker_env(os.environ, threads))


if __name__ == "__main__":  # python -m pass_fairseq.cli.train_distributed
    sys.exit(main())
