"""A study's interactive report: `python -m study.report results/<study>` -> results/<study>/report.html.

One self-contained HTML file that works offline (plotly.js embedded once, images as data: URIs),
built only from what results/<study>/ holds on disk (study.analyze's tables, optuna.db and the best
run's checkpoint), so it can be rebuilt at any time for a finished, partial or resumed study.

Sections: summary (the study file, trials by status, the best configuration, the floor, one
sentence per comparison, mean ± sd per setting), the lab's comparison figures, the search's own
views (optuna.visualization), predicted vs true frames of the best run, and every trial.
`ReportCallback(study_dir)` rebuilds it whenever a trial ends during a study.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from study.analyze import TABLES_DIR, StudyInfo, Tables, analyze, fmt_value, load_tables, ranking, read_study, winner

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
OPTUNA_DB = "optuna.db"
FLOOR = "repeat frame 0 (floor)"  # the legend name of val/psnr_hold everywhere
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("comparisons", "The lab's questions"),
    ("search", "The search"),
    ("frames", "Predicted vs true frames of the best run"),
    ("trials", "Every trial"),
)
_PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_HEIGHT = 460
_STRIP_POINTS = 6  # time points in the frame strip
_GIF_FRAMES = 64  # at most this many frames in the rollout animation
_SCALE = 3  # pixel upscaling of the 32x64 frames


# -- small HTML helpers --------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _note(text: str, id: str | None = None) -> str:
    return f'<p class="note"{f" id={_q(id)}" if id else ""}>{_e(text)}</p>'


def _q(x: str) -> str:
    return f'"{_e(x)}"'


def _db(x: float | None, sd: float | None = None, n: int | None = None, unit: str = " dB") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    s = f"{x:.2f}"
    if sd is not None and math.isfinite(sd):
        s += f" ± {sd:.2f}"
    s += unit
    if n is not None:
        s += f" (n={n})"
    return s


def _seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _table(df: pl.DataFrame, cls: str = "data") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_e('' if v is None else v)}</td>" for v in row) + "</tr>"
                   for row in df.iter_rows())
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


@dataclass
class _Figure:
    id: str
    title: str
    fig: go.Figure
    caption: str = ""

    def html(self) -> str:
        self.fig.update_layout(title={"text": self.title}, template="plotly_white", height=self.fig.layout.height or _HEIGHT,
                               margin={"t": 70})
        div = pio.to_html(self.fig, full_html=False, include_plotlyjs=False, div_id=self.id, config=_PLOT_CONFIG)
        cap = f"<figcaption>{_e(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure class="plot" data-title={_q(self.title)}>{div}{cap}</figure>'


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# -- what the report knows ----------------------------------------------------------------------
@dataclass
class _Ctx:
    study_dir: Path
    info: StudyInfo
    tables: Tables
    summary: pl.DataFrame  # THE ranking of the settings (study.analyze.ranking), best first
    colors: dict[str, str]  # setting -> colour, the same in every figure

    @property
    def trials(self) -> pl.DataFrame:
        return self.tables.trials

    @property
    def epochs(self) -> pl.DataFrame:
        return self.tables.epochs

    def order(self, settings: Sequence[str]) -> list[str]:
        rank = {s: i for i, s in enumerate(self.colors)}
        return sorted(set(settings), key=lambda s: rank.get(s, len(rank)))


def _context(study_dir: Path, tables: Tables) -> _Ctx:
    info = read_study(study_dir)
    summary = ranking(tables, info)
    ranked = list(summary["setting"]) if summary.height else []
    return _Ctx(study_dir, info, tables, summary, {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(ranked)})


def _floor(ctx: _Ctx) -> float | None:
    col = ctx.trials["val_psnr_hold"].drop_nulls()
    return float(col.median()) if col.len() else None


# -- 1. summary -------------------------------------------------------------------------------------
def _verdict(w: dict[str, Any], r: dict[str, Any], unit: str) -> str:
    gap = abs(w["mean"] - r["mean"])
    if w["n"] < 2 or r["n"] < 2 or w["sd"] is None or r["sd"] is None:
        return f"the gap ({gap:.2f}{unit}) cannot be judged against the seed-to-seed spread (a single seed)"
    spread = w["sd"] + r["sd"]
    if gap > spread:
        return f"the gap ({gap:.2f}{unit}) exceeds the seed-to-seed spread (sd {w['sd']:.2f} + {r['sd']:.2f}{unit})"
    return (f"the gap ({gap:.2f}{unit}) is within the seed-to-seed spread (sd {w['sd']:.2f} + {r['sd']:.2f}{unit}): "
            "not a clear difference")


def _others(row: dict[str, Any], params: Sequence[str], skip: str) -> str:
    rest = [f"{p}={fmt_value(row[p])}" for p in params if p != skip and row.get(p) is not None]
    return f" ({', '.join(rest)})" if rest else ""


def comparisons(ranked: pl.DataFrame, params: Sequence[str], unit: str = " dB") -> list[str]:
    """One plain sentence per comparison, from THE ranking (study.analyze.ranking): overall, then per
    searched parameter (its best-ranked setting per value)."""
    rows = [r for r in ranked.iter_rows(named=True) if r["mean"] is not None]

    def score(row: dict[str, Any]) -> str:
        return _db(row["mean"], row["sd"], row["n"], unit)

    out: list[str] = []
    if len(rows) >= 2:
        w, r = rows[0], rows[1]
        out.append(f"Overall: {w['setting']} wins with {score(w)} over the runner-up {r['setting']} {score(r)}; "
                   f"{_verdict(w, r, unit)}.")
    elif len(rows) == 1:
        out.append(f"Only one setting has a validation result: {rows[0]['setting']} {score(rows[0])}.")
    for p in params:
        if p not in ranked.columns:
            continue
        best: dict[Any, dict[str, Any]] = {}
        for row in rows:  # best first, so the first row per value is that value's best setting
            if row.get(p) is not None:
                best.setdefault(row[p], row)
        if len(best) < 2:
            continue
        if ranked[p].dtype.is_float() and len(best) > 6:
            out.append(f"{p} is continuous here ({len(best)} values): see its slice plot in the search section.")
            continue
        (vw, w), (vr, r) = list(best.items())[:2]
        out.append(f"{p}: {p}={fmt_value(vw)}{_others(w, params, p)} wins with {score(w)} over "
                   f"{p}={fmt_value(vr)}{_others(r, params, p)} {score(r)}; {_verdict(w, r, unit)}.")
    return out


def _unit(metric: str) -> str:
    return " dB" if "psnr" in metric else ""


def _scored_by(info: StudyInfo) -> str:
    return f"{info.metric} at each trial's {info.objective} epoch"


def _best_items(ctx: _Ctx, floor: float | None) -> list[str]:
    """The ranking's first setting and its best-scoring trial (whose checkpoint the frames show)."""
    best, info = winner(ctx.summary), ctx.info
    if best is None:
        return []
    unit = _unit(info.metric)
    row = ctx.trials.filter(pl.col("trial") == best["best_trial"]).row(0, named=True)
    gain = ""
    if info.metric == "val/psnr" and row["val_psnr_hold"] is not None:
        gain = f", {best['best_value'] - row['val_psnr_hold']:+.2f} dB over the floor"
    ckpt = best["best_checkpoint"] or "not kept"
    return [f"<li><b>Best configuration</b>: {_e(best['setting'])}, {_e(info.metric)} "
            f"{_e(_db(best['mean'], best['sd'], best['n'], unit))} (mean ± sd over seeds of {_e(_scored_by(info))})</li>",
            f"<li><b>Best run</b>: trial {_e(best['best_trial_id'])} ({_e(best['setting'])}, seed {_e(best['best_seed'])}): "
            f"{_e(info.metric)} {_e(_db(best['best_value'], unit=unit))} at epoch {_e(best['best_epoch'])}{_e(gain)}; "
            f"checkpoint {_e(ckpt)}</li>"]


