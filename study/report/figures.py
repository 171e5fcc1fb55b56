"""The lab's comparison figures: teacher forcing, KL beta, training loss, validation PSNR per
epoch, per-frame PSNR, fast train, each trial's score per setting (the ranking, drawn) and, for a
seed race, each configuration's mean as seeds were added; and LAB_FIGURES, the figures of the lab's
write-up under their file names (study.report.export)."""
from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

import plotly.graph_objects as go
import polars as pl

from study.tables import fmt_value, trial_arms
from study.report.common import (FLOOR_LABEL, HEIGHT, PALETTE, Ctx, Figure, esc, floor_line, floor_of, guard, int_ticks, note,
                                 unit_of)

_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


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
        hovertemplate=f"{esc(name)}<br>epoch %{{x}}<br>{esc(y_title)} %{{y:.4g}} (mean of %{{customdata}})<extra></extra>"))


def _legend(fig: go.Figure, x_title: str, y_title: str, **yaxis: Any) -> go.Figure:
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, legend={"title": {"text": "setting"}}, hovermode="closest")
    if x_title == "epoch":
        int_ticks(fig)
    if yaxis:
        fig.update_yaxes(**yaxis)
    return fig


def _setting_curves(ctx: Ctx, col: str, y_title: str, **yaxis: Any) -> go.Figure | None:
    agg = _per_epoch(ctx.epochs, "setting", col)
    if not agg.height:
        return None
    fig = go.Figure()
    for s in ctx.order(agg["setting"].to_list()):
        _add_band(fig, agg.filter(pl.col("setting") == s), s, ctx.colors.get(s, "#888888"), y_title)
    return _legend(fig, "epoch", y_title, **yaxis)


def _fig_best_per_setting(ctx: Ctx) -> Figure | None:
    """Each trial's score and each setting's mean ± sd: the ranking, drawn."""
    t = ctx.trials.filter(pl.col("objective").is_not_null())
    if not t.height:
        return None
    metric, unit = ctx.info.metric, unit_of(ctx.info.metric)
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
            hovertemplate=(f"%{{y}}<br>seed %{{customdata[0]}} (%{{customdata[2]}}, %{{customdata[1]}})<br>{esc(metric)} "
                           f"%{{x:.2f}}{unit} at epoch %{{customdata[3]}}<extra></extra>")))
    rows = ctx.summary.filter(pl.col("mean").is_not_null())
    fig.add_trace(go.Scatter(
        x=rows["mean"].to_list(), y=rows["setting"].to_list(), mode="markers", name="mean ± sd over seeds",
        marker={"color": "black", "symbol": "line-ns-open", "size": 18, "line": {"width": 3}},
        error_x={"type": "data", "array": rows["sd"].fill_null(0.0).to_list(), "visible": True, "color": "black"},
        hovertemplate=f"%{{y}}<br>mean %{{x:.2f}}{unit}<extra></extra>"))
    floor = floor_of(ctx) if metric == "val/psnr" else None
    if floor is not None:
        fig.add_trace(go.Scatter(x=[floor, floor], y=[order[0], order[-1]], mode="lines", name=FLOOR_LABEL,
                                 line={"color": "#444", "dash": "dash", "width": 2}))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], automargin=True)
    fig.update_layout(height=max(HEIGHT, 120 + 40 * len(order)))
    return Figure("fig-setting-best", f"{which} {metric} of each trial, per setting",
                   _legend(fig, f"{which.lower()} {metric}{f' ({unit.strip()})' if unit else ''}", "setting"),
                   "Open circles: one trial (seed) each, its score; black bars: mean ± sd over seeds, the ranking "
                   "(best first, top)" + ("; dashed: repeating frame 0." if floor is not None else "."))


