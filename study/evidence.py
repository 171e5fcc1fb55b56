"""What a study's numbers support: did its runs learn, which differences are real, how the lab's
claims fare against them, and what the one-step diagnostic says about the best run.

Seeds are the samples, and the tests are study.compare's (the seed race judges with the same
ones): two settings are compared with Welch's t-test on their trials' scores, with its p-value and
the 95% confidence interval of the difference of means; with fewer than two scores on a side there
is no spread to test ("one seed: no spread"). A claim of equality ("about as good as") is judged by
equivalence, never by a non-significant difference: two one-sided tests (TOST) within the study's
margin. A verdict that is neither settled way is "undecided", and says how many seeds per setting
the observed spread would need to settle it (statsmodels' power of the t-test). A setting has learned when its mean margin over the floor (val/psnr_hold,
repeating frame 0) exceeds the spread of its val/psnr; a study whose settings have not cannot
compare them, and says so first (docs/ARCHITECTURE.md, contract 9).

`trial_scores(tables, info)` is the one per-trial frame everything here reads: `setting`, `score`
(the trial's objective, exactly as THE ranking scores it: study.ranking.trial_objective), `floor`
(its val/psnr_hold), `psnr` / `psnr_step` / `psnr_step_hold` at the score's epoch, `trial_id`,
`status`, `epochs` and the searched parameters. Trials with no score (never validated) are left
out of every statistic and counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import polars as pl

from study.analyze import StudyInfo
from study.compare import (ALPHA, MARGIN_DB, Equivalence, Test, finite_values as _finite, needs_text, p_text,
                           seeds_needed, tost, welch)
from study.race import EQUIVALENT, LEADER, NOT_RACED, WORSE, RaceRule, Standing, next_round, standings
from study.tables import Tables, trial_arms

CLAIM_STATUSES: tuple[str, ...] = ("reproduced", "contradicted", "undecided", "not measured here")
# The one-step diagnostic's thresholds (dB): a step within NEAR of copying the previous frame carries
# it forward; a step within NEAR of the rollout adds nothing to it (the previous frame is not used);
# a rollout more than COMPOUND under its step loses that to its own errors piling up.
NEAR = 1.0
COMPOUND = 3.0
_AT_SCORE = {"val/psnr": "psnr", "val/psnr_step": "psnr_step", "val/psnr_step_hold": "psnr_step_hold"}


def trial_scores(tables: Tables, info: StudyInfo) -> pl.DataFrame:
    """One row per trial: its score as THE ranking has it (the `objective` column study.analyze
    computes with trial_objective), its floor, its val/psnr and one-step PSNRs at the score's epoch
    (null where the results predate them), status, epochs and the searched parameters."""
    t = tables.trials
    params = [p for p in info.searched if p in t.columns and p != "epochs"]
    base = t.select("trial_id", "setting", "seed", "status", pl.col("objective").alias("score"),
                    pl.col("objective_epoch").alias("score_epoch"), pl.col("val_psnr_hold").alias("floor"),
                    *(["epochs"] if "epochs" in t.columns else []), *params)
    e = tables.epochs
    have = [c for c in _AT_SCORE if c in e.columns]
    if have and {"trial_id", "epoch"} <= set(e.columns):
        at = e.select(pl.col("trial_id"), pl.col("epoch").alias("score_epoch"),
                      *(pl.col(c).cast(pl.Float64).alias(_AT_SCORE[c]) for c in have))
        base = base.join(at, on=["trial_id", "score_epoch"], how="left")
    return base.with_columns(pl.lit(None, pl.Float64).alias(v) for c, v in _AT_SCORE.items() if v not in base.columns)


def compare(trials: pl.DataFrame, a: str, b: str, unit: str = " dB", alpha: float = ALPHA) -> Test:
    """Welch's test of two settings' scores (trial_scores rows), clear at p < alpha ([study] alpha)."""
    of = lambda s: trials.filter(pl.col("setting") == s)["score"].to_list()  # noqa: E731
    return welch(of(a), of(b), a, b, unit, alpha=alpha)


# -- the seed race ----------------------------------------------------------------------------------
def race_standings(tables: Tables, info: StudyInfo, needed: bool = True) -> list[Standing] | None:
    """Each configuration's standing in the study's seed race (study.race.standings), leader first;
    None when the study's seeds are a fixed list. Recomputed from results/ every time."""
    rule = info.race_rule
    if rule is None:
        return None
    return standings(trial_arms(tables.trials), rule, info.race_top, needed=needed)


