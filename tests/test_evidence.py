"""The statistics behind the report's verdicts: learned or not, Welch's test, the lab's claims."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from fake_results import write_fake_study
from study import evidence
from study.analyze import StudyInfo, read_study
from study.tables import analyze, ranking
from study.evidence import (claim_margin, claims, equality_claim, learned_settings, learning, learning_sentence, p_text,
                            seeds_needed, step_diagnosis, tost, trial_scores, welch)


def trials(rows: list[tuple[str, float, float]], **params: list) -> pl.DataFrame:
    """(setting, score, floor) rows, plus parameter columns."""
    df = pl.DataFrame({"setting": [r[0] for r in rows], "score": [r[1] for r in rows],
                       "floor": [r[2] for r in rows], "trial_id": [f"t{i}" for i in range(len(rows))]})
    return df.with_columns(*(pl.Series(k, v) for k, v in params.items()))


def test_welch_on_a_clear_winner_a_tie_and_one_seed() -> None:
    clear = welch([25.0, 25.2, 24.9], [20.1, 19.8, 20.3], "A", "B")
    assert clear.clear and clear.diff == pytest.approx(4.9667, abs=1e-3)
    ref = stats.ttest_ind([25.0, 25.2, 24.9], [20.1, 19.8, 20.3], equal_var=False)
    assert clear.p == pytest.approx(ref.pvalue) and clear.low < clear.diff < clear.high
    assert clear.sentence().startswith("A beats B by 4.97 dB (Welch's t-test p < 0.001, 95% CI of the difference [+4.45, +5.48] dB")
    tie = welch([25.0, 27.0, 23.0], [24.0, 26.5, 25.0], "A", "B")
    assert not tie.clear and tie.p > 0.5 and "undecided" in tie.sentence() and tie.low < 0 < tie.high
    assert "more than 1000 seeds per setting" in tie.sentence()  # a 0.17-dB difference under a 2-dB spread
    one = welch([25.0], [20.0, 21.0], "A", "B")
    assert one.p is None and not one.clear and "one seed: no spread" in one.sentence()


def test_the_summary_says_first_when_nothing_learned() -> None:
    floor = 19.2
    flat = trials([("None", 19.5, floor), ("None", 18.9, floor), ("None", 19.4, floor),
                   ("Monotonic", 19.0, floor), ("Monotonic", 19.9, floor), ("Monotonic", 18.6, floor),
                   ("Cyclical", None, floor)])
    s = learning_sentence(flat)
    assert s.startswith("The runs did not learn enough to compare settings")
    assert "epochs" in s and "1 trial that never validated left out" in s and "synthetic_train_videos" in s
    real = learning_sentence(flat, real_data=True)  # [data] root: the embedded data's size keys do nothing
    assert "synthetic" not in real and all(k in real for k in ("epochs", "max_steps_per_epoch", "video_len", "frame_H"))
    assert not learning(flat)["learned"].any()
    clear = trials([("None", 29.5, floor), ("None", 30.1, floor), ("None", 29.8, floor),
                    ("Monotonic", 27.0, floor), ("Monotonic", 28.2, floor), ("Monotonic", 27.5, floor)])
    s = learning_sentence(clear)
    assert not s.startswith("The runs did not learn") and s.startswith("All 2 settings beat the floor")
    per = learning(clear)
    assert per["setting"].to_list() == ["None", "Monotonic"] and per["learned"].all()
    some = trials([("None", 29.5, floor), ("None", 30.1, floor), ("Monotonic", 19.0, floor), ("Monotonic", 19.9, floor)])
    s = learning_sentence(some)
    assert s.startswith("1 of 2 settings beat the floor") and "Monotonic did not" in s and "unlearned" in s
    assert learned_settings(some) == {"None"}
    # a running trial without a score yet is no trial that "never validated"
    running = flat.with_columns(status=pl.when(pl.col("score").is_null()).then(pl.lit("running"))
                                .otherwise(pl.lit("completed")))
    assert "left out" not in learning_sentence(running)
    assert learning_sentence(flat.head(0)).startswith("No trial has validated yet")


def test_the_step_diagnosis() -> None:
    floor, copy = 19.9, 36.1
    assert step_diagnosis(33.1, floor, 33.1, copy).startswith("It paints from the pose alone")
    assert "nothing to compound" in step_diagnosis(33.1, floor, 33.1, copy)
    assert "still under the floor" in step_diagnosis(18.5, floor, 18.6, copy)
    assert step_diagnosis(30.0, floor, 35.5, copy).startswith("It carries the previous frame forward")
    assert "loses 5.5 dB of that by compounding" in step_diagnosis(30.0, floor, 35.5, copy)
    assert "fails by compounding its own errors: it ends under the floor" in step_diagnosis(16.1, floor, 30.0, copy)
    assert step_diagnosis(28.0, floor, 30.0, copy).startswith("It uses the previous frame")
    assert "keeps most of it" in step_diagnosis(34.0, floor, 35.5, copy)


@pytest.mark.slow
def test_trial_scores_score_trials_as_the_ranking_does(tmp_path) -> None:
    study = write_fake_study(tmp_path)
    tables, info = analyze(study), read_study(study)
    scores = trial_scores(tables, info)
    assert scores.height == tables.trials.height
    both = scores.join(tables.trials.select("trial_id", "objective", "val_psnr_hold"), on="trial_id")
    assert both["score"].to_list() == both["objective"].to_list()  # one way of scoring a trial
    assert both["floor"].to_list() == both["val_psnr_hold"].to_list()
    assert scores.filter(pl.col("score").is_not_null())["psnr"].to_list() == \
        scores.filter(pl.col("score").is_not_null())["score"].to_list()
    assert scores["psnr_step"].null_count() == scores.height  # results made before the one-step metrics
    assert {"kl_anneal_type", "kl_anneal_cycle", "epochs", "status"} <= set(scores.columns)
    # the ranking's means are the means of these scores
    rank = ranking(tables, info)
    means = scores.group_by("setting").agg(pl.col("score").mean())
    assert dict(means.iter_rows()) == pytest.approx(dict(rank.select("setting", "mean").iter_rows()))


def test_claims_are_computed_from_the_tables_one_row_each() -> None:
    floor = 19.0
    kl = trials([("None", 30.0, floor), ("None", 30.4, floor), ("None", 29.7, floor),
                 ("Monotonic", 27.0, floor), ("Monotonic", 27.3, floor), ("Monotonic", 26.8, floor),
                 ("Cyclical", 27.1, floor), ("Cyclical", 26.9, floor), ("Cyclical", 27.4, floor)],
                kl_anneal_type=["None"] * 3 + ["Monotonic"] * 3 + ["Cyclical"] * 3)
    epochs = pl.DataFrame({"trial_id": kl["trial_id"], "epoch": [0] * 9,
                           "train/loss": [9.0, 9.5, 8.8, 0.02, 0.03, 0.025, 0.02, 0.021, 0.03]})
    rank = pl.DataFrame({"setting": ["None", "Cyclical", "Monotonic"]})
    rows = {c.question: c for c in claims(kl, epochs, rank, ["kl_anneal_type"])}
    assert len(rows) == 5 and all(c.status in evidence.CLAIM_STATUSES for c in rows.values())
    assert rows["Which KL annealing? (training loss)"].status == "reproduced"
    # Cyclical ~ Monotonic? +0.10 dB, but at n = 3 its 90% CI [-0.47, +0.67] does not fit in +-0.5 dB
    assert rows["Which KL annealing? (val/psnr)"].status == "undecided"
    assert "TOST p = 0.062" in rows["Which KL annealing? (val/psnr)"].measured
    assert "about 6 seeds per setting would settle it" in rows["Which KL annealing? (val/psnr)"].measured
    for q in ("Does teacher forcing help?", "Does fast train help?", "Best overall"):
        assert rows[q].status == "not measured here"

    tfr = trials([("tfr=0.0", 24.0, floor), ("tfr=0.0", 24.5, floor), ("tfr=0.0", 23.8, floor),
                  ("tfr=1.0", 28.0, floor), ("tfr=1.0", 28.4, floor), ("tfr=1.0", 27.9, floor)],
                 tfr=[0.0] * 3 + [1.0] * 3)
    c = {c.question: c for c in claims(tfr, pl.DataFrame(), pl.DataFrame({"setting": ["tfr=1.0"]}), ["tfr"])}
    assert c["Does teacher forcing help?"].status == "contradicted"
    assert "tfr 1.0 beats tfr 0.0 by 4.00 dB (Welch's t-test p < 0.001, 95% CI of the difference [+3.26, +4.74] dB" in \
        c["Does teacher forcing help?"].measured  # the winner first, its interval positive
    assert c["Which KL annealing? (training loss)"].status == "not measured here"

    fast = trials([("f0", 25.0, floor), ("f0", 26.0, floor), ("f20", 25.5, floor), ("f20", 25.6, floor)],
                  fast_train_epoch=[0, 0, 20, 20], epochs=[20] * 4)
    c = {c.question: c for c in claims(fast, pl.DataFrame(), pl.DataFrame({"setting": ["f20"]}), ["fast_train_epoch"])}
    assert c["Does fast train help?"].status == "undecided" and "seeds per setting" in c["Does fast train help?"].measured
    one = trials([("f0", 25.0, floor), ("f20", 26.0, floor)], fast_train_epoch=[0, 20], epochs=[20, 20])
    c = {c.question: c for c in claims(one, pl.DataFrame(), pl.DataFrame({"setting": ["f20"]}), ["fast_train_epoch"])}
    assert c["Does fast train help?"].status == "not measured here" and "one seed" in c["Does fast train help?"].measured


def test_tost_and_the_seeds_needed_agree_with_statsmodels() -> None:
    from statsmodels.stats.power import TTestIndPower
    from statsmodels.stats.weightstats import ttost_ind

    a, b = [25.1, 25.5, 24.9, 25.2], [25.3, 25.0, 25.2, 25.4]
    e = tost(a, b, 0.5)
    assert e.p == pytest.approx(ttost_ind(a, b, -0.5, 0.5, usevar="unequal")[0]) and e.margin == 0.5
    assert e.equivalent == (e.p < 0.05)
    sd = float(np.sqrt((np.var(a, ddof=1) * 3 + np.var(b, ddof=1) * 3) / 6))
    diff = abs(np.mean(a) - np.mean(b))
    want = TTestIndPower().solve_power(effect_size=(0.5 - diff) / sd, alpha=0.05, power=0.8, alternative="larger")
    assert seeds_needed(a, b, equality=True, margin=0.5) == max(int(np.ceil(want)), 2)
    c, d = [25.0, 26.0, 25.5], [25.6, 26.4, 26.1]
    sd = float(np.sqrt((np.var(c, ddof=1) + np.var(d, ddof=1)) / 2))
    want = TTestIndPower().solve_power(effect_size=abs(np.mean(c) - np.mean(d)) / sd, alpha=0.05, power=0.8)
    assert seeds_needed(c, d, equality=False) == max(int(np.ceil(want)), 2)
    assert seeds_needed([1.0, 1.0], [2.0, 2.0], equality=False) is None  # no spread: no estimate
    assert seeds_needed([25.0, 25.2], [27.0, 27.2], equality=True) is None  # 2 dB apart: never within 0.5


def test_an_equality_claim_needs_equivalence_not_a_missing_difference() -> None:
    wide = equality_claim([25.0, 27.0, 23.0], [24.0, 26.5, 25.0], "Cyclical", "Monotonic")  # p = 0.91, CI 8 dB wide
    assert wide[0] == "undecided" and "neither a clear difference" in wide[1] and "seeds per setting" in wide[1]
    narrow = equality_claim([25.10, 25.12, 25.08, 25.11], [25.09, 25.11, 25.10, 25.12], "Cyclical", "Monotonic")
    assert narrow[0] == "reproduced" and "equal within +-0.5 dB (TOST p < 0.001)" in narrow[1]
    apart = equality_claim([25.0, 25.1, 24.9], [27.0, 27.2, 27.1], "Cyclical", "Monotonic")
    assert apart[0] == "contradicted" and "a clear difference" in apart[1]
    assert equality_claim([25.0], [25.0, 25.1], "a", "b")[0] == "not measured here"


def test_the_claims_use_the_studys_level_and_margin() -> None:
    from statsmodels.stats.weightstats import ttost_ind

    cyc, mono = [25.0, 25.6, 24.8], [25.3, 24.9, 25.5]
    assert equality_claim(cyc, mono, "Cyclical", "Monotonic")[0] == "undecided"
    status, words = equality_claim(cyc, mono, "Cyclical", "Monotonic", margin=2.0)
    tost_p = ttost_ind(cyc, mono, -2, 2, usevar="unequal")[0]
    assert status == "reproduced" and f"equal within +-2 dB (TOST {p_text(tost_p)})" in words
    ci = stats.ttest_ind(cyc, mono, equal_var=False).confidence_interval(0.8)  # TOST at alpha 0.1 checks the 80% one
    assert f"80% CI [{ci.low:+.2f}, {ci.high:+.2f}] dB" in equality_claim(cyc, mono, "Cyclical", "Monotonic", alpha=0.1)[1]
    # a directional claim whose Welch p lies between 0.05 and 0.1
    floor = 19.0
    tfr = trials([("tfr=0.0", 25.0, floor), ("tfr=0.0", 25.6, floor), ("tfr=0.0", 25.3, floor),
                  ("tfr=1.0", 24.5, floor), ("tfr=1.0", 25.0, floor), ("tfr=1.0", 24.7, floor)], tfr=[0.0] * 3 + [1.0] * 3)
    rank = pl.DataFrame({"setting": ["tfr=0.0"]})
    q = "Does teacher forcing help?"
    at = {a: {c.question: c for c in claims(tfr, pl.DataFrame(), rank, ["tfr"], alpha=a)}[q] for a in (0.05, 0.1)}
    assert at[0.05].status == "undecided" and "seeds per setting" in at[0.05].measured
    assert at[0.1].status == "reproduced" and at[0.1].measured.startswith("tfr 0.0 beats tfr 1.0")
    # the claims are about val/psnr: a study's margin in another metric's unit is no margin in dB
    info = StudyInfo("t", "val/psnr", "max", "best", (0,), (), "", None, None, {}, margin=2.0)
    assert claim_margin(info) == 2.0
    ssim = StudyInfo("t", "val/ssim", "max", "best", (0,), (), "", None, None, {}, margin=0.02)
    assert claim_margin(ssim) == evidence.MARGIN_DB