def _running_interval(xs: Sequence[float],
                      level: float = 0.95) -> tuple[list[float], list[float | None], list[float | None]]:
    """For k = 1..len(xs): the mean of xs[:k] and its t-interval (scipy's ttest_1samp; None for one value)."""
    means: list[float] = []
    lows: list[float | None] = []
    highs: list[float | None] = []
    for k in range(1, len(xs) + 1):
        head = list(xs[:k])
        means.append(statistics.fmean(head))
        if k == 1:
            lows.append(None)
            highs.append(None)
        elif max(head) == min(head):  # no spread: the interval is the point (scipy warns on it)
            lows.append(head[0])
            highs.append(head[0])
        else:
            from scipy import stats  # here, as study.compare does: a study without seeds never needs it

            ci = stats.ttest_1samp(head, 0.0).confidence_interval(level)
            lows.append(float(ci.low))
            highs.append(float(ci.high))
    return means, lows, highs


def _fig_race(ctx: Ctx) -> Figure | str | None:
    """A seed race as it went: each configuration's mean score over its first k seeds with the 95%
    t-interval of that mean, k = 1..n in seed order; the legend gives its final state (study.race)."""
    if ctx.race is None:
        return "the study's seeds are a fixed list ([study] seeds = [...]): no seed race"
    arms = trial_arms(ctx.tables.trials)
    if not arms:
        return None
    metric, unit = ctx.info.metric, unit_of(ctx.info.metric)
    state = {st.setting: st.state for st in ctx.race}
    order = ctx.order(list(arms))
    # nudged sideways so that equal k's bars do not hide each other: at most +-0.25 seed
    step = min(0.08, 0.5 / (len(order) - 1)) if len(order) > 1 else 0.0
    fig = go.Figure()
    most = 1
    for i, s in enumerate(order):
        xs = [v for _, v in sorted(arms[s].items()) if v is not None]  # scored seeds, in seed order
        if not xs:
            continue
        means, lows, highs = _running_interval(xs)
        k = list(range(1, len(xs) + 1))
        most = max(most, len(xs))
        color = ctx.colors.get(s, "#888888")
        fig.add_trace(go.Scatter(
            x=[j + step * (i - (len(order) - 1) / 2) for j in k], y=means, mode="lines+markers",
            name=f"{s}: {state[s]}", line={"color": color}, customdata=k,
            error_y={"type": "data", "symmetric": False, "visible": True, "color": color,
                     "array": [None if h is None else h - m for h, m in zip(highs, means)],
                     "arrayminus": [None if lo is None else m - lo for lo, m in zip(lows, means)]},
            hovertemplate=f"{esc(s)}<br>mean of the first %{{customdata}} seeds: %{{y:.2f}}{unit}<extra></extra>"))
    floor = floor_of(ctx) if metric == "val/psnr" else None
    if floor is not None:
        floor_line(fig, [1, most], [floor, floor])
    y_title = f"mean {metric} of the first k seeds{f' ({unit.strip()})' if unit else ''}"
    _legend(fig, "seeds k (the first k in seed order)", y_title)
    fig.update_layout(legend={"title": {"text": "setting: final state"}})
    int_ticks(fig)
    rule = ctx.info.race_rule
    return Figure("fig-race", f"Seed race: mean {metric} as seeds were added, per configuration", fig,
                  f"Each configuration's mean score over its first k seeds (those that ended with a score), with the "
                  f"95% t-interval of that mean (none for one seed); points nudged sideways so bars stay visible. The "
                  f"race gave the leader and the open ones one more seed a round, up to {rule.max_seeds}; it compares "
                  f"each with the leader at alpha / looks = {rule.level:.2g}, not by these intervals"
                  + ("; dashed: repeating frame 0." if floor is not None else "."))


def _fig_tfr(ctx: Ctx) -> Figure | None:
    fig = _setting_curves(ctx, "tfr", "teacher-forcing ratio (probability)", range=[-0.05, 1.05])
    if fig is None:
        return None
    used = _per_epoch(ctx.epochs, "setting", "teacher_forcing")
    for s in ctx.order(used["setting"].to_list()) if used.height else []:
        g = used.filter(pl.col("setting") == s)
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="markers", name=f"{s}: used",
                                 legendgroup=s, showlegend=False, marker={"color": ctx.colors.get(s), "symbol": "x", "size": 8},
                                 hovertemplate=f"{esc(s)}<br>epoch %{{x}}: teacher forcing on for %{{y:.0%}} of the steps<extra></extra>"))
    return Figure("fig-tfr", "Teacher-forcing ratio per epoch", fig,
                   "Lines: the scheduled ratio tfr; crosses: the fraction of steps that actually used teacher forcing "
                   "(drawn once per epoch as in the lab, mean over seeds).")


