"""The search's own views (optuna.visualization) of the Optuna study: optuna.db's, or one rebuilt
from THE ranking when there is none."""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from functools import partial
from typing import Any, Callable

import polars as pl

from study.analyze import StudyInfo, read_study
from study.tables import Tables, load_tables, ranking
from study.place import OPTUNA_DB
from study.report.common import FLOOR_LABEL, Ctx, Figure, esc, floor_line, floor_of, int_ticks, note

log = logging.getLogger(__name__)


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
    """An in-memory Optuna study of the search and where it came from (for optuna.visualization):
    optuna.db's study when it has a completed trial, else one rebuilt from THE ranking."""
    study_dir = Path(study_dir)
    info = read_study(study_dir)
    study = _db_study(study_dir / OPTUNA_DB, info.name)
    if study is not None:
        return study, "optuna.db (the searcher's own study)"
    tables = tables if tables is not None else load_tables(study_dir)
    return _rebuilt_study(tables, info), ("rebuilt from the trials table (no usable optuna.db): one Optuna trial per "
                                          "setting, valued as the study ranks it (the mean over seeds)")


def _db_study(db: Path, name: str) -> Any | None:
    """optuna.db's study, copied into memory (so the file is not held open) without the grid's
    not yet asked (WAITING) trials; None when it has no completed trial or cannot be read."""
    import optuna

    if not db.is_file():
        return None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": 10}},
                                             skip_table_creation=True)
        try:
            names = optuna.study.get_all_study_names(storage)
            name = name if name in names else names[0] if len(names) == 1 else ""
            if not name:
                return None
            loaded = optuna.load_study(study_name=name, storage=storage)
            asked = [s for s in optuna.trial.TrialState if s != optuna.trial.TrialState.WAITING]
            copy = optuna.create_study(direction=loaded.direction, study_name=name)
            copy.add_trials(loaded.get_trials(deepcopy=False, states=asked))
        finally:
            storage.remove_session()
            storage.engine.dispose()
    except Exception as e:  # noqa: BLE001 - an unreadable db costs only its views
        log.warning("%s: cannot read the Optuna study (%s); rebuilding it from the trials", db, e)
        return None
    return copy if any(tr.state == optuna.trial.TrialState.COMPLETE for tr in copy.trials) else None


def _rebuilt_study(tables: Tables, info: StudyInfo) -> Any:
    """One Optuna trial per setting, valued by THE ranking's score (what the searcher was told), with
    its per-epoch means as intermediate values, in the order the settings started."""
    import optuna

    t = tables.trials
    names = [p for p in info.searched if p in t.columns]
    dists = {p.name: _distribution(p) for p in info.params if p.name in names}
    for p in names:
        if p not in dists:
            dists[p] = _inferred(t[p].drop_nulls().unique().to_list())
    first = t.group_by("setting").agg(pl.col("trial_number").min())
    groups = ranking(tables, info).join(first, on="setting", how="left").sort("trial_number", nulls_last=True)
    curves = _epoch_means(tables.epochs, info.metric)
    study = optuna.create_study(direction="maximize" if info.mode == "max" else "minimize", study_name=info.name)
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
    return study


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


def _floor_note(floor: float | None) -> str:
    return " Dashed: repeating frame 0, the floor." if floor is not None else ""


def _history(study: Any, metric: str, unit: str, floor: float | None) -> Figure:
    import optuna.visualization as ov

    fig = ov.plot_optimization_history(study, target_name=metric)
    fig.update_layout(xaxis_title="Optuna trial number", yaxis_title=f"{metric}{unit}")
    if floor is not None:
        numbers = [tr.number for tr in study.trials]
        floor_line(fig, [min(numbers), max(numbers)], [floor, floor])
    int_ticks(fig)
    return Figure("fig-history", f"Optimisation history of {metric}", fig,
                  "Each dot is one configuration (the mean over seeds when seeds repeat); the line is the best so far."
                  + _floor_note(floor))