def _summary_section(ctx: _Ctx) -> str:
    t, info = ctx.trials, ctx.info
    counts = {s: int(n) for s, n in t.group_by("status").len().iter_rows()}
    status = ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in
                       ("completed", "stopped_early", "diverged", "errored", "running"))
    items = [f"<li><b>Trials</b>: {t.height} ({_e(status)})</li>"]
    floor = _floor(ctx)
    items += _best_items(ctx, floor)
    scored = t.filter(pl.col("best_val_psnr").is_not_null())
    if floor is not None:
        beat = scored.filter(pl.col("best_val_psnr") > pl.col("val_psnr_hold")).height
        items.append(f'<li id="floor"><b>Floor</b>: repeating frame 0 scores val/psnr_hold = {floor:.2f} dB on the '
                     f"validation video: the floor a model must beat. {beat} of {scored.height} trials with a validation "
                     "beat it. Every PSNR figure shows it as a dashed line.</li>")
    else:
        items.append('<li id="floor"><b>Floor</b>: no validation yet, so val/psnr_hold (repeating frame 0) is unknown.</li>')
    wall = t["wall_s"].drop_nulls()
    cpu = t["cpu_s"].drop_nulls()
    elapsed = None
    if {"timestamp", "time_total_s"} <= set(ctx.epochs.columns) and ctx.epochs.height:
        e = ctx.epochs.select((pl.col("timestamp").max() - (pl.col("timestamp") - pl.col("time_total_s")).min())).item()
        elapsed = float(e) if e is not None else None
    items.append(f"<li><b>Time</b>: {_seconds(float(wall.sum()) if wall.len() else None)} of trial wall time "
                 f"(sum over trials), {_seconds(float(cpu.sum()) if cpu.len() else None)} of CPU time, "
                 f"{_seconds(elapsed)} from the first trial's start to the last report</li>")
    sentences = comparisons(ctx.summary, info.searched, _unit(info.metric))
    comp = ("<ul class=\"verdicts\">" + "".join(f"<li>{_e(s)}</li>" for s in sentences) + "</ul>") if sentences else \
        _note("No comparison yet: fewer than two settings have a validation result.")
    table = _summary_table(ctx.summary, _unit(info.metric))
    desc = f"<p>{_e(info.description)}</p>" if info.description else ""
    study = (f'<details open><summary>The study file (study.toml)</summary><pre class="study-file">{_e(info.text)}</pre></details>'
             if info.text else _note("No study.toml in this results dir."))
    return (f"{desc}<ul class=\"facts\">{''.join(items)}</ul><h3>Verdicts</h3>{comp}"
            f"<h3>The ranking: {_e(_scored_by(info))}, mean ± sd over seeds</h3>{table}"
            f"<p class=\"small\">Per trial, {_e(info.metric)} at its {_e(info.objective)} epoch ([study] objective); "
            "every trial with a value counts, stopped-early and diverged ones included (see their counts). A setting "
            "that lost a seed (a trial that ended without a value) ranks below every setting that lost none. "
            "sd needs n ≥ 2. best.toml, the verdicts, the frames below and the console read this ranking.</p>" + study)


def _summary_table(summary: pl.DataFrame, unit: str = " dB") -> str:
    if not summary.height:
        return _note("No trials yet.")
    df = summary.select(
        pl.col("rank"), pl.col("setting"), pl.col("n"),
        pl.struct("mean", "sd").map_elements(lambda s: _db(s["mean"], s["sd"], unit=unit), return_dtype=pl.String)
        .alias("mean ± sd"),
        pl.col("min").round(2).alias(f"min{unit}"), pl.col("max").round(2).alias(f"max{unit}"),
        pl.col("lost").alias("lost seeds"),
        pl.col("seeds").list.eval(pl.element().cast(pl.String)).list.join(", ").alias("seeds"),
        pl.concat_str([pl.format(f"{{}} {s.replace('_', ' ')}", pl.col(f"n_{s}")) for s in
                       ("completed", "stopped_early", "diverged", "errored", "running")], separator=", ").alias("trials"),
    )
    return _table(df, "data summary")


# -- 2. the lab's comparison figures ---------------------------------------------------------------
def _per_epoch(df: pl.DataFrame, by: str, col: str) -> pl.DataFrame:
    if col not in df.columns:
        return pl.DataFrame()
    x = pl.col(col)
    return (df.filter(x.is_not_null() & x.is_finite())
            .group_by(by, "epoch")
            .agg(x.mean().alias("mean"), x.min().alias("lo"), x.max().alias("hi"), x.count().alias("n"))
            .sort(by, "epoch"))