def _kl_label(row: dict[str, Any]) -> str:
    kind = row.get("kl_anneal_type")
    if kind == "None" or kind is None:
        return "None (β = 1)"
    return f"{kind} (cycle {row.get('kl_anneal_cycle')}, ratio {fmt_value(row.get('kl_anneal_ratio'))})"


def _by_schedule(ctx: Ctx, col: str) -> pl.DataFrame:
    """`col` per KL annealing schedule and epoch (every trial with that schedule pooled)."""
    # the schedule as configured (config JSON): a conditional kl_anneal_cycle column is null where inactive
    cols = ("kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio")
    kinds = ctx.trials.select("trial_id", *[pl.col("config").str.json_path_match(f"$.train.{c}").alias(c) for c in cols])
    kinds = kinds.with_columns(pl.struct(cols).map_elements(_kl_label, return_dtype=pl.String).alias("schedule"))
    return _per_epoch(ctx.epochs.join(kinds, on="trial_id"), "schedule", col)


def _fig_beta(ctx: Ctx) -> Figure | None:
    if "beta" not in ctx.epochs.columns or not ctx.epochs.height:
        return None
    agg = _by_schedule(ctx, "beta")
    fig = go.Figure()
    for i, s in enumerate(sorted(set(agg["schedule"].to_list()))):
        g = agg.filter(pl.col("schedule") == s)
        # dashes and symbols differ too, so schedules that coincide (e.g. in early epochs) stay visible
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="lines+markers", name=s,
                                 line={"color": PALETTE[i % len(PALETTE)], "dash": _DASHES[i % len(_DASHES)]},
                                 marker={"symbol": _SYMBOLS[i % len(_SYMBOLS)], "size": 8}))
    fig.update_layout(legend={"title": {"text": "KL annealing schedule"}}, xaxis_title="epoch",
                      yaxis_title="β (KL weight, unitless)")
    int_ticks(fig)
    fig.update_yaxes(range=[-0.05, 1.05])
    return Figure("fig-beta", "KL weight β per epoch, for each KL annealing schedule", fig,
                   "β as the trainer used it (reported per epoch): Cyclical restarts every cycle, Monotonic ramps once, None stays 1.")


def _fig_loss(ctx: Ctx) -> Figure | None:
    fig = _setting_curves(ctx, "train/loss", "training loss, MSE + β·KL (log scale)", type="log")
    if fig is None:
        return None
    return Figure("fig-loss", "Training loss per epoch (log scale)", fig,
                   "Mean over seeds with min-max band; a log axis because β·KL dwarfs the MSE while β is large. "
                   "A diverged epoch (NaN loss) leaves a gap.")


def _fig_tfr_loss(ctx: Ctx) -> Figure | None:
    """The lab's teacher-forcing figure: each setting's training loss (left axis) beside its ratio (right)."""
    loss = _fig_loss(ctx)
    tfr = _per_epoch(ctx.epochs, "setting", "tfr")
    if loss is None or not tfr.height:
        return None
    fig = loss.fig
    for s in ctx.order(tfr["setting"].to_list()):
        g = tfr.filter(pl.col("setting") == s)
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="lines", name=f"{s}: tfr",
                                 legendgroup=s, yaxis="y2", line={"color": ctx.colors.get(s, "#888888"), "dash": "dot"}))
    # its own ticks (not synced to the log axis) and the legend below, clear of the right axis
    fig.update_layout(yaxis2={"title": {"text": "teacher-forcing ratio (dotted)"}, "overlaying": "y", "side": "right",
                              "range": [-0.05, 1.05], "tickmode": "linear", "tick0": 0, "dtick": 0.2, "showgrid": False},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
                      height=HEIGHT + 24 * len(fig.data))
    return Figure("fig-tfr-loss", "Teacher-forcing ratio and training loss per epoch", fig,
                  "Solid: training loss (mean over seeds, log scale, left); dotted: the scheduled teacher-forcing "
                  "ratio (right).")


