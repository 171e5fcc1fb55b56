"""`cvae-study`: one command for a study's life, as Ray Tune and Optuna users work.

    cvae-study run STUDY.toml [...]     run or resume a study (exactly `python -m study.run`)
    cvae-study status RESULTS_DIR       state, trials by status, best so far, elapsed and ETA
    cvae-study best RESULTS_DIR         best.toml's path and the command that reruns it
    cvae-study list [STORAGE]           every study under results/ (or STORAGE) with its state
    cvae-study report RESULTS_DIR       rebuild the report (exactly `python -m study.report`)

status, best and list read results/ only (contract 5): they work while a study runs, after it was
killed and after it finished, from any shell.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from study.place import BEST, STUDY_COPY

STATE_HINT = {
    "running": "its driver is alive; watch it here again, or open the report",
    "interrupted": "not running: rerun `cvae-study run {study}` to resume it",
    "finished": "every trial has ended",
    "new": "nothing has run yet",
    "stale": "it died before Ray Tune started: rerun it",
    "foreign": "not a study of this tool",
}


def _study_file(exp_dir: Path) -> str:
    return str(exp_dir / STUDY_COPY)


def cmd_status(args: argparse.Namespace) -> int:
    from study.console import fmt_s, snapshot
    from study.manifest import code_line

    exp_dir = Path(args.results_dir)
    if not exp_dir.is_dir():
        print(f"error: {exp_dir}: no such results dir", file=sys.stderr)
        return 2
    state, p = snapshot(exp_dir)
    metric = _metric(exp_dir)
    print(f"{exp_dir}: {state} ({STATE_HINT.get(state, '').format(study=_study_file(exp_dir))})")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(p.counts.items())) or "none yet"
    print(f"  trials: {p.done} of {p.total} ended, {p.running} running, {p.pending} pending  ({counts})")
    print(f"  trial-epochs: {p.epochs_done} done, {p.epochs_left} to go"
          + (f", {p.epoch_s:.1f} s each" if p.epoch_s else ""))
    print(f"  {p.best.line(metric) if p.best else f'best: no {metric} yet'}")
    eta = f", ETA {fmt_s(p.eta_s)}" if state == "running" else ""
    print(f"  elapsed {fmt_s(p.elapsed_s)}{eta}")
    print(f"  {code_line(exp_dir)}")
    return 0


def _metric(exp_dir: Path) -> str:
    from study.analyze import read_study

    return read_study(exp_dir).metric


def cmd_best(args: argparse.Namespace) -> int:
    exp_dir = Path(args.results_dir)
    best = exp_dir / BEST
    if not best.is_file():
        from study.console import best_so_far

        so_far, _ = best_so_far(exp_dir) if exp_dir.is_dir() else (None, None)
        print(f"error: {exp_dir}: no {BEST} yet (written when the study ends or is interrupted)"
              + (f"; {so_far.line(_metric(exp_dir))} so far" if so_far else ""), file=sys.stderr)
        return 1
    print(best)
    print(f"rerun it alone: python -m cvae.train --config {best}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from study.analyze import trial_dirs
    from study.console import study_state

    root = Path(args.storage)
    studies = sorted(d for d in root.iterdir() if d.is_dir() and (d / STUDY_COPY).is_file()) if root.is_dir() else []
    if not studies:
        print(f"no studies under {root}")
        return 0
    width = max(len(d.name) for d in studies)
    for d in studies:
        print(f"{d.name:<{width}}  {study_state(d):<11}  {len(trial_dirs(d)):>3} trials  {d}")
    return 0


def cmd_run(argv: list[str]) -> int:
    from study.run import main

    return main(argv)


def cmd_report(argv: list[str]) -> int:
    from study.report.cli import main

    return main(argv)


FORWARDED = {"run": cmd_run, "report": cmd_report}  # their own parsers, flags and --help


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-study", description="Run and watch TOML studies of the lab's CVAE "
                                "(Ray Tune + Optuna).", epilog="`cvae-study COMMAND --help` for each command.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run or resume a study: `cvae-study run STUDY.toml` (python -m study.run)")
    sub.add_parser("report", help="rebuild a study's report: `cvae-study report RESULTS_DIR` (python -m study.report)")
    status = sub.add_parser("status", help="how far along a study is and what is winning (reads results/ only)")
    status.add_argument("results_dir", help="the study's results folder, e.g. results/kl")
    status.set_defaults(func=cmd_status)
    best = sub.add_parser("best", help="best.toml's path and the command that reruns the winner")
    best.add_argument("results_dir", help="the study's results folder, e.g. results/kl")
    best.set_defaults(func=cmd_best)
    lst = sub.add_parser("list", help="every study under a results folder, with its state")
    lst.add_argument("storage", nargs="?", default="results", help="the results folder (default: results)")
    lst.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return FORWARDED[argv[0]](argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
