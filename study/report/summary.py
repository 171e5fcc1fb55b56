"""The report's summary: first whether the runs learned (study.evidence), then the study's facts (THE
ranking's best configuration and best run, its one-step diagnostic, the floor, the cost in CPU- and
GPU-seconds), the verdicts (one sentence per comparison, with Welch's t-test), the lab's claims beside
the evidence, the ranking table (a seed race's with each configuration's state and seeds, and the race in
one sentence) and what each run ran on (study.report.provenance)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from study import evidence
from study.race import RaceRule, Standing, summary_text
from study.tables import fmt_value, winner
from study.report.common import Ctx, esc, floor_of, guard, html_table, note, score_text, unit_of
from study.place import SUBMISSION_SCORE
from study.report.provenance import provenance_section


def _seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _others(row: dict[str, Any], params: Sequence[str], skip: str) -> str:
    rest = [f"{p}={fmt_value(row[p])}" for p in params if p != skip and row.get(p) is not None]
    return f" ({', '.join(rest)})" if rest else ""


def comparisons(ranked: pl.DataFrame, trials: pl.DataFrame, params: Sequence[str], unit: str = " dB",
                alpha: float = evidence.ALPHA) -> list[str]:
    """One plain sentence per comparison, from THE ranking (study.tables.ranking): overall, then per
    searched parameter (its best-ranked setting per value). Each states Welch's t-test of the two
    settings' trial scores (`trials`: study.evidence.trial_scores), seeds as samples, clear at p <
    alpha (the study's [study] alpha), and says so when both settings compare unlearned models
    (neither beats the floor by more than its spread)."""
    rows = [r for r in ranked.iter_rows(named=True) if r["mean"] is not None]
    learned = evidence.learned_settings(trials)

    def score(row: dict[str, Any]) -> str:
        return score_text(row["mean"], row["sd"], row["n"], unit)

    def verdict(w: dict[str, Any], r: dict[str, Any]) -> str:
        t = evidence.compare(trials, w["setting"], r["setting"], unit, alpha)
        text = f"{abs(w['mean'] - r['mean']):.2f}{unit} apart: {t.verdict()}"
        if w["setting"] not in learned and r["setting"] not in learned:
            text += "; neither beats the floor by more than its spread, so this compares unlearned models"
        return text

    out: list[str] = []
    if len(rows) >= 2:
        w, r = rows[0], rows[1]
        out.append(f"Overall: {w['setting']} ranks first with {score(w)}, ahead of the runner-up {r['setting']} "
                   f"{score(r)}; {verdict(w, r)}.")
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
        out.append(f"{p}: {p}={fmt_value(vw)}{_others(w, params, p)} ranks first with {score(w)}, ahead of "
                   f"{p}={fmt_value(vr)}{_others(r, params, p)} {score(r)}; {verdict(w, r)}.")
    return out


def _best_items(ctx: Ctx) -> list[str]:
    """The ranking's first setting and its best-scoring trial (whose checkpoint the frames show)."""
    best, info = winner(ctx.summary), ctx.info
    if best is None:
        return []
    unit = unit_of(info.metric)
    row = ctx.trials.filter(pl.col("trial") == best["best_trial"]).row(0, named=True)
    gain = ""
    if info.metric == "val/psnr" and row["val_psnr_hold"] is not None:
        gain = f", {best['best_value'] - row['val_psnr_hold']:+.2f} dB over the floor"
    ckpt = best["best_checkpoint"] or "not kept"
    return [f"<li><b>Best configuration</b>: {esc(best['setting'])}, {esc(info.metric)} "
            f"{esc(score_text(best['mean'], best['sd'], best['n'], unit))} (mean ± sd over seeds of {esc(info.scored_by)})</li>",
            f"<li><b>Best run</b>: trial {esc(best['best_trial_id'])} ({esc(best['setting'])}, seed {esc(best['best_seed'])}): "
            f"{esc(info.metric)} {esc(score_text(best['best_value'], unit=unit))} at epoch {esc(best['best_epoch'])}{esc(gain)}; "
            f"checkpoint {esc(ckpt)}</li>", *_test_score_item(ctx, best)]


def _test_score_item(ctx: Ctx, best: dict[str, Any]) -> list[str]:
    """The leaderboard-style score of the best run's submission, where `cvae-study predict` left one."""
    path = ctx.study_dir / SUBMISSION_SCORE
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(rec, dict):
        return []
    ckpt = best["best_checkpoint"]
    mine = ckpt is not None and Path(str(rec.get("checkpoint", ""))).resolve() == (ctx.study_dir / ckpt).resolve()
    if not mine or not isinstance(rec.get("public"), (int, float)):
        return []  # the score of another checkpoint (the ranking moved on since): not this run's
    private = rec.get("private")
    val = rec.get("val/psnr")
    return [f"<li id=\"test-score\"><b>Test-split score</b> of the best run's submission (PSNR, data range 255, "
            f"frames 1..600 of each sequence): public {rec['public']:.2f} dB"
            + (f", private {private:.2f} dB" if isinstance(private, (int, float)) else "")
            + (f", beside its val/psnr {val:.2f} dB" if isinstance(val, (int, float)) else "")
            + f" ({esc(str(rec.get('submission', '')))}, seed {esc(rec.get('seed'))})</li>"]


def _floor_item(ctx: Ctx) -> str:
    floor = floor_of(ctx)
    if floor is None:
        return '<li id="floor"><b>Floor</b>: no validation yet, so val/psnr_hold (repeating frame 0) is unknown.</li>'
    scored = ctx.trials.filter(pl.col("best_val_psnr").is_not_null())
    beat = scored.filter(pl.col("best_val_psnr") > pl.col("val_psnr_hold")).height
    return (f'<li id="floor"><b>Floor</b>: repeating frame 0 scores val/psnr_hold = {floor:.2f} dB on the '
            f"validation video: the floor a model must beat. {beat} of {scored.height} trials with a validation "
            "beat it. Every PSNR figure shows it as a dashed line.</li>")


def _step_item(ctx: Ctx) -> str:
    """The best run's one-step diagnostic beside its copy floor, and what it says (cvae.evaluate.validate)."""
    best = winner(ctx.summary)
    if best is None:
        return ""
    row = ctx.scores.filter(pl.col("trial_id") == best["best_trial_id"])
    head = '<li id="step"><b>One-step diagnostic</b>'
    if not row.height or row["psnr_step"][0] is None or row["psnr_step_hold"][0] is None:
        return (f"{head}: not in these results (val/psnr_step, the one-step prediction from the true previous "
                "frame, is recorded by runs made after it was added).</li>")
    r = row.row(0, named=True)
    rollout, floor = r["psnr"], r["floor"]
    if rollout is None or floor is None:
        return ""
    return (f"{head} (best run, epoch {esc(r['score_epoch'])}): from the true previous frame it predicts at "
            f"val/psnr_step = {r['psnr_step']:.2f} dB; copying that frame scores val/psnr_step_hold = "
            f"{r['psnr_step_hold']:.2f} dB. Its rollout scores val/psnr = {rollout:.2f} dB against the floor "
            f"{floor:.2f} dB. {esc(evidence.step_diagnosis(rollout, floor, r['psnr_step'], r['psnr_step_hold']))}</li>")


def _gpu_seconds(t: pl.DataFrame) -> float:
    """GPU-seconds of the study: per trial its wall seconds x the GPU fraction Ray reserved for it."""
    if "gpu_s" not in t.columns:
        return 0.0
    return float(t["gpu_s"].fill_null(0.0).sum())


def _time_item(ctx: Ctx) -> str:
    wall, cpu = ctx.trials["wall_s"].drop_nulls(), ctx.trials["cpu_s"].drop_nulls()
    elapsed = None
    if {"timestamp", "time_total_s"} <= set(ctx.epochs.columns) and ctx.epochs.height:
        e = ctx.epochs.select((pl.col("timestamp").max() - (pl.col("timestamp") - pl.col("time_total_s")).min())).item()
        elapsed = float(e) if e is not None else None
    gpu_s = _gpu_seconds(ctx.trials)
    gpu = (f"{_seconds(gpu_s)} of GPU time (GPU-seconds: each trial's wall time × the GPU fraction Ray reserved "
           "for it)" if gpu_s > 0 else "no GPU")
    return (f'<li id="cost"><b>Cost</b>: {_seconds(float(wall.sum()) if wall.len() else None)} of trial wall time '
            f"(sum over trials), {_seconds(float(cpu.sum()) if cpu.len() else None)} of CPU time, {esc(gpu)}; "
            f"{_seconds(elapsed)} from the first trial's start to the last report</li>")


def _claims(ctx: Ctx) -> str:
    """The lab's claims beside this study's evidence (study.evidence.claims), one row per claim."""
    alpha, margin = ctx.info.alpha, evidence.claim_margin(ctx.info)
    rows = evidence.claims(ctx.scores, ctx.epochs, ctx.summary, ctx.info.searched, alpha, margin)
    unlearned = "" if evidence.any_learned(ctx.scores) else note(
        "No setting has learned (see the first sentence): these rows compare unlearned models.")
    return (unlearned + html_table(evidence.claims_table(rows), "data claims")
            + f'<p class="small">Computed from this study\'s trials, seeds as samples: a directional claim with '
            f"Welch's t-test (clear at p &lt; {alpha:g}, [study] alpha), an \"about as good as\" claim by equivalence "
            f"within +-{margin:g} dB (two one-sided tests, TOST; [study] margin_db). Reproduced, contradicted, undecided "
            "(with the seeds per setting it would take to settle), or not measured here where the study's parameters cannot "
            "test the claim. The lab's claims are about val/psnr, each trial's at its score's epoch.</p>")


def summary_section(ctx: Ctx) -> str:
    """The learning sentence first, then the study's facts, the verdicts, the lab's claims beside the
    evidence and THE ranking's table, then what it ran on (its manifest) and the study file."""
    t, info = ctx.trials, ctx.info
    counts = {s: int(n) for s, n in t.group_by("status").len().iter_rows()}
    status = ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in
                       ("completed", "stopped_early", "diverged", "errored", "running"))
    items = [f"<li><b>Trials</b>: {t.height} ({esc(status)})</li>", *_best_items(ctx), _step_item(ctx),
             _floor_item(ctx), _time_item(ctx)]
    unit = unit_of(info.metric)
    sentences = comparisons(ctx.summary, ctx.scores, info.searched, unit, info.alpha)
    comp = ("<ul class=\"verdicts\">" + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>") if sentences else \
        note("No comparison yet: fewer than two settings have a validation result.")
    lead = f'<p class="lead" id="learning">{esc(evidence.learning_sentence(ctx.scores, real_data=bool(info.fixed.get("data", {}).get("root"))))}</p>'
    desc = f"<p>{esc(info.description)}</p>" if info.description else ""
    study = (f'<details open><summary>The study file (study.toml)</summary><pre class="study-file">{esc(info.text)}</pre></details>'
             if info.text else note("No study.toml in this results dir."))
    return (f"{lead}{desc}<ul class=\"facts\">{''.join(items)}</ul><h3>Verdicts</h3>"
            f"<p class=\"small\">Each compares two settings' trial scores, seeds as samples, with Welch's t-test "
            f"(scipy; clear when p &lt; {info.alpha:g}, [study] alpha), with the 95% confidence interval of the "
            f"difference of means; a setting with one seed has no spread to test.</p>{comp}"
            f"<h3 id=\"claims\">The lab's claims beside the evidence</h3>{_claims(ctx)}"
            f"<h3>The ranking: {esc(info.scored_by)}, mean ± sd over seeds</h3>{_race_item(ctx, unit)}"
            f"{_summary_table(ctx.summary, unit, ctx.race, info.race_rule)}"
            f"<p class=\"small\">Per trial, {esc(info.metric)} at its {esc(info.objective)} epoch ([study] objective); "
            "every trial with a value counts, stopped-early and diverged ones included (see their counts). A setting "
            "that lost a seed (a trial that ended without a value) ranks below every setting that lost none. "
            "sd needs n ≥ 2. best.toml, the verdicts, the frames below and the console read this ranking.</p>"
            f'<h3 id="manifest">What it ran on</h3>{guard(lambda: provenance_section(ctx))}' + study)


def _race_sentence(race: Sequence[Standing], rule: RaceRule, top: int, over: bool, unit: str = " dB") -> str:
    """A seed race in one sentence: its seeds, who races, its open and settled comparisons
    (study.race.summary_text) and the level its repeated looks are tested at."""
    who = (f"the {top} best configurations by their first {rule.min_seeds} seeds race, the others are not raced"
           if top else "every configuration races")
    tests = "a paired t-test and paired TOST on the seeds both ran" if rule.paired else "Welch's t-test and TOST"
    return (f"Seed race: {rule.min_seeds} to {rule.max_seeds} seeds per configuration ({who}); {summary_text(race)} "
            f"against the leader, {'and the race is over' if over else 'and the race goes on'}. After each seed a "
            f"comparison is judged by {tests} at alpha / looks = {rule.alpha:g} / {rule.looks} = {rule.level:.2g} "
            f"(repeated looks still err at most alpha of the time); equivalent is within +-{rule.margin:g}{unit}.")


def _race_item(ctx: Ctx, unit: str) -> str:
    rule = ctx.info.race_rule
    if rule is None or ctx.race is None:
        return ""  # fixed seeds: no race to describe
    over = evidence.race_over(ctx.tables, ctx.info, ctx.race)
    return f'<p id="race">{esc(_race_sentence(ctx.race, rule, ctx.info.confirm_top, over, unit))}</p>'


def _race_frame(race: Sequence[Standing], rule: RaceRule) -> pl.DataFrame:
    """setting -> its race state in words (study.evidence.race_text), seeds it ran (ended) and scored."""
    return pl.DataFrame({"setting": [st.setting for st in race], "race": [evidence.race_text(st, rule) for st in race],
                         "seeds run": [st.seeds for st in race], "seeds scored": [st.n for st in race]},
                        schema={"setting": pl.String, "race": pl.String, "seeds run": pl.Int64, "seeds scored": pl.Int64})


def _summary_table(summary: pl.DataFrame, unit: str = " dB", race: Sequence[Standing] | None = None,
                   rule: RaceRule | None = None) -> str:
    """THE ranking as a table; a seed race's (race and rule given) with each configuration's state and seeds."""
    if not summary.height:
        return note("No trials yet.")
    raced = race is not None and rule is not None
    if race is not None and rule is not None:
        summary = summary.join(_race_frame(race, rule), on="setting", how="left", maintain_order="left")
    df = summary.select(
        pl.col("rank"), pl.col("setting"), pl.col("n"),
        pl.struct("mean", "sd").map_elements(lambda s: score_text(s["mean"], s["sd"], unit=unit), return_dtype=pl.String)
        .alias("mean ± sd"),
        *([pl.col("race"), pl.col("seeds run"), pl.col("seeds scored")] if raced else []),
        pl.col("min").round(2).alias(f"min{unit}"), pl.col("max").round(2).alias(f"max{unit}"),
        pl.col("lost").alias("lost seeds"),
        pl.col("seeds").list.eval(pl.element().cast(pl.String)).list.join(", ").alias("seeds"),
        pl.concat_str([pl.format(f"{{}} {s.replace('_', ' ')}", pl.col(f"n_{s}")) for s in
                       ("completed", "stopped_early", "diverged", "errored", "running")], separator=", ").alias("trials"),
    )
    return html_table(df, "data summary")
