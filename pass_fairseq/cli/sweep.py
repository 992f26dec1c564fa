"""``pass-sweep CONFIG``: run the comparison sweep (see :mod:`pass_fairseq.experiments.sweep`
and its config, :mod:`pass_fairseq.experiments.sweep_config`), then
write the table and the plots from every finished run.

    pass-sweep results/deb-de-en/sweep.json              # every unfinished run, then the table
    pass-sweep results/deb-de-en/sweep.json --list       # the runs and which are finished
    pass-sweep results/deb-de-en/sweep.json --only pass,control
    pass-sweep results/deb-de-en/sweep.json --only pass-k16-s2,michel   # runs first, in this order
    pass-sweep results/deb-de-en/sweep.json --redo pass-k16-s1
    pass-sweep results/deb-de-en/sweep.json --table      # only rebuild table and plots
    pass-sweep results/deb-de-en/sweep.json --rebench    # time every finished run again (each K's runs side by
                                                         # side in one benchmark run), then the table
    pass-sweep CONFIG --only pass --no-table & pass-sweep CONFIG --only michel --no-table &
                                                         # side by side (a GPU), then --table once
    pass-sweep CONFIG --independent-methods              # methods that can run side by side
                                                         # (base first), or why they cannot

It resumes: finished runs are skipped, an interrupted fine-tune goes on from its last
checkpoint. Bad input: one line, exit 2.
"""
import argparse
import os
import sys
from typing import List, Optional

from pass_fairseq.cli import one_line_errors, parse_cli
from pass_fairseq.errors import fail
from pass_fairseq.experiments.jobs import JobError
from pass_fairseq.experiments.results_table import plot, write_table
from pass_fairseq.experiments.sweep import forget_run, rebench, run_sweep, write_finetune_curves
from pass_fairseq.experiments.sweep_config import Sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pass-sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config", help="the sweep's JSON config (e.g. results/deb-de-en/sweep.json)")
    p.add_argument("--list", action="store_true", help="list the runs (finished or not) and stop")
    p.add_argument("--only", metavar="M1,RUN2", help="run only these methods and runs (names as --list prints them),"
                   " in this order; with --rebench, time every finished run at their K's (a K's runs are timed"
                   " together)")
    p.add_argument("--redo", metavar="RUN", action="append", default=[],
                   help="forget this run's result and work folder first (repeatable)")
    p.add_argument("--table", action="store_true", help="only rebuild the table and plots")
    p.add_argument("--no-table", action="store_true",
                   help="do not rebuild the table and plots at the end (sweeps of one config running side by side"
                        " on disjoint --only runs; rebuild once with --table when they have finished)")
    p.add_argument("--rebench", action="store_true",
                   help="time every finished pruned run again, the runs of each K side by side in one benchmark run"
                        " (RESULTS/speed_k<K>.md), keeping their scores, then rebuild the table (on a quiet machine,"
                        " or after a change to the decoding code)")
    p.add_argument("--independent-methods", action="store_true",
                   help="print the config's methods on one line, base first, and stop; exit 2 with the reason when"
                        " they cannot run side by side (tuning tries, a shared mask kind, strongest_baseline):"
                        " used by scripts/gpu_sweep.sh")
    return p


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    if not os.path.isfile(args.config):
        fail(f"{args.config}: no such sweep config")
    try:
        sweep = Sweep.load(args.config)
    except (KeyError, TypeError, ValueError) as e:
        fail(f"{args.config}: not a valid sweep config ({type(e).__name__}: {e})")
    except JobError as e:
        fail(str(e))
    if args.independent_methods:
        try:
            print(" ".join(sweep.independent_methods()))
        except JobError as e:
            fail(f"{args.config}: {e}")
        return 0
    names = {s.name: s for s in sweep.all_runs()}
    for name in args.redo:
        if name not in names:
            fail(f"--redo {name}: no such run in {args.config} (see --list)")
        forget_run(sweep, names[name])
    if args.list:
        for spec in sweep.all_runs():
            done = "finished" if os.path.isfile(sweep.result_path(spec)) else "to do"
            print(f"{spec.name:<28} {done}")
        if sweep.strongest and sweep.strongest_baseline() is None:
            best = sweep.strongest
            also = "".join(f", one run at K = {k}" for k in best.get("also_heads", []))
            also += "".join(f", one with {e} epochs" for e in best.get("also_epochs", []))
            print(f"(then the strongest of {', '.join(best['among'])} at K = {best['heads']} with seeds"
                  f" {best['seeds']}{also})")
        return 0
    only = [m for m in (args.only or "").split(",") if m]
    unknown = sorted(set(only) - {s.method for s in sweep.all_runs()} - set(names))
    if unknown:
        fail(f"--only {','.join(unknown)}: no such method or run in {args.config} (see --list)")
    if only and args.table:
        fail("--only: --table rebuilds the table from every finished run; drop --only")
    if args.table and args.no_table:
        fail("--table and --no-table: choose one")
    if args.rebench and sweep.bench is None:
        fail(f"--rebench: {args.config} says \"bench\": false, so there is nothing to time; give it"
             " pass-bench-inference's settings ({} for the defaults)")
    failed = 0
    try:
        if args.rebench:
            timed = rebench(sweep, only)
            print(f"sweep: timed {timed} finished pruned run(s) again", file=sys.stderr)
            if not timed:
                failed = 1
        elif not args.table:
            failed = run_sweep(sweep, only)
    except JobError as e:
        fail(str(e), code=1)
    if args.no_table:
        return 1 if failed else 0
    print(f"wrote {write_finetune_curves(sweep)}", file=sys.stderr)
    rows = write_table(sweep.results)
    for path in plot(sweep.results, rows):
        print(f"wrote {path}", file=sys.stderr)
    print(f"wrote {os.path.join(sweep.results, 'table.md')} ({len(rows)} runs)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.sweep
    sys.exit(main())