def race_over(tables: Tables, info: StudyInfo, table: Sequence[Standing] | None = None) -> bool:
    """True when the study's race gives no configuration another seed (always, without a race);
    `table`: its standings, when the caller has them already (race_standings)."""
    rule = info.race_rule
    return rule is None or not next_round(trial_arms(tables.trials), rule, info.race_top, table)


def race_text(st: Standing, rule: RaceRule) -> str:
    """A standing in words: "leader", "clearly worse (p = 0.003)", "open: about 9 seeds would settle it"."""
    if st.state in (LEADER, NOT_RACED):
        return st.state
    if st.state == WORSE:
        return f"clearly worse ({p_text(st.p)}, level {rule.level:.2g})" if st.p is not None else st.state
    if st.state == EQUIVALENT:
        return f"equivalent within +-{rule.margin:g} (TOST {p_text(st.tost_p)})" if st.tost_p is not None else st.state
    at_max = " at max seeds" if st.seeds >= rule.max_seeds else ""
    return f"open{at_max}: {needs_text(st.needed)}"


# -- did the runs learn? --------------------------------------------------------------------------
def scored(trials: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The trials that have a finite score, and how many ended without one (never validated);
    running trials without a score yet are neither."""
    ok = trials.filter(pl.col("score").is_not_null() & pl.col("score").is_finite())
    rest = trials.filter(~pl.col("trial_id").is_in(ok["trial_id"].implode())) if "trial_id" in trials.columns else \
        trials.filter(pl.col("score").is_null() | ~pl.col("score").is_finite())
    if "status" in rest.columns:
        rest = rest.filter(pl.col("status") != "running")
    return ok, rest.height


def _psnr(trials: pl.DataFrame) -> pl.Expr:
    # val/psnr at the score's epoch (== score when the study's metric is val/psnr); old frames: score
    return pl.coalesce("psnr", "score") if "psnr" in trials.columns else pl.col("score")


def learning(trials: pl.DataFrame) -> pl.DataFrame:
    """Per setting: n, mean and sd of val/psnr at the score's epoch, the mean floor, the margin over it
    and `learned` (margin > sd; with one seed, margin > 0 and `one_seed`), best margin first."""
    ok, _ = scored(trials)
    per = ok.with_columns(_psnr(ok).alias("_psnr")).filter(pl.col("_psnr").is_finite()).group_by(
        "setting", maintain_order=True).agg(
        pl.len().alias("n"), pl.col("_psnr").mean().alias("mean"), pl.col("_psnr").std().alias("sd"),
        pl.col("floor").mean().alias("floor"))
    per = per.with_columns((pl.col("mean") - pl.col("floor")).alias("margin"), (pl.col("n") < 2).alias("one_seed"))
    return per.with_columns(
        pl.when(pl.col("one_seed")).then(pl.col("margin") > 0)
        .otherwise(pl.col("margin") > pl.col("sd").fill_null(0.0)).alias("learned").fill_null(False)
    ).sort("margin", descending=True, nulls_last=True)


def _names(xs: Sequence[str], most: int = 3) -> str:
    xs = list(xs)
    return ", ".join(xs[:most]) + (f" and {len(xs) - most} more" if len(xs) > most else "")


def budget_advice(real_data: bool) -> str:
    """What to raise when no setting learned: the keys that change this study's budget. A real
    dataset's size is its own; the embedded one's size keys do nothing there."""
    keys = ("[train] epochs, [train] max_steps_per_epoch (if set), [data] video_len (frames per sequence) "
            "or the frame size ([data] frame_H / frame_W: smaller frames buy more steps per CPU-second)")
    if real_data:
        return f"Raise {keys}, then rerun before reading any comparison below."
    return (f"Raise {keys}, or the embedded data's size ([data] synthetic_train_videos / synthetic_train_frames), "
            "then rerun before reading any comparison below.")


def learning_sentence(trials: pl.DataFrame, real_data: bool = False) -> str:
    """The report's first sentence: whether the settings learned enough to be compared; real_data: the
    study's [data] root is set (budget_advice)."""
    per = learning(trials)
    _, excluded = scored(trials)
    left_out = f" ({excluded} trial{'s' if excluded != 1 else ''} that never validated left out)" if excluded else ""
    if per.is_empty():
        return f"No trial has validated yet{left_out}: nothing to compare."
    floor = per["floor"].mean()
    learned = per.filter(pl.col("learned"))
    if learned.is_empty():
        return (f"The runs did not learn enough to compare settings: no setting's mean val/psnr beats the floor "
                f"(repeating frame 0, {floor:.2f} dB) by more than its seed spread (best margin "
                f"{per['margin'].max():+.2f} dB){left_out}. {budget_advice(real_data)}")
    margins = f"margins {per['margin'].min():+.2f} to {per['margin'].max():+.2f} dB"
    if learned.height == per.height:
        which = f"All {per.height} settings beat" if per.height > 1 else "The one setting beats"
        return (f"{which} the floor (repeating frame 0, {floor:.2f} dB) by more than "
                f"{'their' if per.height > 1 else 'its'} seed spread: {margins}{left_out}.")
    missed = per.filter(~pl.col("learned"))["setting"].to_list()
    return (f"{learned.height} of {per.height} settings beat the floor (repeating frame 0, {floor:.2f} dB) by more "
            f"than their seed spread ({margins}); {_names(missed)} did not{left_out}: comparisons with "
            f"{'it' if len(missed) == 1 else 'them'} compare unlearned models.")


def any_learned(trials: pl.DataFrame) -> bool:
    return bool(learning(trials)["learned"].any()) if trials.height else False


def learned_settings(trials: pl.DataFrame) -> set[str]:
    per = learning(trials)
    return set(per.filter(pl.col("learned"))["setting"].to_list())


# -- the one-step diagnostic ----------------------------------------------------------------------
def step_diagnosis(rollout: float, floor: float, step: float, step_hold: float) -> str:
    """What val/psnr_step beside its copy floor says about a model (see cvae.evaluate.validate)."""
    if step >= step_hold - NEAR:
        how = ("it carries the previous frame forward: from the true previous frame it predicts as well as "
               "copying that frame, or better")
    elif step - rollout >= NEAR:
        how = (f"it uses the previous frame (its one-step prediction is {step - rollout:.1f} dB above its rollout), "
               f"though {step_hold - step:.1f} dB under copying it")
    else:
        return (f"It paints from the pose alone: given the true previous frame it does no better than its own "
                f"rollout, {step_hold - step:.1f} dB under simply copying that frame"
                + (", and still under the floor." if rollout <= floor else ", so its rollout has nothing to compound."))
    if rollout <= floor:
        return f"{how[0].upper()}{how[1:]}; its rollout fails by compounding its own errors: it ends under the floor."
    if step - rollout > COMPOUND:
        return (f"{how[0].upper()}{how[1:]}; its rollout loses {step - rollout:.1f} dB of that by compounding its own "
                "errors.")
    return f"{how[0].upper()}{how[1:]}, and its rollout keeps most of it."


# -- the lab's claims -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    question: str
    lab: str  # what the lab concluded
    measured: str  # what this study measured, in words with its test
    status: str  # one of CLAIM_STATUSES


def _scores(df: pl.DataFrame, cond: pl.Expr, col: str = "score") -> list[float]:
    return [x for x in df.filter(cond)[col].to_list() if x is not None and math.isfinite(x)]


def _verdict(t: Test, expect_a_higher: bool) -> str:
    """A directional claim: reproduced / contradicted when the difference is clear, else undecided."""
    if not t.testable:
        return "not measured here"
    if not t.clear:
        return "undecided"
    return "reproduced" if (t.diff > 0) == expect_a_higher else "contradicted"


def _directional(t: Test, expect_a_higher: bool) -> tuple[str, str]:
    """(status, words) of a directional claim; an undecided one says the seeds it would need."""
    return _verdict(t, expect_a_higher), t.sentence()


def equality_claim(a: Sequence[float], b: Sequence[float], a_name: str, b_name: str,
                   margin: float = MARGIN_DB, alpha: float = ALPHA) -> tuple[str, str]:
    """(status, words) of "a is about as good as b": reproduced when TOST at alpha shows |difference| <
    margin, contradicted when the difference is clear, undecided otherwise (with the seeds it would need)."""
    e = tost(a, b, margin, a_name, b_name, alpha=alpha)
    t = e.test
    if not t.testable:
        return "not measured here", t.sentence()
    xa, xb = _finite(a), _finite(b)
    if max(xa) == min(xa) and max(xb) == min(xb):
        low, high = t.low, t.high
    else:  # the interval TOST at alpha checks against the margin: the (1 - 2 alpha) one
        from scipy import stats  # here, as study.compare does: `cvae-study status` imports this module

        ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(1 - 2 * alpha)
        low, high = float(ci.low), float(ci.high)
    words = (f"{a_name} vs {b_name}: {t.diff:+.2f} dB, {100 * (1 - 2 * alpha):.3g}% CI [{low:+.2f}, {high:+.2f}] dB, "
             f"n = {t.n_a} vs {t.n_b}")
    if t.clear:
        return "contradicted", f"{words}: a clear difference (Welch's t-test {p_text(t.p)})"
    if e.equivalent:
        return "reproduced", f"{words}: equal within +-{margin:g} dB (TOST {p_text(e.p)})"
    needed = seeds_needed(a, b, equality=True, margin=margin, alpha=alpha)
    return "undecided", (f"{words}: neither a clear difference (Welch {p_text(t.p)}) nor equal within +-{margin:g} dB "
                         f"(TOST {p_text(e.p)}); {needs_text(needed, True)}")


def _pooled(searched: Sequence[str], own: Sequence[str]) -> str:
    others = [p for p in searched if p not in own]
    return f" (pooled over {', '.join(others)})" if others else ""


def _not_here(question: str, lab: str, why: str) -> Claim:
    return Claim(question, lab, why, "not measured here")


def claim_tfr(trials: pl.DataFrame, searched: Sequence[str], alpha: float = ALPHA) -> Claim:
    q, lab = "Does teacher forcing help?", "tfr 0.0 (no teacher forcing) beat tfr 1.0 with decay"
    if "tfr" not in searched:
        return _not_here(q, lab, "tfr is not searched in this study")
    zero, one = _scores(trials, pl.col("tfr") == 0.0), _scores(trials, pl.col("tfr") == 1.0)
    if not zero or not one:
        return _not_here(q, lab, "no trials at both tfr 0.0 and tfr 1.0")
    status, words = _directional(welch(zero, one, "tfr 0.0", "tfr 1.0", alpha=alpha), expect_a_higher=True)
    return Claim(q, lab, words + _pooled(searched, ["tfr"]), status)


def claim_kl_start(trials: pl.DataFrame, epochs: pl.DataFrame, searched: Sequence[str], alpha: float = ALPHA) -> Claim:
    q, lab = "Which KL annealing? (training loss)", "the annealed schedules start with far lower loss than None"
    if "kl_anneal_type" not in searched:
        return _not_here(q, lab, "kl_anneal_type is not searched in this study")
    first = (epochs.filter(pl.col("epoch") == 0).select("trial_id", pl.col("train/loss").alias("first_loss"))
             if {"epoch", "train/loss", "trial_id"} <= set(epochs.columns) else None)
    if first is None or first.is_empty():
        return _not_here(q, lab, "no first-epoch training loss recorded")
    df = trials.join(first, on="trial_id", how="inner")
    annealed = _scores(df, pl.col("kl_anneal_type").is_in(["Monotonic", "Cyclical"]), "first_loss")
    none = _scores(df, pl.col("kl_anneal_type") == "None", "first_loss")
    if not annealed or not none:
        return _not_here(q, lab, "no trials of both None and an annealed schedule")
    t = welch(none, annealed, "None", "annealed", unit="", alpha=alpha)
    words = f"first-epoch train/loss: None {t.mean_a:.4g} vs annealed {t.mean_b:.4g}, {t.verdict()}"
    status = _verdict(t, expect_a_higher=True)
    return Claim(q, lab, words + _pooled(searched, ["kl_anneal_type", "kl_anneal_cycle"]), status)


def claim_cyclical_monotonic(trials: pl.DataFrame, searched: Sequence[str], alpha: float = ALPHA,
                             margin: float = MARGIN_DB) -> Claim:
    q, lab = "Which KL annealing? (val/psnr)", "Cyclical is about as good as Monotonic"
    if "kl_anneal_type" not in searched:
        return _not_here(q, lab, "kl_anneal_type is not searched in this study")
    cyc, mono = _scores(trials, pl.col("kl_anneal_type") == "Cyclical"), _scores(trials, pl.col("kl_anneal_type") == "Monotonic")
    if not cyc or not mono:
        return _not_here(q, lab, "no trials of both Cyclical and Monotonic")
    status, words = equality_claim(cyc, mono, "Cyclical", "Monotonic", margin, alpha)
    return Claim(q, lab, words + _pooled(searched, ["kl_anneal_type", "kl_anneal_cycle"]), status)


def _all_fast(df: pl.DataFrame) -> pl.Expr:
    return pl.col("fast_train_epoch") >= pl.col("epochs") if "epochs" in df.columns else pl.lit(False)


def claim_fast_train(trials: pl.DataFrame, searched: Sequence[str], alpha: float = ALPHA) -> Claim:
    q, lab = "Does fast train help?", "fast-train in every epoch gave the best val/psnr"
    if "fast_train_epoch" not in searched:
        return _not_here(q, lab, "fast_train_epoch is not searched in this study")
    fast = _scores(trials, _all_fast(trials))
    others = trials.filter(~_all_fast(trials))
    if not fast or others.is_empty():
        return _not_here(q, lab, "no trials of both all-fast and a shorter fast-train")
    by = others.group_by("fast_train_epoch").agg(pl.col("score").mean().alias("m")).sort("m", descending=True)
    rival = by["fast_train_epoch"][0]
    rivals = _scores(trials, pl.col("fast_train_epoch") == rival)
    status, words = _directional(welch(fast, rivals, "all-fast", f"fast_train_epoch {rival}", alpha=alpha), True)
    return Claim(q, lab, words + _pooled(searched, ["fast_train_epoch"]), status)


def claim_best_overall(trials: pl.DataFrame, ranking: pl.DataFrame, searched: Sequence[str],
                       alpha: float = ALPHA) -> Claim:
    q, lab = "Best overall", "KL annealing None with all-fast-train"
    if not {"kl_anneal_type", "fast_train_epoch"} <= set(searched):
        return _not_here(q, lab, "needs kl_anneal_type and fast_train_epoch searched together")
    lab_rows = trials.filter((pl.col("kl_anneal_type") == "None") & _all_fast(trials))
    if lab_rows.is_empty() or ranking.is_empty():
        return _not_here(q, lab, "no trial ran KL None with all-fast-train")
    top = ranking["setting"][0]
    lab_setting = lab_rows.group_by("setting").agg(pl.col("score").mean().alias("m")).sort("m", descending=True)["setting"][0]
    if lab_setting == top:
        return Claim(q, lab, f"the top setting is {top}", "reproduced")
    a, b = _scores(trials, pl.col("setting") == top), _scores(trials, pl.col("setting") == lab_setting)
    status, words = _directional(welch(a, b, top, lab_setting, alpha=alpha), expect_a_higher=False)
    return Claim(q, lab, f"the top setting is {top}; " + words, status)


def claims(trials: pl.DataFrame, epochs: pl.DataFrame, ranking: pl.DataFrame, searched: Sequence[str],
           alpha: float = ALPHA, margin: float = MARGIN_DB) -> list[Claim]:
    """One row per lab claim: those this study's parameters can test, the others "not measured here".
    The lab's claims are about val/psnr: each trial's at its score's epoch (its score when that is the
    study's metric), compared with Welch's test at `alpha`, equality within +-`margin` dB (the study's
    [study] alpha and margin_db: claim_margin)."""
    ok, _ = scored(trials)
    ok = ok.with_columns(_psnr(ok).alias("score"))
    return [claim_tfr(ok, searched, alpha), claim_kl_start(ok, epochs, searched, alpha),
            claim_cyclical_monotonic(ok, searched, alpha, margin), claim_fast_train(ok, searched, alpha),
            claim_best_overall(ok, ranking, searched, alpha)]


def claim_margin(info: StudyInfo) -> float:
    """The margin of the lab's equality claims, in dB: the study's margin_db where its metric is a PSNR;
    another metric's margin is in that metric's unit, not dB, so the claims keep MARGIN_DB there."""
    return info.margin if "psnr" in info.metric else MARGIN_DB


def claims_table(rows: Sequence[Claim]) -> pl.DataFrame:
    return pl.DataFrame([{"question": c.question, "the lab concluded": c.lab, "this study measured": c.measured,
                          "status": c.status} for c in rows],
                        schema={"question": pl.String, "the lab concluded": pl.String, "this study measured": pl.String,
                                "status": pl.String})


__all__ = ["race_over", "race_standings", "race_text", "ALPHA", "CLAIM_STATUSES", "claim_margin", "MARGIN_DB", "Claim", "Equivalence", "Test", "equality_claim", "needs_text", "seeds_needed",
           "tost", "any_learned", "claims", "claims_table", "compare", "learned_settings",
           "budget_advice", "learning", "learning_sentence", "p_text", "scored", "step_diagnosis", "trial_scores", "welch"]