def _add_band(fig: go.Figure, g: pl.DataFrame, name: str, color: str, y_title: str) -> None:
    """Mean line of a group, with its min-max band over seeds when there are several."""
    x = g["epoch"].to_list()
    n = int(g["n"].max())
    if n > 1:
        fig.add_trace(go.Scatter(x=x + x[::-1], y=g["hi"].to_list() + g["lo"].to_list()[::-1], mode="lines", fill="toself",
                                 fillcolor=_rgba(color, 0.18), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=name, name=f"{name} min-max"))
    fig.add_trace(go.Scatter(
        x=x, y=g["mean"].to_list(), mode="lines+markers", name=f"{name} (n={n})" if n > 1 else name,
        legendgroup=name, line={"color": color}, customdata=g["n"].to_list(),
        hovertemplate=f"{_e(name)}<br>epoch %{{x}}<br>{_e(y_title)} %{{y:.4g}} (mean of %{{customdata}})<extra></extra>"))


def _floor_line(fig: go.Figure, x: list[Any], y: list[float]) -> None:
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=FLOOR, line={"color": "#444", "dash": "dash", "width": 2},
                             hovertemplate=f"{FLOOR}<br>%{{y:.2f}} dB<extra></extra>"))


def _int_ticks(fig: go.Figure, axis: str = "x") -> None:
    # epochs and frame/trial numbers are integers: no 0.5 ticks on short runs
    getattr(fig, f"update_{axis}axes")(tickformat=",d", **({"dtick": 1} if _span(fig, axis) <= 12 else {}))


def _span(fig: go.Figure, axis: str) -> float:
    values = [v for tr in fig.data for v in (getattr(tr, axis, None) or ()) if isinstance(v, (int, float))]
    return (max(values) - min(values)) if values else 0


def _legend(fig: go.Figure, x_title: str, y_title: str, **yaxis: Any) -> go.Figure:
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, legend={"title": {"text": "setting"}}, hovermode="closest")
    if x_title == "epoch":
        _int_ticks(fig)
    if yaxis:
        fig.update_yaxes(**yaxis)
    return fig


def _setting_curves(ctx: _Ctx, col: str, y_title: str, **yaxis: Any) -> go.Figure | None:
    agg = _per_epoch(ctx.epochs, "setting", col)
    if not agg.height:
        return None
    fig = go.Figure()
    for s in ctx.order(agg["setting"].to_list()):
        _add_band(fig, agg.filter(pl.col("setting") == s), s, ctx.colors.get(s, "#888888"), y_title)
    return _legend(fig, "epoch", y_title, **yaxis)


def _fig_best_per_setting(ctx: _Ctx) -> _Figure | None:
    """Each trial's score and each setting's mean ± sd: the ranking, drawn."""
    t = ctx.trials.filter(pl.col("objective").is_not_null())
    if not t.height:
        return None
    metric, unit = ctx.info.metric, _unit(ctx.info.metric)
    which = "Best" if ctx.info.objective == "best" else "Last"
    fig = go.Figure()
    order = ctx.order(t["setting"].to_list())
    for s in order:
        g = t.filter(pl.col("setting") == s)
        fig.add_trace(go.Scatter(
            x=g["objective"].to_list(), y=[s] * g.height, mode="markers", name=s,
            marker={"color": ctx.colors.get(s), "size": 10, "symbol": "circle-open", "line": {"width": 2}},
            customdata=list(zip(g["seed"].to_list(), g["status"].to_list(), g["trial_id"].to_list(),
                                g["objective_epoch"].to_list())),
            hovertemplate=(f"%{{y}}<br>seed %{{customdata[0]}} (%{{customdata[2]}}, %{{customdata[1]}})<br>{_e(metric)} "
                           f"%{{x:.2f}}{unit} at epoch %{{customdata[3]}}<extra></extra>")))
    rows = ctx.summary.filter(pl.col("mean").is_not_null())
    fig.add_trace(go.Scatter(
        x=rows["mean"].to_list(), y=rows["setting"].to_list(), mode="markers", name="mean ± sd over seeds",
        marker={"color": "black", "symbol": "line-ns-open", "size": 18, "line": {"width": 3}},
        error_x={"type": "data", "array": rows["sd"].fill_null(0.0).to_list(), "visible": True, "color": "black"},
        hovertemplate=f"%{{y}}<br>mean %{{x:.2f}}{unit}<extra></extra>"))
    floor = _floor(ctx) if metric == "val/psnr" else None
    if floor is not None:
        fig.add_trace(go.Scatter(x=[floor, floor], y=[order[0], order[-1]], mode="lines", name=FLOOR,
                                 line={"color": "#444", "dash": "dash", "width": 2}))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], automargin=True)
    fig.update_layout(height=max(_HEIGHT, 120 + 40 * len(order)))
    return _Figure("fig-setting-best", f"{which} {metric} of each trial, per setting",
                   _legend(fig, f"{which.lower()} {metric}{f' ({unit.strip()})' if unit else ''}", "setting"),
                   "Open circles: one trial (seed) each, its score; black bars: mean ± sd over seeds, the ranking "
                   "(best first, top)" + ("; dashed: repeating frame 0." if floor is not None else "."))


def _fig_tfr(ctx: _Ctx) -> _Figure | None:
    fig = _setting_curves(ctx, "tfr", "teacher-forcing ratio (probability)", range=[-0.05, 1.05])
    if fig is None:
        return None
    used = _per_epoch(ctx.epochs, "setting", "teacher_forcing")
    for s in ctx.order(used["setting"].to_list()) if used.height else []:
        g = used.filter(pl.col("setting") == s)
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="markers", name=f"{s}: used",
                                 legendgroup=s, showlegend=False, marker={"color": ctx.colors.get(s), "symbol": "x", "size": 8},
                                 hovertemplate=f"{_e(s)}<br>epoch %{{x}}: teacher forcing on for %{{y:.0%}} of the steps<extra></extra>"))
    return _Figure("fig-tfr", "Teacher-forcing ratio per epoch", fig,
                   "Lines: the scheduled ratio tfr; crosses: the fraction of steps that actually used teacher forcing "
                   "(drawn once per epoch as in the lab, mean over seeds).")


