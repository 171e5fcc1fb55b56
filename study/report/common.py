"""The report's shared pieces: its context (the study, its tables and THE ranking), HTML helpers,
the figure wrapper, and the floor that every PSNR figure draws."""
from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.colors import qualitative

from study.analyze import StudyInfo, read_study
from study.tables import Tables, ranking
from study.evidence import race_standings, trial_scores
from study.race import Standing

log = logging.getLogger(__name__)

FLOOR_LABEL = "repeat frame 0 (floor)"  # the legend name of val/psnr_hold everywhere
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
HEIGHT = 460


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def note(text: str, id: str | None = None) -> str:
    return f'<p class="note"{f" id={_q(id)}" if id else ""}>{esc(text)}</p>'


def _q(x: str) -> str:
    return f'"{esc(x)}"'


def score_text(x: float | None, sd: float | None = None, n: int | None = None, unit: str = " dB") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    s = f"{x:.2f}"
    if sd is not None and math.isfinite(sd):
        s += f" ± {sd:.2f}"
    s += unit
    if n is not None:
        s += f" (n={n})"
    return s


def html_table(df: pl.DataFrame, cls: str = "data") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc('' if v is None else v)}</td>" for v in row) + "</tr>"
                   for row in df.iter_rows())
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


@dataclass
class Figure:
    id: str
    title: str
    fig: go.Figure
    caption: str = ""

    def styled(self) -> go.Figure:
        """The figure with the report's title, template and height (the page and the image files alike)."""
        self.fig.update_layout(title={"text": self.title}, template="plotly_white", height=self.fig.layout.height or HEIGHT,
                               margin={"t": 70})
        return self.fig

    def html(self) -> str:
        div = pio.to_html(self.styled(), full_html=False, include_plotlyjs=False, div_id=self.id, config=_PLOT_CONFIG)
        cap = f"<figcaption>{esc(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure class="plot" data-title={_q(self.title)}>{div}{cap}</figure>'


@dataclass
class Ctx:
    study_dir: Path
    info: StudyInfo
    tables: Tables
    summary: pl.DataFrame  # THE ranking of the settings (study.tables.ranking), best first
    colors: dict[str, str]  # setting -> colour, the same in every figure
    scores: pl.DataFrame  # one row per trial, scored as the ranking scores it (study.evidence.trial_scores)

    @property
    def trials(self) -> pl.DataFrame:
        return self.tables.trials

    @cached_property
    def race(self) -> list[Standing] | None:
        """The seed race's standings, leader first (study.evidence.race_standings); None without a race.
        Cached: the ranking table and the race figure both read them, and open ones solve for power."""
        return race_standings(self.tables, self.info)

    @property
    def epochs(self) -> pl.DataFrame:
        return self.tables.epochs

    def order(self, settings: Sequence[str]) -> list[str]:
        rank = {s: i for i, s in enumerate(self.colors)}
        return sorted(set(settings), key=lambda s: rank.get(s, len(rank)))


def context(study_dir: Path, tables: Tables) -> Ctx:
    info = read_study(study_dir)
    summary = ranking(tables, info)
    ranked = list(summary["setting"]) if summary.height else []
    return Ctx(study_dir, info, tables, summary, {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(ranked)},
               trial_scores(tables, info))


def floor_of(ctx: Ctx) -> float | None:
    col = ctx.trials["val_psnr_hold"].drop_nulls()
    return float(col.median()) if col.len() else None


def unit_of(metric: str) -> str:
    return " dB" if "psnr" in metric else ""


def guard(build: Callable[[], str]) -> str:
    # A part that fails shows why; the rest of the report still gets written.
    try:
        return build()
    except Exception as e:  # noqa: BLE001
        log.exception("report: a part failed")
        return note(f"This part could not be drawn: {type(e).__name__}: {e}")


def floor_line(fig: go.Figure, x: list[Any], y: list[float]) -> None:
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=FLOOR_LABEL, line={"color": "#444", "dash": "dash", "width": 2},
                             hovertemplate=f"{FLOOR_LABEL}<br>%{{y:.2f}} dB<extra></extra>"))


def int_ticks(fig: go.Figure, axis: str = "x") -> None:
    # epochs and frame/trial numbers are integers: no 0.5 ticks on short runs
    getattr(fig, f"update_{axis}axes")(tickformat=",d", **({"dtick": 1} if _span(fig, axis) <= 12 else {}))


def _span(fig: go.Figure, axis: str) -> float:
    values = [v for tr in fig.data for v in (getattr(tr, axis, None) or ()) if isinstance(v, (int, float))]
    return (max(values) - min(values)) if values else 0