def _parallel(study: Any, metric: str) -> Figure:
    import optuna.visualization as ov

    return Figure("fig-parallel", "Parallel coordinates of the searched parameters",
                  ov.plot_parallel_coordinate(study, target_name=metric),
                  f"One line per configuration, coloured by {metric}.")


def _slices(study: Any, metric: str, unit: str, floor: float | None) -> Figure:
    import optuna.visualization as ov

    fig = ov.plot_slice(study, target_name=metric).update_layout(yaxis_title=f"{metric}{unit}")
    if floor is not None:
        line = {"y": floor, "line": {"dash": "dash", "color": "#444", "width": 2}, "annotation_text": FLOOR_LABEL,
                "annotation_position": "bottom right"}
        try:
            fig.add_hline(**line, row="all", col="all")  # one panel per parameter (make_subplots)
        except Exception:  # noqa: BLE001 - a single parameter: one plain panel
            fig.add_hline(**line)
    return Figure("fig-slice", f"Slice plots: {metric} against each searched parameter", fig,
                  "Each dot is one configuration; its colour is the Optuna trial number." + _floor_note(floor))


def _importance(study: Any, metric: str) -> Figure:
    import optuna
    import optuna.visualization as ov

    # PED-ANOVA, Optuna's default: fANOVA would need scikit-learn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than 2 trials in a regime": said in the caption
        fig = ov.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                                        target_name=metric)
    fig.update_layout(xaxis_title="importance (PED-ANOVA, normalised to sum to 1)", yaxis_title="parameter")
    return Figure("fig-importance", f"Parameter importance for {metric}", fig,
                  "PED-ANOVA over the completed configurations; with few configurations this is a rough guide.")


View = tuple[str, Callable[[], Figure], "str | None"]  # name, how to draw it, why it is not drawn


def _views(study: Any, complete: list[Any], metric: str, floor: float | None) -> list[View]:
    """Each view: history always; the others need searched parameters, and importance two completed
    configurations in which one of them varies."""
    unit = " (dB)" if "psnr" in metric else ""
    views: list[View] = [("history", partial(_history, study, metric, unit, floor), None)]
    if not any(tr.params for tr in complete):
        return views
    views += [("parallel", partial(_parallel, study, metric), None),
              ("slice", partial(_slices, study, metric, unit, floor), None)]
    varying = [p for p in {k for tr in complete for k in tr.params}
               if len({repr(tr.params.get(p)) for tr in complete if p in tr.params}) > 1]
    why = ("Parameter importance needs at least 2 completed configurations." if len(complete) < 2 else
           "Parameter importance needs a searched parameter that varies across completed configurations."
           if not varying else None)
    return views + [("importance", partial(_importance, study, metric), why)]


def search_section(ctx: Ctx) -> str:
    """Optuna's own views of the search, each failure a note: the rest of the section still draws."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, source = optuna_study(ctx.study_dir, ctx.tables)
    metric = ctx.info.metric
    complete = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    parts = [f"<p>Optuna's views of the search over {esc(', '.join(ctx.info.searched) or 'no parameter')}, "
             f"objective {esc(ctx.info.scored_by)}. Source: {esc(source)}; {len(complete)} completed of "
             f"{len(study.trials)} Optuna trials.</p>"]
    if not complete:
        return parts[0] + note("No completed Optuna trial yet: the search views appear once one has a value.")
    if not any(tr.params for tr in complete):
        parts.append(note("No searched parameter: no parallel coordinates, slice or importance plots."))
    floor = floor_of(ctx) if metric == "val/psnr" else None  # the floor belongs on every PSNR axis
    for name, build, reason in _views(study, complete, metric, floor):
        if reason is not None:
            parts.append(note(reason, f"note-{name}"))
            continue
        try:
            parts.append(build().html())
        except Exception as e:  # noqa: BLE001 - e.g. importance on a degenerate search space
            log.info("search view %s skipped: %s", name, e)
            parts.append(note(f"No {name} plot: {type(e).__name__}: {e}", f"note-{name}"))
    return "".join(parts)
