"""`python -m study.report RESULTS_DIR_OR_URI [--out FILE]`: write a study's report.html.

A study's URI (`s3://bucket/prefix/<name>`, ...) is copied into its local mirror first and the
report goes back up beside it. A folder that holds no study (no study.toml, no trial folders) is
refused with exit code 2, and nothing is written.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from study.analyze import trial_dirs
from study.place import REPORT, STUDY_COPY, PlaceError, existing_place
from study.report.page import build_report


def is_study(folder: Path) -> bool:
    """Whether a folder holds a study's results: its study.toml, or Ray Tune's trial folders."""
    return (folder / STUDY_COPY).is_file() or bool(trial_dirs(folder))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.report",
                                description="Write results/<study>/report.html from a study's results dir.")
    p.add_argument("study_dir", help="the study's results dir, e.g. results/kl, or its URI, e.g. s3://bucket/prefix/kl "
                                     "(copied to results/<scheme>/<bucket>/<prefix>/kl first; the report goes back up)")
    p.add_argument("--out", help="where to write the HTML (default: <study_dir>/report.html)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        place = existing_place(args.study_dir)
    except PlaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not is_study(place.exp_dir):
        print(f"error: {place.shown()} holds no study: no {STUDY_COPY} and no trial folders. Give a study's results "
              "folder (e.g. results/kl), or run one first: python -m study.run STUDY.toml", file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = build_report(place.exp_dir, args.out)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"open it: file://{path.resolve()}")
    if place.remote is not None and args.out is None:
        place.push(REPORT)
        print(f"uploaded to {place.location(path)}")
    return 0


__all__ = ["is_study", "main"]