def _fig_loss_kl(ctx: Ctx) -> Figure | str | None:
    """The lab's KL figure: training loss per KL annealing schedule, every trial with that schedule pooled."""
    agg = _by_schedule(ctx, "train/loss")
    schedules = sorted(set(agg["schedule"].to_list())) if agg.height else []
    if len(schedules) < 2:
        return f"every trial of this study has one KL annealing schedule ({schedules[0]})" if schedules else None
    fig = go.Figure()
    for i, s in enumerate(schedules):
        _add_band(fig, agg.filter(pl.col("schedule") == s), s, PALETTE[i % len(PALETTE)], "training loss")
    _legend(fig, "epoch", "training loss, MSE + β·KL (log scale)", type="log")
    fig.update_layout(legend={"title": {"text": "KL annealing schedule"}})
    return Figure("fig-loss-kl", "Training loss per epoch, for each KL annealing schedule", fig,
                  "Mean over every trial with that schedule (other parameters pooled), min-max band; log axis.")


STEP_FLOOR = "copy the previous frame (step floor)"  # the legend name of val/psnr_step_hold


def _fig_val(ctx: Ctx) -> Figure | None:
    fig = _setting_curves(ctx, "val/psnr", "val/psnr (dB)")
    if fig is None:
        return None
    everyone = ctx.epochs.with_columns(pl.lit("all").alias("_all"))
    hold = _per_epoch(everyone, "_all", "val/psnr_hold")
    if hold.height:
        floor_line(fig, hold["epoch"].to_list(), hold["mean"].to_list())
    # the one-step diagnostic (results made before it have no such columns: nothing drawn)
    step = _per_epoch(ctx.epochs, "setting", "val/psnr_step")
    for s in ctx.order(step["setting"].to_list()) if step.height else []:
        g = step.filter(pl.col("setting") == s)
        fig.add_trace(go.Scatter(x=g["epoch"].to_list(), y=g["mean"].to_list(), mode="lines", name=f"{s}: one step",
                                 legendgroup=s, line={"color": ctx.colors.get(s, "#888888"), "dash": "dot"},
                                 hovertemplate=f"{esc(s)}<br>epoch %{{x}}<br>val/psnr_step %{{y:.2f}} dB "
                                               "(mean over seeds)<extra></extra>"))
    copy = _per_epoch(everyone, "_all", "val/psnr_step_hold")
    if copy.height:
        fig.add_trace(go.Scatter(x=copy["epoch"].to_list(), y=copy["mean"].to_list(), mode="lines", name=STEP_FLOOR,
                                 line={"color": "#999", "dash": "dashdot", "width": 2},
                                 hovertemplate=f"{STEP_FLOOR}<br>%{{y:.2f}} dB<extra></extra>"))
    caption = ("val/psnr: mean PSNR over the autoregressive rollout of the validation video; mean over seeds with "
               "min-max band. Dashed: repeating frame 0, the floor.")
    if step.height:
        caption += (" Dotted: val/psnr_step, the one-step prediction from the true previous frame; dash-dot: copying "
                    "that frame. A step near its copy line carries the previous frame forward; a step on its rollout "
                    "paints from the pose alone; a good step over a poor rollout fails by compounding its own errors.")
    return Figure("fig-val-psnr", "Validation PSNR per epoch", fig, caption)


def _fig_frames_psnr(ctx: Ctx) -> Figure | None:
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
                                 hovertemplate=f"{esc(s)} (seed {seed}, epoch {epoch})<br>frame %{{x}}: %{{y:.2f}} dB<extra></extra>"))
    hold = f.group_by("frame").agg(pl.col("psnr_hold").median()).sort("frame").drop_nulls()
    if hold.height:
        floor_line(fig, hold["frame"].to_list(), hold["psnr_hold"].to_list())
    _legend(fig, "predicted frame t of the validation video (frame 0 given)", "PSNR (dB)")
    when = "at its best val/psnr epoch" if use_best else "at its newest checkpoint"
    return Figure("fig-frame-psnr", "Per-frame PSNR over the validation video, best run of each setting", fig,
                   f"For each setting, its best-ranked run, {when}. Errors compound along the "
                   "rollout; dashed: repeating frame 0, which decays as the dancer moves away from its first pose.")