def _kl_label(row: dict[str, Any]) -> str:
    kind = row.get("kl_anneal_type")
    if kind == "None" or kind is None:
        return "None (β = 1)"
    return f"{kind} (cycle {row.get('kl_anneal_cycle')}, ratio {fmt_value(row.get('kl_anneal_ratio'))})"


def _fig_beta(ctx: _Ctx) -> _Figure | None:
    if "beta" not in ctx.epochs.columns or not ctx.epochs.height:
        return None
    # the schedule as configured (config JSON): a conditional kl_anneal_cycle column is null where inactive
    cols = ("kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio")
    kinds = ctx.trials.select("trial_id", *[pl.col("config").str.json_path_match(f"$.train.{c}").alias(c) for c in cols])
    kinds = kinds.with_columns(pl.struct(cols).map_elements(_kl_label, return_dtype=pl.String).alias("schedule"))
    agg = _per_epoch(ctx.epochs.join(kinds, on="trial_id"), "schedule", "beta")
    fig = go.Figure()
    for i, s in enumerate(sorted(set(agg["schedule"].to_list()))):
        g = agg.filter(pl.col("schedule") == s)
        # dashes and symbols differ too, so schedules that coincide (e.g. in early epochs) stay visible
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="lines+markers", name=s,
                                 line={"color": _PALETTE[i % len(_PALETTE)], "dash": _DASHES[i % len(_DASHES)]},
                                 marker={"symbol": _SYMBOLS[i % len(_SYMBOLS)], "size": 8}))
    fig.update_layout(legend={"title": {"text": "KL annealing schedule"}}, xaxis_title="epoch",
                      yaxis_title="β (KL weight, unitless)")
    _int_ticks(fig)
    fig.update_yaxes(range=[-0.05, 1.05])
    return _Figure("fig-beta", "KL weight β per epoch, for each KL annealing schedule", fig,
                   "β as the trainer used it (reported per epoch): Cyclical restarts every cycle, Monotonic ramps once, None stays 1.")


def _fig_loss(ctx: _Ctx) -> _Figure | None:
    fig = _setting_curves(ctx, "train/loss", "training loss, MSE + β·KL (log scale)", type="log")
    if fig is None:
        return None
    return _Figure("fig-loss", "Training loss per epoch (log scale)", fig,
                   "Mean over seeds with min-max band; a log axis because β·KL dwarfs the MSE while β is large. "
                   "A diverged epoch (NaN loss) leaves a gap.")


def _fig_val(ctx: _Ctx) -> _Figure | None:
    fig = _setting_curves(ctx, "val/psnr", "val/psnr (dB)")
    if fig is None:
        return None
    hold = _per_epoch(ctx.epochs.with_columns(pl.lit("all").alias("_all")), "_all", "val/psnr_hold")
    if hold.height:
        _floor_line(fig, hold["epoch"].to_list(), hold["mean"].to_list())
    return _Figure("fig-val-psnr", "Validation PSNR per epoch", fig,
                   "val/psnr: mean PSNR over the autoregressive rollout of the validation video; mean over seeds with "
                   "min-max band. Dashed: repeating frame 0, the floor.")


def _fig_frames_psnr(ctx: _Ctx) -> _Figure | None:
    f = ctx.tables.frames
    if not f.height:
        return None
    # each setting's best-ranked run (THE ranking's best_trial_id), if its curve was saved
    best = ctx.summary.filter(pl.col("best_trial_id").is_in(f["trial_id"].unique().implode()))
    if not best.height:
        return None
    # the curve of the epoch the score comes from: the best epoch's, or the newest checkpoint's
    use_best = ctx.info.objective == "best"
    fig = go.Figure()
    for row in best.iter_rows(named=True):
        s, tid, seed = row["setting"], row["best_trial_id"], row["best_seed"]
        g = f.filter(pl.col("trial_id") == tid).sort("frame")
        has_best = use_best and g["psnr_best"].null_count() < g.height
        y = g.select(pl.coalesce("psnr_best", "psnr_final") if has_best else pl.col("psnr_final")).to_series().to_list()
        epoch = g["best_epoch"][0] if has_best else g["epoch"][0]
        fig.add_trace(go.Scatter(x=g["frame"].to_list(), y=y, mode="lines", name=s, line={"color": ctx.colors.get(s)},
                                 hovertemplate=f"{_e(s)} (seed {seed}, epoch {epoch})<br>frame %{{x}}: %{{y:.2f}} dB<extra></extra>"))
    hold = f.group_by("frame").agg(pl.col("psnr_hold").median()).sort("frame").drop_nulls()
    if hold.height:
        _floor_line(fig, hold["frame"].to_list(), hold["psnr_hold"].to_list())
    _legend(fig, "predicted frame t of the validation video (frame 0 given)", "PSNR (dB)")
    when = "at its best val/psnr epoch" if use_best else "at its newest checkpoint"
    return _Figure("fig-frame-psnr", "Per-frame PSNR over the validation video, best run of each setting", fig,
                   f"For each setting, its best-ranked run, {when}. Errors compound along the "
                   "rollout; dashed: repeating frame 0, which decays as the dancer moves away from its first pose.")


def _fig_fast(ctx: _Ctx) -> _Figure | str:
    t = ctx.trials
    if "fast_train_epoch" not in t.columns or t["fast_train_epoch"].drop_nulls().n_unique() < 2:
        values = t["fast_train_epoch"].drop_nulls().unique().to_list() if "fast_train_epoch" in t.columns else []
        what = (f"fast_train_epoch is {values[0]} in every trial of this study "
                f"({'fast train off' if values[0] == 0 else f'fast train for the first {values[0]} epochs'})"
                if len(values) == 1 else "no trial records fast_train_epoch")
        return _note(f"No fast-train comparison: {what}. search_spaces/fast_train.toml runs one.", "note-fast-train")
    labels = t.select("trial_id", pl.format("fast_train_epoch={}", pl.col("fast_train_epoch")).alias("fast"))
    agg = _per_epoch(ctx.epochs.join(labels, on="trial_id"), "fast", "val/psnr")
    fig = go.Figure()
    for i, s in enumerate(sorted(set(agg["fast"].to_list()), key=lambda v: int(v.split("=")[1]))):
        _add_band(fig, agg.filter(pl.col("fast") == s), s, _PALETTE[i % len(_PALETTE)], "val/psnr (dB)")
    hold = _per_epoch(ctx.epochs.with_columns(pl.lit("all").alias("_all")), "_all", "val/psnr_hold")
    if hold.height:
        _floor_line(fig, hold["epoch"].to_list(), hold["mean"].to_list())
    _legend(fig, "epoch", "val/psnr (dB)")
    fig.update_layout(legend={"title": {"text": "fast train"}})
    return _Figure("fig-fast-train", "Validation PSNR per epoch by fast_train_epoch", fig,
                   "Fast train uses only fast_partial of the training sequences in the first fast_train_epoch epochs. "
                   "Mean over every trial with that value (other parameters pooled), min-max band.")


