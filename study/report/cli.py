"""`python -m study.report RESULTS_DIR_OR_URI [--out FILE] [--figures DIR]`: write a study's report.html
(and with --figures the lab's figures as PNG and SVG files: study.report.export).

A study's URI (`s3://bucket/prefix/<name>`, ...) is copied into its local mirror first and the
report goes back up beside it. A folder that holds no study (no study.toml, no trial folders) is
refused with exit code 2, and nothing is written. Figures that cannot be written (no exporter, no
browser) cost one line and exit code 1; the report is written all the same.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from study.results import trial_dirs
from study.tables import Tables, analyze
from study.place import REPORT, STUDY_COPY, PlaceError, existing_place
from study.report.common import context
from study.report.export import ExportError, write_figures
from study.report.figures import LAB_FIGURES
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
    names = ", ".join(name for name, _, _ in LAB_FIGURES)
    p.add_argument("--figures", metavar="DIR", help=f"also write the lab's figures into DIR as PNG and SVG "
                                                    f"({names}; needs kaleido and a Chromium)")
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
    tables = analyze(place.exp_dir)
    path = build_report(place.exp_dir, args.out, tables)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"open it: file://{path.resolve()}")
    if place.remote is not None and args.out is None:
        place.push(REPORT)
        print(f"uploaded to {place.location(path)}")
    return 0 if args.figures is None else figures(place.exp_dir, tables, Path(args.figures))


def figures(exp_dir: Path, tables: Tables, out_dir: Path) -> int:
    """Write the lab's figures into out_dir and say what was written (0), or why not in one line (1)."""
    try:
        done = write_figures(context(exp_dir, tables), out_dir)
    except ExportError as e:
        print(f"figures: not written: {e}", file=sys.stderr)
        return 1
    names = sorted({p.stem for p in done.written}, key=[p.stem for p in done.written].index)
    print(f"figures: {len(done.written)} files in {out_dir} ({done.seconds:.1f} s"
          f"{f', browser {done.browser}' if done.browser else ''}): "
          + (", ".join(f"{n}.{{png,svg}}" for n in names) or "none"))
    for name, why in done.skipped.items():
        print(f"  no {name}: {why}")
    return 0


__all__ = ["figures", "is_study", "main"]