def _fig_fast(ctx: Ctx) -> Figure | str:
    """The fast-train comparison, or why there is none (plain text)."""
    t = ctx.trials
    if "fast_train_epoch" not in t.columns or t["fast_train_epoch"].drop_nulls().n_unique() < 2:
        values = t["fast_train_epoch"].drop_nulls().unique().to_list() if "fast_train_epoch" in t.columns else []
        what = (f"fast_train_epoch is {values[0]} in every trial of this study "
                f"({'fast train off' if values[0] == 0 else f'fast train for the first {values[0]} epochs'})"
                if len(values) == 1 else "no trial records fast_train_epoch")
        return f"No fast-train comparison: {what}. search_spaces/fast_train.toml runs one."
    labels = t.select("trial_id", pl.format("fast_train_epoch={}", pl.col("fast_train_epoch")).alias("fast"))
    agg = _per_epoch(ctx.epochs.join(labels, on="trial_id"), "fast", "val/psnr")
    fig = go.Figure()
    for i, s in enumerate(sorted(set(agg["fast"].to_list()), key=lambda v: int(v.split("=")[1]))):
        _add_band(fig, agg.filter(pl.col("fast") == s), s, PALETTE[i % len(PALETTE)], "val/psnr (dB)")
    hold = _per_epoch(ctx.epochs.with_columns(pl.lit("all").alias("_all")), "_all", "val/psnr_hold")
    if hold.height:
        floor_line(fig, hold["epoch"].to_list(), hold["mean"].to_list())
    _legend(fig, "epoch", "val/psnr (dB)")
    fig.update_layout(legend={"title": {"text": "fast train"}})
    return Figure("fig-fast-train", "Validation PSNR per epoch by fast_train_epoch", fig,
                   "Fast train uses only fast_partial of the training sequences in the first fast_train_epoch epochs. "
                   "Mean over every trial with that value (other parameters pooled), min-max band.")


def figures_section(ctx: Ctx) -> str:
    parts = []
    builders: list[tuple[str, Callable[[Ctx], Figure | str | None]]] = [
        ("best val/psnr per setting", _fig_best_per_setting),
        *([("seed race", _fig_race)] if ctx.race is not None else []),  # fixed seeds: no race, no note
        ("teacher forcing", _fig_tfr), ("β", _fig_beta),
        ("training loss", _fig_loss), ("validation PSNR", _fig_val), ("per-frame PSNR", _fig_frames_psnr)]
    for what, build in builders:
        parts.append(guard(lambda: _html(build(ctx), f"No {what} data yet.")))
    parts.append(guard(lambda: _html(_fig_fast(ctx), "", "note-fast-train")))
    return "".join(parts)


def _html(item: Figure | str | None, empty: str, note_id: str | None = None) -> str:
    if item is None:
        return note(empty)
    return note(item, note_id) if isinstance(item, str) else item.html()


# The lab's write-up figures as files (study.report.export): file name (no suffix) -> what it shows, its
# builder (a Figure, or why there is none: text, or None for no data yet). Names follow the lab's report.
LAB_FIGURES: tuple[tuple[str, str, Callable[[Ctx], Figure | str | None]], ...] = (
    ("tfr_loss", "teacher-forcing ratio and training loss", _fig_tfr_loss),
    ("kl_beta", "KL weight β per schedule", _fig_beta),
    ("kl_loss", "training loss per KL annealing schedule", _fig_loss_kl),
    ("psnr_per_epoch", "validation PSNR per epoch", _fig_val),
    ("psnr_per_frame", "per-frame PSNR of each setting's best run", _fig_frames_psnr),
    ("fast_train", "fast train", _fig_fast),
    ("seed_race", "seed race", _fig_race),
)