def _comparisons_section(ctx: _Ctx) -> str:
    parts = []
    builders: list[tuple[str, Callable[[_Ctx], _Figure | None]]] = [
        ("best val/psnr per setting", _fig_best_per_setting), ("teacher forcing", _fig_tfr), ("β", _fig_beta),
        ("training loss", _fig_loss), ("validation PSNR", _fig_val), ("per-frame PSNR", _fig_frames_psnr)]
    for what, build in builders:
        parts.append(_guard(lambda: _html(build(ctx), f"No {what} data yet.")))
    parts.append(_guard(lambda: _html(_fig_fast(ctx), "")))
    return "".join(parts)


def _html(item: _Figure | str | None, empty: str) -> str:
    if item is None:
        return _note(empty)
    return item if isinstance(item, str) else item.html()


def _guard(build: Callable[[], str]) -> str:
    # A part that fails shows why; the rest of the report still gets written.
    try:
        return build()
    except Exception as e:  # noqa: BLE001
        log.exception("report: a part failed")
        return _note(f"This part could not be drawn: {type(e).__name__}: {e}")


# -- 4. the search's own views (optuna.visualization) -------------------------------------------
def _distribution(p: Any) -> Any:
    import optuna

    if p.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.kind == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return optuna.distributions.FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)


def _inferred(values: list[Any]) -> Any:
    import optuna

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        lo, hi = min(values), max(values)
        if all(isinstance(v, int) for v in values):
            return optuna.distributions.IntDistribution(int(lo), int(hi))
        return optuna.distributions.FloatDistribution(float(lo), float(hi))
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=str))


def optuna_study(study_dir: str | Path, tables: Tables | None = None) -> tuple[Any, str]:
    """An in-memory Optuna study of the search and where it came from (for optuna.visualization).

    optuna.db's study (copied, so the file is not held open) when it has a completed trial; else
    rebuilt from the trials table: one Optuna trial per setting, valued by the mean over its seeds
    of the last value of the study metric (what the searcher was told).
    """
    import optuna

    study_dir = Path(study_dir)
    info = read_study(study_dir)
    direction = "maximize" if info.mode == "max" else "minimize"
    db = study_dir / OPTUNA_DB
    if db.is_file():
        try:
            storage = optuna.storages.RDBStorage(f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": 10}},
                                                 skip_table_creation=True)
            try:
                names = optuna.study.get_all_study_names(storage)
                name = info.name if info.name in names else names[0] if len(names) == 1 else None
                if name is not None:
                    loaded = optuna.load_study(study_name=name, storage=storage)
                    copy = optuna.create_study(direction=loaded.direction, study_name=name)
                    copy.add_trials(loaded.get_trials(deepcopy=False))
                    if any(tr.state == optuna.trial.TrialState.COMPLETE for tr in copy.trials):
                        return copy, "optuna.db (the searcher's own study)"
            finally:
                storage.remove_session()
                storage.engine.dispose()
        except Exception as e:  # noqa: BLE001 - an unreadable db costs only its views
            log.warning("%s: cannot read the Optuna study (%s); rebuilding it from the trials", db, e)
    tables = tables if tables is not None else load_tables(study_dir)
    t = tables.trials
    names = [p for p in info.searched if p in t.columns]
    dists = {p.name: _distribution(p) for p in info.params if p.name in names}
    for p in names:
        if p not in dists:
            dists[p] = _inferred(t[p].drop_nulls().unique().to_list())
    # THE ranking's score per setting (what the searcher was told), in the order the settings started
    first = t.group_by("setting").agg(pl.col("trial_number").min())
    groups = ranking(tables, info).join(first, on="setting", how="left").sort("trial_number", nulls_last=True)
    curves = _epoch_means(tables.epochs, info.metric)
    study = optuna.create_study(direction=direction, study_name=info.name)
    for row in groups.iter_rows(named=True):
        params = {p: row[p] for p in names if row[p] is not None}
        value = row["mean"]
        ok = value is not None and math.isfinite(value)
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={p: dists[p] for p in params}, value=value if ok else None,
                intermediate_values=curves.get(row["setting"]),
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
        except ValueError as e:
            log.warning("setting %s left out of the rebuilt Optuna study: %s", row["setting"], e)
    return study, ("rebuilt from the trials table (no usable optuna.db): one Optuna trial per setting, valued as "
                   "the study ranks it (the mean over seeds)")


def _epoch_means(epochs: pl.DataFrame, metric: str) -> dict[str, dict[int, float]]:
    """setting -> epoch -> the mean over its seeds of the metric (the intermediate values Optuna is told)."""
    if metric not in epochs.columns or not epochs.height:
        return {}
    x = pl.col(metric)
    means = (epochs.filter(x.is_not_null() & x.is_finite()).group_by("setting", "epoch").agg(x.mean())
             .sort("setting", "epoch"))
    out: dict[str, dict[int, float]] = {}
    for setting, epoch, value in means.iter_rows():
        out.setdefault(setting, {})[int(epoch)] = float(value)
    return out


