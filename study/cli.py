"""`cvae-study`: one command for a study's life, as Ray Tune and Optuna users work.

    cvae-study run STUDY.toml [...]     run or resume a study (exactly `python -m study.run`)
    cvae-study status RESULTS_DIR       state, trials by status, best so far, elapsed and ETA
    cvae-study best RESULTS_DIR         best.toml's path and the command that reruns it
    cvae-study list [STORAGE]           every study under results/ (or STORAGE) with its state
    cvae-study report RESULTS_DIR       rebuild the report (exactly `python -m study.report`)
    cvae-study predict RESULTS_DIR ...  the test phase with the ranked best checkpoint (`python -m cvae.predict`)
    cvae-study score SUBMISSION ...     a submission's leaderboard PSNR (exactly `python -m cvae.score`)

status, best and list read results/ only (docs/ARCHITECTURE.md, contract 5): they work while a study runs, after it was
killed, after it finished and once moved aside, from any shell and folder; RESULTS_DIR and STORAGE
may be relative, absolute, or a URI (`<storage URI>/<name>`, copied into its local mirror first).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from study.place import BEST, RESULTS_DIR, STUDY_COPY, Place, PlaceError, State

STATE_HINT = {
    State.RUNNING: "its driver is alive; watch it here again, or open the report",
    State.INTERRUPTED: "not running: rerun `cvae-study run {study}` to resume it",
    State.FINISHED: "every trial has ended",
    State.NEW: "nothing has run yet",
    State.STALE: "it died before Ray Tune started: rerun it",
    State.FOREIGN: "not a study of this tool",
}


def _study_file(exp_dir: Path) -> str:
    return str(exp_dir / STUDY_COPY)


def _place(where: str) -> Place:
    """The study a user named: a folder, or a study's URI (copied into its local mirror); PlaceError."""
    from study.place import existing_place

    return existing_place(where)


def cmd_status(args: argparse.Namespace) -> int:
    from study.progress import fmt_s, snapshot
    from study.driver import place_state
    from study.manifest import code_line

    try:
        place = _place(args.results_dir)
    except PlaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    exp_dir = place.exp_dir
    state, p = snapshot(exp_dir, place_state(place))
    metric = p.info.metric
    shown = place.shown()
    print(f"{shown}: {state} ({STATE_HINT.get(state, '').format(study=_study_file(exp_dir))})")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(p.counts.items())) or "none yet"
    planned = f"{p.total} ended, {p.running} running, {p.pending} pending" if not p.upto else \
        f"up to {p.total} ended, {p.running} running"
    print(f"  trials: {p.done} of {planned}  ({counts})")
    print(f"  trial-epochs: {p.epochs_done} done, {p.epochs_left} to go"
          + (f", {p.epoch_s:.1f} s each" if p.epoch_s else ""))
    print(f"  {p.best.line(metric) if p.best else f'best: no {metric} yet'}")
    if p.standings is not None:
        _print_race(p.standings, p.info.race_rule)
    eta = f", ETA {fmt_s(p.eta_s)}" if state == State.RUNNING else ""
    print(f"  elapsed {fmt_s(p.elapsed_s)}{eta}")
    print(f"  {code_line(exp_dir)}")
    return 0


def _print_race(standings: list[Any], rule: Any) -> None:
    """Each configuration of a seed race (rule: its study.race.RaceRule): its seeds, mean and
    comparison with the leader."""
    from study.evidence import race_text
    from study.race import summary_text

    print(f"  seed race ({rule.min_seeds} to {rule.max_seeds} seeds): {summary_text(standings)}")
    for st in standings:
        mean = f"{st.mean:.2f}" if st.mean is not None else "no score"
        print(f"    {st.setting}: {st.seeds} seed{'s' if st.seeds != 1 else ''}, mean {mean}, {race_text(st, rule)}")


def cmd_best(args: argparse.Namespace) -> int:
    try:
        exp_dir = _place(args.results_dir).exp_dir
    except PlaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = exp_dir / BEST
    if not best.is_file():
        from study.analyze import read_study
        from study.progress import best_so_far

        info = read_study(exp_dir)
        so_far, _ = best_so_far(exp_dir, info)
        print(f"error: {exp_dir}: no {BEST} yet (written when the study ends or is interrupted)"
              + (f"; {so_far.line(info.metric)} so far" if so_far else ""), file=sys.stderr)
        return 1
    print(best)
    print(f"rerun it alone: python -m cvae.train --config {best}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from study.results import trial_dirs
    from study.driver import place_state
    from study.place import MIRROR_ROOT, Place
    from study.storage import StorageError, is_uri, open_storage

    rows: list[tuple[str, str, str, str]] = []  # name, state, trials, where
    if is_uri(args.storage):
        try:
            remote = open_storage(args.storage)
            for name in sorted(remote.names() or ()):
                if STUDY_COPY in (remote.names(name) or set()):
                    place = Place(remote.mirror(MIRROR_ROOT.resolve()) / name, remote)
                    rows.append((name, place_state(place), "", remote.show(name)))
        except (StorageError, OSError) as e:
            print(f"error: {args.storage}: {e}", file=sys.stderr)
            return 2
    else:
        root = Path(args.storage)
        studies = sorted(d for d in root.iterdir() if d.is_dir() and (d / STUDY_COPY).is_file()) if root.is_dir() else []
        rows = [(d.name, place_state(Place(d)), f"{len(trial_dirs(d)):>3} trials", str(d)) for d in studies]
    if not rows:
        print(f"no studies under {args.storage}")
        return 0
    width = max(len(r[0]) for r in rows)
    for name, state, trials, where in rows:
        print(f"{name:<{width}}  {state:<11}  {trials:>10}  {where}")
    return 0


def cmd_run(argv: list[str]) -> int:
    from study.run import main

    return main(argv)


def cmd_report(argv: list[str]) -> int:
    from study.report.cli import main

    return main(argv)


def cmd_predict(argv: list[str]) -> int:
    from study.predict import main

    return main(argv)


def cmd_score(argv: list[str]) -> int:
    from cvae.score import main

    return main(argv, prog="cvae-study score")


# their own parsers, flags and --help
FORWARDED = {"run": cmd_run, "report": cmd_report, "predict": cmd_predict, "score": cmd_score}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-study", description="Run and watch TOML studies of the lab's CVAE "
                                "(Ray Tune + Optuna).", epilog="`cvae-study COMMAND --help` for each command.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run or resume a study: `cvae-study run STUDY.toml` (python -m study.run)")
    sub.add_parser("report", help="rebuild a study's report: `cvae-study report RESULTS_DIR` (python -m study.report)")
    sub.add_parser("predict", help="the lab's test phase with the ranked best checkpoint: `cvae-study predict "
                   "RESULTS_DIR --data ROOT --out DIR` (submission.csv, pred_seq<i>.gif)")
    sub.add_parser("score", help="score a submission as the leaderboard does: `cvae-study score SUBMISSION "
                   "--truth TRUTH.csv` (python -m cvae.score)")
    status = sub.add_parser("status", help="how far along a study is and what is winning (reads results/ only)")
    status.add_argument("results_dir", help="the study's results folder (e.g. results/kl) or its URI")
    status.set_defaults(func=cmd_status)
    best = sub.add_parser("best", help="best.toml's path and the command that reruns the winner")
    best.add_argument("results_dir", help="the study's results folder (e.g. results/kl) or its URI")
    best.set_defaults(func=cmd_best)
    lst = sub.add_parser("list", help="every study under a results folder, with its state")
    lst.add_argument("storage", nargs="?", default=RESULTS_DIR,
                     help="the results folder or a storage URI (default: results)")
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
