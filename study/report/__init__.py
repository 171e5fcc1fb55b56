"""A study's interactive report: `python -m study.report results/<study>` -> results/<study>/report.html.

One self-contained HTML file that works offline (plotly.js embedded once, images as data: URIs),
built only from what results/<study>/ holds on disk (study.analyze's tables and THE ranking,
optuna.db and the best run's checkpoint), so it can be rebuilt at any time for a finished, partial
or resumed study. One module per part of the page:

    page.py        the page: its sections in order, every trial's table, the CSS; build_report
    summary.py     did the runs learn (first), the study's facts, the verdicts, the lab's claims, the ranking
                   (with a seed race's standing)
    figures.py     the lab's comparison figures (teacher forcing, beta, loss, PSNR, fast train, a seed race)
    search.py      the search's own views (optuna.visualization)
    frames.py      predicted vs true frames of the best run, rerun from its checkpoint (cvae.evaluate)
    provenance.py  what each run ran on: the manifest's table (study.manifest)
    export.py      the lab's figures as PNG and SVG files (--figures DIR; plotly's kaleido export)
    common.py      what every part shares: the report's context, HTML helpers, the floor
    cli.py         the command (a results folder or a study's URI; refuses a folder that is no study)

During a study, study.callbacks.ReportCallback rebuilds it as trials end.
"""
from __future__ import annotations

from study.report.cli import main
from study.report.common import FLOOR_LABEL
from study.report.page import SECTIONS, build_report, render
from study.report.search import optuna_study
from study.report.summary import comparisons

__all__ = ["FLOOR_LABEL", "SECTIONS", "build_report", "comparisons", "main", "optuna_study", "render"]