def _search_section(ctx: _Ctx) -> str:
    import optuna
    import optuna.visualization as ov

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, source = optuna_study(ctx.study_dir, ctx.tables)
    metric = ctx.info.metric
    unit = " (dB)" if "psnr" in metric else ""
    complete = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    parts = [f"<p>Optuna's views of the search over {_e(', '.join(ctx.info.searched) or 'no parameter')}, "
             f"objective {_e(metric)} ({_e(ctx.info.mode)}). Source: {_e(source)}; {len(complete)} completed of "
             f"{len(study.trials)} Optuna trials.</p>"]
    if not complete:
        return parts[0] + _note("No completed Optuna trial yet: the search views appear once one has a value.")

    floor = _floor(ctx) if metric == "val/psnr" else None  # the floor belongs on every PSNR axis

    def history() -> _Figure:
        fig = ov.plot_optimization_history(study, target_name=metric)
        fig.update_layout(xaxis_title="Optuna trial number", yaxis_title=f"{metric}{unit}")
        if floor is not None:
            numbers = [tr.number for tr in study.trials]
            _floor_line(fig, [min(numbers), max(numbers)], [floor, floor])
        _int_ticks(fig)
        return _Figure("fig-history", f"Optimisation history of {metric}", fig,
                       "Each dot is one configuration (the mean over seeds when seeds repeat); the line is the best so far."
                       + (" Dashed: repeating frame 0, the floor." if floor is not None else ""))

    def slices() -> _Figure:
        fig = ov.plot_slice(study, target_name=metric).update_layout(yaxis_title=f"{metric}{unit}")
        if floor is not None:
            line = {"y": floor, "line": {"dash": "dash", "color": "#444", "width": 2}, "annotation_text": FLOOR,
                    "annotation_position": "bottom right"}
            try:
                fig.add_hline(**line, row="all", col="all")  # one panel per parameter (make_subplots)
            except Exception:  # noqa: BLE001 - a single parameter: one plain panel
                fig.add_hline(**line)
        return _Figure("fig-slice", f"Slice plots: {metric} against each searched parameter", fig,
                       "Each dot is one configuration; its colour is the Optuna trial number."
                       + (" Dashed: repeating frame 0, the floor." if floor is not None else ""))

    varying = [p for p in {k for tr in complete for k in tr.params}
               if len({repr(tr.params.get(p)) for tr in complete if p in tr.params}) > 1]
    figures: list[tuple[str, Callable[[], _Figure], str | None]] = [("history", history, None)]
    if study.trials and any(tr.params for tr in complete):
        figures.append(("parallel", lambda: _Figure(
            "fig-parallel", "Parallel coordinates of the searched parameters", ov.plot_parallel_coordinate(study, target_name=metric),
            f"One line per configuration, coloured by {metric}."), None))
        figures.append(("slice", slices, None))
    importance_reason = None
    if len(complete) < 2:
        importance_reason = "Parameter importance needs at least 2 completed configurations."
    elif not varying:
        importance_reason = "Parameter importance needs a searched parameter that varies across completed configurations."

    def importance() -> _Figure:
        # PED-ANOVA, Optuna's default: fANOVA would need scikit-learn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "fewer than 2 trials in a regime": said in the caption
            fig = ov.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                                            target_name=metric)
        fig.update_layout(xaxis_title="importance (PED-ANOVA, normalised to sum to 1)", yaxis_title="parameter")
        return _Figure("fig-importance", f"Parameter importance for {metric}", fig,
                       "PED-ANOVA over the completed configurations; with few configurations this is a rough guide.")

    figures.append(("importance", importance, importance_reason))
    if not any(tr.params for tr in complete):
        parts.append(_note("No searched parameter: no parallel coordinates, slice or importance plots."))
    for name, build, reason in figures:
        if reason is not None:
            parts.append(_note(reason, f"note-{name}"))
            continue
        try:
            parts.append(build().html())
        except Exception as e:  # noqa: BLE001 - e.g. importance on a degenerate search space
            log.info("search view %s skipped: %s", name, e)
            parts.append(_note(f"No {name} plot: {type(e).__name__}: {e}", f"note-{name}"))
    return "".join(parts)


# -- 5. predicted vs true frames of the best run ------------------------------------------------------
def _png(arr: Any) -> str:
    from PIL import Image

    img = Image.fromarray(arr).resize((arr.shape[1] * _SCALE, arr.shape[0] * _SCALE), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _gif(true: Any, pred: Any, frames: list[int]) -> str:
    import numpy as np
    from PIL import Image, ImageDraw

    h, w = true.shape[1:3]
    gap, bar = 4, 12
    images = []
    for i in frames:
        canvas = np.full((h + bar, 2 * w + gap, 3), 255, dtype=np.uint8)
        canvas[:h, :w] = true[i]
        canvas[:h, w + gap:] = pred[i]
        img = Image.fromarray(canvas)
        ImageDraw.Draw(img).text((2, h), f"t={i + 1}  true | predicted", fill=(0, 0, 0))
        images.append(img.resize((img.width * _SCALE, img.height * _SCALE), Image.NEAREST).convert("P", palette=Image.ADAPTIVE))
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0, optimize=True)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()


def _rollout(ckpt: Path) -> dict[str, Any]:
    """Strip and animation of a checkpoint's validation rollout, as data: URIs (cached beside the tables)."""
    key = hashlib.sha256(str(ckpt.resolve()).encode() + (ckpt / "manifest.json").read_bytes()).hexdigest()[:16]
    cache = ckpt.parents[1] / TABLES_DIR / f"rollout-{key}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    if not (ckpt / "state.pt").is_file():  # cvae.train.STATE_FILE; checked before paying for importing torch
        raise FileNotFoundError(f"{ckpt / 'state.pt'}: the model weights are missing")
    import numpy as np
    import torch

    from cvae.data import load_dataset
    from cvae.evaluate import load_model, predict_val

    model, cfg = load_model(ckpt)
    data = load_dataset(cfg.data)
    # One thread: a report runs beside busy trials, where OpenMP threads contend (the smoke rollout
    # took 22 s with 2 threads on a loaded 2-core machine, 0.5 s with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pred, true = predict_val(model, data, cfg.train.seed)  # (1, T-1, 3, H, W)
    finally:
        torch.set_num_threads(threads)

    def u8(x: torch.Tensor) -> np.ndarray:
        return (x[0].clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (T-1, H, W, 3)

    p, t = u8(pred), u8(true)
    n = t.shape[0]
    points = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(_STRIP_POINTS, n))})
    step = max(1, math.ceil(n / _GIF_FRAMES))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    out = {"epoch": manifest.get("epoch"), "frames": n, "step": step,
           "strip": [{"t": i + 1, "true": _png(t[i]), "pred": _png(p[i])} for i in points],
           "gif": _gif(t, p, list(range(0, n, step)))}
    cache.parent.mkdir(exist_ok=True)
    for old in cache.parent.glob("rollout-*.json"):  # only the current best run's is worth keeping
        old.unlink(missing_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, cache)
    return out


def _frames_section(ctx: _Ctx) -> str:
    """The rollout of THE ranking's best run, from the checkpoint of the epoch its score comes from."""
    best, metric = winner(ctx.summary), ctx.info.metric
    if best is None:
        return _note("No trial has a score yet: the frames appear once one has.", "note-frames")
    run = (f"Trial {_e(best['best_trial_id'])} ({_e(best['setting'])}, seed {_e(best['best_seed'])}), the best run of "
           f"the best configuration: {_e(metric)} {_e(_db(best['best_value'], unit=_unit(metric)))} at epoch "
           f"{_e(best['best_epoch'])}")
    if best["best_checkpoint"] is None:
        return _note(f"{run}; Tune did not keep the checkpoint of that epoch, so its frames cannot be shown.",
                     "note-frames")
    ckpt = ctx.study_dir / best["best_checkpoint"]
    try:
        out = _rollout(ckpt)
    except Exception as e:  # noqa: BLE001 - a lost checkpoint or dataset costs only this section
        log.info("frames of %s not shown: %s", ckpt, e)
        return _note(f"The best run's frames cannot be shown: its checkpoint {best['best_checkpoint']} or its dataset "
                     f"could not be loaded ({type(e).__name__}: {e}).", "note-frames")
    head = "".join(f"<th>t = {s['t']}</th>" for s in out["strip"])
    true = "".join(f'<td><img alt="true frame {s["t"]}" src="{s["true"]}"></td>' for s in out["strip"])
    pred = "".join(f'<td><img alt="predicted frame {s["t"]}" src="{s["pred"]}"></td>' for s in out["strip"])
    return (f"<p>{run}; frames from that epoch's checkpoint (<span id=\"frames-checkpoint\">"
            f"{_e(best['best_checkpoint'])}</span>, epoch {_e(out['epoch'])}), rerun from frame 0 and the poses with "
            "the run's own noise seed.</p>"
            f'<table class="strip" id="frame-strip"><thead><tr><th></th>{head}</tr></thead><tbody>'
            f"<tr><th>true</th>{true}</tr><tr><th>predicted</th>{pred}</tr></tbody></table>"
            f'<figure class="rollout"><img id="rollout-animation" alt="rollout animation: true (left) and predicted (right)" '
            f'src="{out["gif"]}"><figcaption>The rollout of all {_e(out["frames"])} predicted frames'
            f"{'' if out['step'] == 1 else ', every %dth shown' % out['step']}: true on the left, predicted on the right "
            f"({_SCALE}x enlarged).</figcaption></figure>")


# -- every trial ---------------------------------------------------------------------------------------
def _trials_section(ctx: _Ctx) -> str:
    t = ctx.trials
    if not t.height:
        return _note("No trials yet.")
    df = t.select(
        pl.col("trial_number").alias("#"), "trial_id", "setting", "seed", "status",
        pl.format("{}/{}", "epochs_run", "epochs").alias("epochs"),
        pl.col("objective").round(4).alias(f"score ({ctx.info.metric} at its {ctx.info.objective} epoch)"),
        pl.col("objective_epoch").alias("score epoch"),
        pl.col("best_val_psnr").round(2).alias("best val/psnr (dB)"), "best_epoch",
        pl.col("last_val_psnr").round(2).alias("last val/psnr (dB)"),
        pl.col("val_psnr_hold").round(2).alias("floor (dB)"),
        pl.col("wall_s").round(0).alias("wall (s)"), pl.col("cpu_s").round(0).alias("CPU (s)"),
        pl.col("train_frames_per_s").round(1).alias("train frames/s"),
        pl.coalesce("hostname", "node_ip").alias("node"), pl.col("error").alias("error"),
    )
    return _table(df, "data trials") + ("<p class=\"small\">Status: completed (all epochs), stopped_early (ended by the "
                                        "scheduler), diverged (NaN/inf loss), errored (crashed, retries used up), running "
                                        "(or interrupted before Ray saved its end).</p>")


# -- the page ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:0 1.5rem 4rem}
header{background:#1f2937;color:#fff;padding:1rem 1.5rem}
header h1{margin:0;font-size:1.5rem} header p{margin:.3rem 0 0;color:#cbd5e1}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.5rem 1.5rem;z-index:10}
nav a{margin-right:1.2rem;color:#1d4ed8;text-decoration:none}
section{background:#fff;margin:1.5rem 0;padding:1rem 1.5rem;border:1px solid #e5e7eb;border-radius:6px}
h2{margin-top:.3rem} figure{margin:1.5rem 0} figcaption,.small{color:#555;font-size:.9rem}
.note{background:#fff8e1;border-left:4px solid #f59e0b;padding:.5rem .8rem}
table.data{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;display:block;overflow-x:auto}
table.data th,table.data td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;white-space:nowrap}
table.data th{background:#f3f4f6}
table.strip{width:100%;table-layout:fixed} table.strip img{width:100%}
table.strip td,table.strip th{padding:.2rem;text-align:center;font-weight:normal}
table.strip tbody th{width:6rem}
img{image-rendering:pixelated}
pre.study-file{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.85rem}
ul.verdicts li{margin:.3rem 0}
"""


def render(study_dir: str | Path, tables: Tables) -> str:
    """The report's HTML text for a study dir and its tables."""
    study_dir = Path(study_dir)
    ctx = _context(study_dir, tables)
    bodies = {
        "summary": lambda: _summary_section(ctx),
        "comparisons": lambda: _comparisons_section(ctx),
        "search": lambda: _search_section(ctx),
        "frames": lambda: _frames_section(ctx),
        "trials": lambda: _trials_section(ctx),
    }
    sections = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{_guard(bodies[sid])}</section>'
                       for sid, title in SECTIONS)
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in SECTIONS)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    title = f"Study {ctx.info.name}: report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{_CSS}</style>"
        # plotly.js, once, inline: the file works offline and every figure below reuses it
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f"<script type=\"text/javascript\" id=\"plotly-js\">{get_plotlyjs()}</script>"
        f"</head><body><header><h1>{_e(title)}</h1><p>{_e(study_dir.resolve())} · built {_e(stamp)} from the results on "
        f"disk (rebuild: python -m study.report {_e(study_dir)})</p></header><nav>{nav}</nav><main>{sections}</main>"
        "</body></html>\n"
    )


def build_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Analyze the study dir and write its report (default `<study_dir>/report.html`); return the path."""
    study_dir = Path(study_dir)
    start = time.perf_counter()
    tables = analyze(study_dir)
    text = render(study_dir, tables)
    path = Path(out) if out is not None else study_dir / REPORT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a browser reloading mid-build never sees half a page
    log.info("report %s: %.1f MB in %.1f s", path, path.stat().st_size / 1e6, time.perf_counter() - start)
    return path


# -- the live report during a study -----------------------------------------------------------------
def _lower_priority() -> None:  # in the report build's child process: trials come first
    os.nice(10)


def _callback_class() -> type:
    # Built on first use, so `python -m study.report` does not pay for importing Ray.
    from ray.tune import Callback

    class ReportCallback(Callback):
        """Rebuilds results/<study>/report.html whenever a trial completes or errors.

        The rebuild runs as a background `python -m study.report` (niced), so Tune's loop never
        waits for it: one build at a time, at most one start per `min_interval_s` (a build costs a
        few CPU seconds that running trials would otherwise get), and one more if a trial ended
        meanwhile. It is polled on every Tune step. When the experiment ends the running build is
        waited for and a pending one dropped: `study.run` builds the final report right after
        (with finished.json in place). `background=False` builds inline, every time.
        Picklable (Tune saves its callbacks); every failure is logged, never raised: a report must
        never break a study.
        """

        def __init__(self, study_dir: str | Path, background: bool = True, min_interval_s: float = 60.0) -> None:
            self.study_dir = str(Path(study_dir).resolve())
            self.background = background
            self.min_interval_s = min_interval_s
            self._proc: Any = None  # the running build: (Popen, its stderr file, why)
            self._pending: str | None = None
            self._last_start = -math.inf

        def __getstate__(self) -> dict[str, Any]:
            return {"study_dir": self.study_dir, "background": self.background, "min_interval_s": self.min_interval_s}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__init__(state["study_dir"], state.get("background", True), state.get("min_interval_s", 60.0))

        def _rebuild(self, why: str) -> None:
            if not self.background:
                try:
                    path = build_report(self.study_dir)
                    # the driver's console is the user's view of a running study, as Tune's own table
                    print(f"report updated ({why}): {path}", flush=True)
                except Exception:  # noqa: BLE001
                    log.exception("rebuilding the report of %s failed (the study goes on)", self.study_dir)
                return
            self._pending = why
            self._poll()

        def _poll(self, force: bool = False) -> None:
            """Collect a finished build; start the pending one if none runs (and, unless force,
            min_interval_s has passed since the last start)."""
            if self._proc is not None:
                proc, err, why = self._proc
                if proc.poll() is None:
                    return
                self._proc = None
                err.seek(0)
                tail = err.read().decode("utf-8", "replace")[-2000:]
                err.close()
                if proc.returncode == 0:
                    print(f"report updated ({why}): {Path(self.study_dir) / REPORT_FILE}", flush=True)
                else:
                    log.error("rebuilding the report of %s failed (exit %s; the study goes on):\n%s",
                              self.study_dir, proc.returncode, tail)
            if self._pending is None or (not force and time.monotonic() - self._last_start < self.min_interval_s):
                return
            why, self._pending = self._pending, None
            self._last_start = time.monotonic()
            err = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen([sys.executable, "-m", "study.report", self.study_dir],
                                        stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_lower_priority)
            except OSError:
                err.close()
                log.exception("starting the report build of %s failed (the study goes on)", self.study_dir)
                return
            self._proc = (proc, err, why)

        def wait(self, timeout: float = 300.0, pending: bool = True) -> None:
            """Let the running build finish (and the pending one, unless pending=False: dropped);
            stop a build that hangs."""
            if not pending:
                self._pending = None
            deadline = time.monotonic() + timeout
            while self._proc is not None or self._pending is not None:
                if time.monotonic() > deadline:
                    self._pending = None
                    if self._proc is not None:
                        self._proc[0].kill()
                self._poll(force=True)
                time.sleep(0.1)

        def on_trial_complete(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
            self._rebuild(f"trial {trial} completed")

        def on_trial_error(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
            self._rebuild(f"trial {trial} errored")

        def on_step_end(self, iteration: int = 0, trials: Any = None, **info: Any) -> None:
            self._poll()

        def on_experiment_end(self, trials: Any = None, **info: Any) -> None:
            self.wait(pending=False)

    ReportCallback.__module__ = __name__
    ReportCallback.__qualname__ = "ReportCallback"
    return ReportCallback


def __getattr__(name: str) -> Any:
    if name == "ReportCallback":
        cls = globals()["ReportCallback"] = _callback_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- CLI ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.report",
                                description="Write results/<study>/report.html from a study's results dir.")
    p.add_argument("study_dir", help="the study's results dir, e.g. results/kl, or its URI, e.g. s3://bucket/prefix/kl "
                                     "(copied to results/<scheme>/<bucket>/<prefix>/kl first; the report goes back up)")
    p.add_argument("--out", help="where to write the HTML (default: <study_dir>/report.html)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from study.storage import StorageError, is_uri, open_study_uri

    remote = None
    if is_uri(args.study_dir):
        try:
            remote, name = open_study_uri(args.study_dir)
            if remote.names(name) is None:
                raise StorageError(f"{remote.show(name)}: no such study folder")
            study_dir = remote.mirror(Path("results").resolve()) / name
            remote.download(name, study_dir)
        except (StorageError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        study_dir = Path(args.study_dir)
    if not study_dir.is_dir():
        print(f"error: {study_dir}: no such results dir (run the study first: python -m study.run STUDY.toml)",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = build_report(study_dir, args.out)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"open it: file://{path.resolve()}")
    if remote is not None and args.out is None:
        remote.upload(path, study_dir.name)
        print(f"uploaded to {remote.show(study_dir.name, path.name)}")
    return 0


__all__ = ["FLOOR", "REPORT_FILE", "SECTIONS", "ReportCallback", "build_report", "comparisons", "main",
           "optuna_study", "render"]

if __name__ == "__main__":
    sys.exit(main())
