"""study.report: the HTML report has every section and figure, the floor everywhere, and needs no network."""
from __future__ import annotations

import html
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import optuna
import polars as pl
import pytest
from scipy import stats
from fake_results import write_fake_study, write_race_study, write_scores_study
from statsmodels.stats.weightstats import ttost_ind

from study.analyze import StudyInfo
from study.tables import Tables, analyze, ranking
from study.evidence import CLAIM_STATUSES, p_text, race_text
from study.race import EQUIVALENT, LEADER, OPEN, WORSE, RaceRule, race_arms, standings, summary_text
from study.report.figures import STEP_FLOOR
from study.spec import Param
from study.report import FLOOR_LABEL, SECTIONS, build_report, comparisons, main, optuna_study
from study_helpers import StudyRun

optuna.logging.set_verbosity(optuna.logging.WARNING)

# figure id -> title, on the hand-made study (fast train varies only in the fast_train variant)
FIGURES = {
    "fig-setting-best": "Best val/psnr of each trial, per setting",
    "fig-tfr": "Teacher-forcing ratio per epoch",
    "fig-beta": "KL weight β per epoch, for each KL annealing schedule",
    "fig-loss": "Training loss per epoch (log scale)",
    "fig-val-psnr": "Validation PSNR per epoch",
    "fig-frame-psnr": "Per-frame PSNR over the validation video, best run of each setting",
    "fig-history": "Optimisation history of val/psnr",
    "fig-parallel": "Parallel coordinates of the searched parameters",
    "fig-slice": "Slice plots: val/psnr against each searched parameter",
    "fig-importance": "Parameter importance for val/psnr",
}
PSNR_FIGURES = ("fig-setting-best", "fig-val-psnr", "fig-frame-psnr", "fig-fast-train", "fig-history", "fig-slice")


class _Page(HTMLParser):
    """Collects what the offline check needs: script src, link href, section ids, figure titles."""

    def __init__(self) -> None:
        super().__init__()
        self.script_src: list[str] = []
        self.link_href: list[str] = []
        self.img_src: list[str] = []
        self.sections: dict[str, str] = {}
        self.figures: list[str] = []
        self._section: str | None = None
        self._h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.script_src.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.link_href.append(a["href"] or "")
        if tag == "img":
            self.img_src.append(a.get("src") or "")
        if tag == "section":
            self._section = a.get("id")
        if tag == "h2":
            self._h2 = True
        if tag == "figure" and a.get("class") == "plot":
            self.figures.append(a.get("data-title") or "")

    def handle_endtag(self, tag: str) -> None:
        self._h2 = self._h2 and tag != "h2"

    def handle_data(self, data: str) -> None:
        if self._h2 and self._section:
            self.sections[self._section] = self.sections.get(self._section, "") + data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def figure_chunks(text: str) -> dict[str, str]:
    """figure div id -> its HTML (the div and the script drawing it), JSON's \\uXXXX escapes decoded."""
    parts = text.split('<figure class="plot"')[1:]
    return {re.search(r'<div id="([^"]+)" class="plotly-graph-div"', p).group(1):
            re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), p.split("</figure>")[0])
            for p in parts}


def assert_offline(text: str) -> None:
    page = parse(text)
    assert not page.script_src, f"external scripts: {page.script_src}"
    assert not [h for h in page.link_href if not h.startswith("#")], page.link_href
    assert all(s.startswith("data:") for s in page.img_src), page.img_src
    assert 'src="http' not in text and "src='http" not in text
    assert not re.search(r'<link[^>]+href="http', text)
    assert text.count("* plotly.js v") == 1, "plotly.js must be embedded exactly once"
    assert "cdn.plot.ly/plotly" not in text.split('id="plotly-js">')[0]


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The hand-made study (conftest's `fake`) and its report, built once for the tests that only read it."""
    study = write_fake_study(tmp_path_factory.mktemp("fake-report"))
    return study, build_report(study)


@pytest.mark.slow
def test_sections_figures_and_notes(fake_report: tuple[Path, Path]) -> None:
    study, path = fake_report
    assert path == study / "report.html"
    text = path.read_text()
    page = parse(text)
    assert page.sections == {sid: title for sid, title in SECTIONS}
    chunks = figure_chunks(text)
    assert {fid: t for fid, t in FIGURES.items()} == {fid: t for fid, t in FIGURES.items() if fid in chunks}
    assert sorted(page.figures) == sorted(FIGURES.values())
    for fid, title in FIGURES.items():
        assert f'"title":{{"text":"{title}"' in chunks[fid]
    assert 'id="note-frames"' in text and "the model weights are missing" in text  # no state.pt in the fake
    assert 'id="note-fast-train"' in text and "fast_train_epoch is 0 in every trial" in text
    assert_offline(text)


def test_axis_titles_and_log_loss(fake_report: tuple[Path, Path]) -> None:
    chunks = figure_chunks(fake_report[1].read_text())
    assert '"type":"log"' in chunks["fig-loss"]
    for fid in ("fig-tfr", "fig-beta", "fig-loss", "fig-val-psnr"):
        assert '"xaxis":{"title":{"text":"epoch"}' in chunks[fid] or '"title":{"text":"epoch"}' in chunks[fid], fid
    assert "val/psnr (dB)" in chunks["fig-val-psnr"] and "PSNR (dB)" in chunks["fig-frame-psnr"]
    # the legend names the setting
    assert "kl_anneal_type=Cyclical, kl_anneal_cycle=4 (n=3)" in chunks["fig-val-psnr"]


def test_the_floor_is_everywhere(fake_report: tuple[Path, Path]) -> None:
    text = fake_report[1].read_text()
    for fid, chunk in figure_chunks(text).items():
        if fid in PSNR_FIGURES:
            assert FLOOR_LABEL in chunk and '"dash":"dash"' in chunk, fid
    assert 'id="floor"' in text and "val/psnr_hold = 19.00 dB" in text


def test_summary(fake_report: tuple[Path, Path]) -> None:
    summary = _summary_of(fake_report[1].read_text())
    assert '<pre class="study-file">' in summary and "[space.kl_anneal_cycle]" in summary
    assert "9 (6 completed, 1 stopped early, 1 diverged, 1 errored, 0 running)" in summary
    assert "Best configuration</b>: kl_anneal_type=Cyclical, kl_anneal_cycle=4" in summary
    assert ("kl_anneal_type: kl_anneal_type=Cyclical (kl_anneal_cycle=4) ranks first with 22.78 ± 0.57 dB (n=3), ahead "
            "of kl_anneal_type=None 21.66 ± 0.14 dB (n=3); 1.12 dB apart: undecided (Welch&#x27;s t-test p = 0.069, "
            "95% CI of the difference [-0.19, +2.43] dB, n = 3 vs 3; about ") in summary
    assert ("kl_anneal_cycle: kl_anneal_cycle=4 (kl_anneal_type=Cyclical) ranks first with 22.78 ± 0.57 dB (n=3), ahead "
            "of kl_anneal_cycle=2 (kl_anneal_type=Cyclical) 22.36 ± 0.43 dB (n=3); 0.42 dB apart: undecided") in summary
    assert "22.78 ± 0.57 dB" in summary.split('<table class="data summary">')[1]
    assert "11.2 min of trial wall time" in summary and "10.1 min of CPU time" in summary and "no GPU" in summary
    # the first sentence says whether the settings learned; the stand-in's do (+2.7 to +3.8 dB, sd < 0.6)
    assert _first_text(summary).startswith("All 3 settings beat the floor (repeating frame 0, 19.00 dB)")
    assert 'id="step"' in summary and "not in these results" in summary  # made before val/psnr_step


def _ranked(trials: pl.DataFrame) -> pl.DataFrame:
    """THE ranking of a hand-made trials table: parameter a, val/psnr at each trial's best epoch."""
    info = StudyInfo("t", "val/psnr", "max", "best", (0, 1), (Param("a", "categorical", choices=(1, 2, 3)),), "",
                     None, None, {})
    n = pl.int_range(pl.len())
    trials = trials.with_columns(trial=pl.format("t{}", n), trial_id=pl.format("t{}", n), trial_number=n,
                                 objective_epoch=pl.lit(3), objective_checkpoint=pl.lit(None, pl.String))
    return ranking(Tables(trials, pl.DataFrame(), pl.DataFrame()), info)


def test_comparison_sentences() -> None:
    trials = pl.DataFrame({
        "setting": ["a=1"] * 2 + ["a=2"] * 2 + ["a=3"], "a": [1, 1, 2, 2, 3], "seed": [0, 1, 0, 1, 0],
        "objective": [20.0, 20.2, 21.0, 21.2, 25.0], "status": ["completed"] * 5})
    scores = trials.select("setting", "a", "status", score="objective", floor=pl.lit(19.0),
                           trial_id=pl.format("t{}", pl.int_range(pl.len())))
    out = comparisons(_ranked(trials), scores, ["a"])
    assert out[0].startswith("Overall: a=3 ranks first with 25.00 dB (n=1), ahead of the runner-up a=2 21.10 ± 0.14 dB (n=2)")
    assert "3.90 dB apart: not testable (one seed: no spread)" in out[0]
    out = comparisons(_ranked(trials.filter(pl.col("a") < 3)), scores, ["a"])
    assert "1.00 dB apart: a clear difference (Welch's t-test p = " in out[0] and "n = 2 vs 2" in out[0]
    assert "unlearned" not in out[0]
    out = comparisons(_ranked(trials.filter(pl.col("a") < 3)), scores.with_columns(floor=pl.lit(24.0)), ["a"])
    assert out[0].endswith("neither beats the floor by more than its spread, so this compares unlearned models.")
    assert comparisons(_ranked(trials.head(0)), scores.head(0), ["a"]) == []


def _summary_of(page: str) -> str:
    return page.split('<section id="summary">')[1].split("</section>")[0]


def _summary(path: Path) -> str:
    return _summary_of(build_report(path).read_text())


def _first_text(section: str) -> str:
    """The section's first sentence, after its heading."""
    body = section.split("</h2>")[1]
    assert body.startswith('<p class="lead" id="learning">'), body[:200]
    return html.unescape(re.sub(r"<[^>]+>", "", body.split("</p>")[0]))


FLAT = {"None": [19.3, 18.8, 19.2], "Monotonic": [19.1, 18.7, 19.4]}  # within noise of the floor (19.0)
CLEAR = {"None": [30.0, 30.2, 29.9], "Monotonic": [25.1, 25.3, 24.9]}


@pytest.mark.slow
def test_the_first_sentence_says_whether_the_runs_learned(tmp_path: Path) -> None:
    flat = _summary(write_scores_study(tmp_path, FLAT, "flat"))
    first = _first_text(flat)
    assert first.startswith("The runs did not learn enough to compare settings: no setting's mean val/psnr beats the "
                            "floor (repeating frame 0, 19.00 dB) by more than its seed spread")
    assert "Raise [train] epochs" in first
    assert "so this compares unlearned models." in flat.split('<ul class="verdicts">')[1]
    assert "these rows compare unlearned models" in flat.split('id="claims"')[1]
    clear = _summary(write_scores_study(tmp_path, CLEAR, "clear"))
    assert _first_text(clear).startswith("All 2 settings beat the floor (repeating frame 0, 19.00 dB) by more than "
                                         "their seed spread: margins +6.10 to +11.03 dB")
    assert "did not learn" not in clear and "unlearned" not in clear


@pytest.mark.slow
@pytest.mark.parametrize("scores, verdict", [
    (CLEAR, "4.93 dB apart: a clear difference (Welch's t-test {p}, 95% CI of the difference [+4.52, +5.35] dB"),
    ({"None": [25.0, 27.0, 23.0], "Monotonic": [24.0, 26.5, 25.0]}, "0.17 dB apart: undecided (Welch's t-test {p}"),
    ({"None": [30.0], "Monotonic": [25.0]}, "5.00 dB apart: not testable (one seed: no spread)"),
], ids=["clear-winner", "tie", "one-seed"])
def test_verdicts_state_welchs_test(tmp_path: Path, scores: dict[str, list[float]], verdict: str) -> None:
    summary = html.unescape(_summary(write_scores_study(tmp_path, scores)))
    win, lose = sorted(scores, key=lambda k: -sum(scores[k]) / len(scores[k]))
    p = stats.ttest_ind(scores[win], scores[lose], equal_var=False).pvalue if len(scores[win]) > 1 else None
    expected = verdict.format(p=p_text(p) if p is not None else "")
    overall = summary.split('<ul class="verdicts">')[1].split("</li>")[0]
    assert f"Overall: kl_anneal_type={win} ranks first" in overall and expected in overall, overall


def _table(summary: str, cls: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (cell texts) of the summary's table of class `cls`."""
    table = summary.split(f'<table class="{cls}">')[1].split("</table>")[0]
    cells = [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)] for row in table.split("<tr>")[1:]]
    return cells[0], cells[1:]


def _claims_rows(summary: str) -> list[list[str]]:
    return _table(summary, "data claims")[1]


@pytest.mark.slow
def test_the_lab_claims_beside_the_evidence(tmp_path: Path, fake_report: tuple[Path, Path]) -> None:
    # a kl study: None clearly best, Cyclical about Monotonic
    study = write_scores_study(tmp_path, {"None": [30.0, 30.2, 29.9], "Cyclical": [25.1, 25.5, 24.9],
                                          "Monotonic": [25.3, 25.0, 25.2]})
    rows = {r[0]: r for r in _claims_rows(_summary(study))}
    assert list(rows) == ["Does teacher forcing help?", "Which KL annealing? (training loss)",
                          "Which KL annealing? (val/psnr)", "Does fast train help?", "Best overall"]
    assert all(len(r) == 4 and r[3] in CLAIM_STATUSES for r in rows.values())
    # equal by equivalence (TOST within +-0.5 dB), not by a missing difference
    assert rows["Which KL annealing? (val/psnr)"][3] == "reproduced"
    assert "Cyclical vs Monotonic: " in rows["Which KL annealing? (val/psnr)"][2]
    assert "equal within +-0.5 dB (TOST p = 0.043)" in rows["Which KL annealing? (val/psnr)"][2]
    assert rows["Which KL annealing? (training loss)"][3] == "undecided"  # the stand-ins' losses do not differ
    for q in ("Does teacher forcing help?", "Does fast train help?", "Best overall"):
        assert rows[q][3] == "not measured here"
    # every report has it, the hand-made study too (Cyclical and None: no Monotonic to compare with)
    rows = {r[0]: r for r in _claims_rows(_summary_of(fake_report[1].read_text()))}
    assert len(rows) == 5 and rows["Which KL annealing? (val/psnr)"][3] == "not measured here"


# A seed race (min 2, max 4 seeds) on known per-seed scores: study.race.replay decides who ran how many
RACES = {
    "equivalent": {"Cyclical": [30.05, 30.1, 30.0, 30.1], "None": [30.0, 30.2, 29.9, 30.1],
                   "Monotonic": [25.1, 25.3, 24.9, 25.0]},
    "open": {"None": [30.0, 30.2, 29.9, 30.1], "Monotonic": [25.1, 25.3, 24.9, 25.0], "Cyclical": [29.0, 30.5, 29.5, 31.0]},
}
RULE = RaceRule(2, 4, "max", 0.05, 0.5, False)  # what the fake race's study file says
RANKING_COLUMNS = ["rank", "setting", "n", "mean ± sd", "min dB", "max dB", "lost seeds", "seeds", "trials"]


def _arms(study: Path) -> dict[str, dict[int, float | None]]:
    """setting -> seed -> score of a finished study's trials, as study.race takes them."""
    return race_arms(analyze(study).trials.select("setting", "seed", "objective").iter_rows())


@pytest.mark.slow
@pytest.mark.parametrize("race", list(RACES))
def test_a_raced_ranking_shows_each_configurations_race(tmp_path: Path, race: str) -> None:
    study = write_race_study(tmp_path, RACES[race])
    arms = _arms(study)
    assert len({len(v) for v in arms.values()}) > 1  # the race gave the configurations different seeds
    want = standings(arms, RULE, needed=True)
    assert {st.state for st in want} == {LEADER, WORSE, EQUIVALENT if race == "equivalent" else OPEN}
    text = build_report(study).read_text()
    summary = _summary_of(text)
    head, rows = _table(summary, "data summary")
    assert head == RANKING_COLUMNS[:4] + ["race", "seeds run", "seeds scored"] + RANKING_COLUMNS[4:]
    got = [dict(zip(head, r)) for r in rows]
    assert [r["setting"] for r in got] == [st.setting for st in want]  # the ranking's order is the race's
    for r, st in zip(got, want):
        assert r["race"] == race_text(st, RULE) and r["race"].startswith(st.state)
        assert (r["seeds run"], r["seeds scored"]) == (str(len(arms[st.setting])), str(len(arms[st.setting])))
    sentence = html.unescape(summary.split('<p id="race">')[1].split("</p>")[0])
    assert sentence.startswith(f"Seed race: 2 to 4 seeds per configuration (every configuration races); "
                               f"{summary_text(want)} against the leader, and the race is over.")
    assert f"alpha / looks = 0.05 / 3 = {0.05 / 3:.2g}" in sentence and "within +-0.5 dB" in sentence
    assert "fig-race" in figure_chunks(text)


def test_a_fixed_seed_ranking_is_as_it_was(fake_report: tuple[Path, Path]) -> None:
    summary = _summary_of(fake_report[1].read_text())
    assert _table(summary, "data summary")[0] == RANKING_COLUMNS
    assert 'id="race"' not in summary and "Seed race" not in summary
    assert "fig-race" not in figure_chunks(fake_report[1].read_text())


@pytest.mark.slow
def test_the_verdicts_use_the_studys_alpha_and_margin(tmp_path: Path) -> None:
    # a difference with 0.05 < p < 0.1: undecided at the default alpha, clear at alpha = 0.1
    near = {"None": [25.0, 25.6, 25.3], "Monotonic": [24.5, 25.0, 24.7]}
    assert 0.05 < stats.ttest_ind(near["None"], near["Monotonic"], equal_var=False).pvalue < 0.1
    default = html.unescape(_summary(write_scores_study(tmp_path, near, "alpha-default")))
    loose = html.unescape(_summary(write_scores_study(tmp_path, near, "alpha-loose", keys={"alpha": 0.1})))
    verdict = lambda s: s.split('<ul class="verdicts">')[1].split("</li>")[0]  # noqa: E731
    assert "apart: undecided (Welch's t-test" in verdict(default) and "seeds per setting" in verdict(default)
    assert "apart: a clear difference (Welch's t-test" in verdict(loose)
    assert "clear when p < 0.05, [study] alpha" in default and "clear when p < 0.1, [study] alpha" in loose
    # Cyclical ~ Monotonic: within +-2 dB by TOST, not within +-0.5 dB
    cyc, mono = [25.0, 25.6, 24.8], [25.3, 24.9, 25.5]
    assert ttost_ind(cyc, mono, -0.5, 0.5, usevar="unequal")[0] > 0.05 > ttost_ind(cyc, mono, -2, 2, usevar="unequal")[0]
    rows = {}
    for margin in (0.5, 2.0):
        study = write_scores_study(tmp_path, {"Cyclical": cyc, "Monotonic": mono}, f"margin-{int(margin * 10)}",
                                   keys={"margin_db": margin})
        summary = html.unescape(_summary(study))
        rows[margin] = {r[0]: r for r in _claims_rows(summary)}["Which KL annealing? (val/psnr)"]
        assert f"within +-{margin:g} dB (two one-sided tests, TOST; [study] margin_db)" in summary
    assert rows[0.5][3] == "undecided" and "nor equal within +-0.5 dB" in rows[0.5][2]
    assert "seeds per setting would settle it" in rows[0.5][2]
    assert rows[2.0][3] == "reproduced" and "equal within +-2 dB (TOST p = 0.0021)" in rows[2.0][2]


@pytest.mark.slow
def test_the_one_step_diagnostic(tmp_path: Path) -> None:
    study = write_scores_study(tmp_path, CLEAR, step=(0.1, 36.0))
    text = build_report(study).read_text()
    summary = html.unescape(text.split('<section id="summary">')[1].split("</section>")[0])
    item = summary.split('<li id="step">')[1].split("</li>")[0]
    assert ("(best run, epoch 5): from the true previous frame it predicts at val/psnr_step = 30.30 dB; copying that "
            "frame scores val/psnr_step_hold = 36.00 dB. Its rollout scores val/psnr = 30.20 dB against the floor "
            "19.00 dB. It paints from the pose alone") in item
    val = figure_chunks(text)["fig-val-psnr"]
    assert "kl_anneal_type=None: one step" in val and STEP_FLOOR in val and "Dotted: val/psnr_step" in val
    carry = html.unescape(_summary(write_scores_study(tmp_path, CLEAR, "carry", step=(5.5, 36.0))))
    assert "It carries the previous frame forward" in carry and "loses 5.5 dB of that by compounding" in carry
    # results made before the one-step metrics: the report still builds, without them
    old = figure_chunks(build_report(write_scores_study(tmp_path, CLEAR, "old")).read_text())["fig-val-psnr"]
    assert "one step" not in old and STEP_FLOOR not in old


@pytest.mark.slow
def test_gpu_seconds_beside_cpu_seconds(tmp_path: Path) -> None:
    study = write_scores_study(tmp_path, CLEAR, gpu=0.5)
    tables = analyze(study)
    t = tables.trials
    assert t["gpus"].to_list() == [0.5] * 6
    assert t["gpu_s"].to_list() == pytest.approx((t["wall_s"] * 0.5).to_list())
    text = build_report(study).read_text()
    cost = text.split('<li id="cost">')[1].split("</li>")[0]
    total = float(t["gpu_s"].sum())
    assert f"{total / 60:.1f} min of GPU time (GPU-seconds" in cost, cost
    trials = text.split('<section id="trials">')[1]
    assert "<th>GPU (s)</th>" in trials and f"<td>{t['gpu_s'][0]:.1f}</td>" in trials
    none = analyze(write_scores_study(tmp_path, CLEAR, "cpu")).trials
    assert none["gpus"].to_list() == [0.0] * 6 and none["gpu_s"].sum() == 0


@pytest.mark.slow
def test_fast_train_comparison(tmp_path: Path) -> None:
    text = build_report(write_fake_study(tmp_path, fast_train=True)).read_text()
    chunks = figure_chunks(text)
    assert "fig-fast-train" in chunks and "Validation PSNR per epoch by fast_train_epoch" in chunks["fig-fast-train"]
    assert "fast_train_epoch=0" in chunks["fig-fast-train"] and "fast_train_epoch=3" in chunks["fig-fast-train"]
    assert FLOOR_LABEL in chunks["fig-fast-train"] and 'id="note-fast-train"' not in text
    assert "fast_train_epoch: fast_train_epoch=3" in text  # its verdict
    assert_offline(text)


@pytest.mark.slow
def test_partial_and_empty_studies(tmp_path: Path) -> None:
    text = build_report(write_fake_study(tmp_path, partial=True)).read_text()
    assert "2 running" in text and parse(text).sections.keys() == dict(SECTIONS).keys()
    empty = tmp_path / "empty"
    empty.mkdir()
    text = build_report(empty).read_text()
    assert parse(text).sections.keys() == dict(SECTIONS).keys() and "No trials yet." in text
    assert_offline(text)


@pytest.mark.slow
def test_optuna_study_rebuilt_or_loaded(fake: Path) -> None:
    study, source = optuna_study(fake, analyze(fake))
    assert source.startswith("rebuilt")
    assert len(study.trials) == 3 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = study.best_trial
    assert best.params == {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 4}
    # the mean over seeds of the last val/psnr
    last = [22.0 + o + 0.3 * e - 0.02 * e * e for o, e in ((0.0, 5), (0.2, 5), (-0.15, 1))]
    assert best.value == pytest.approx(sum(last) / 3)
    # with the searcher's own optuna.db, that is used
    db = optuna.create_study(study_name="fake", storage=f"sqlite:///{fake / 'optuna.db'}", direction="maximize")
    db.add_trial(optuna.trial.create_trial(params={"kl_anneal_type": "None"}, value=1.0, distributions={
        "kl_anneal_type": optuna.distributions.CategoricalDistribution(["Cyclical", "None"])}))
    study, source = optuna_study(fake)
    assert source.startswith("optuna.db") and len(study.trials) == 1
    text = build_report(fake).read_text()
    assert "Source: optuna.db" in text
    assert "fig-importance" not in text.split('id="search"')[1].split("</section>")[0].replace('id="note-importance"', "")


@pytest.mark.slow
def test_importance_needs_two_completed(tmp_path: Path) -> None:
    d = write_fake_study(tmp_path)
    for t in d.iterdir():
        if t.name.startswith("train_cvae_") and "Cyclical" in t.name:
            shutil.rmtree(t)
    text = build_report(d).read_text()
    assert 'id="note-importance"' in text and "at least 2 completed" in text
    assert "fig-history" in figure_chunks(text)


@pytest.mark.slow
def test_cli(fake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(fake)]) == 0
    assert "report: " in capsys.readouterr().out and (fake / "report.html").is_file()
    assert main([str(fake), "--out", str(tmp_path / "r.html")]) == 0 and (tmp_path / "r.html").is_file()
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such results dir" in capsys.readouterr().err


@pytest.mark.parametrize("content", [[], ["notes.txt", "photos/cat.png"]], ids=["empty", "some-files"])
def test_cli_refuses_a_folder_that_is_no_study(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               content: list[str]) -> None:
    folder = tmp_path / "not-a-study"
    for name in content:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("mine")
    folder.mkdir(exist_ok=True)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} holds no study" in err and "study.toml" in err and "python -m study.run" in err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_frames_of_a_real_checkpoint(fake: Path) -> None:
    """The best run's checkpoint replaced by a real (tiny) one: strip and animation appear."""
    from cvae.config import Config
    from cvae.train import run

    cfg = Config.from_dict({"model": {"F_dim": 8, "L_dim": 4, "N_dim": 4, "D_out_dim": 8},
                            "data": {"video_len": 4, "val_video_len": 12, "synthetic_train_videos": 2,
                                     "synthetic_train_frames": 8},
                            "train": {"epochs": 1, "max_steps_per_epoch": 1, "threads": 1}})
    summary = run(cfg, None, fake / "_tiny")
    best = analyze(fake).trials.sort("best_val_psnr", descending=True)["checkpoint"][0]
    shutil.rmtree(fake / best)
    shutil.copytree(summary.checkpoint, fake / best)
    shutil.rmtree(fake / "_tiny")
    text = build_report(fake).read_text()
    frames = text.split('<section id="frames">')[1].split("</section>")[0]
    assert 'id="note-frames"' not in frames
    assert frames.count('src="data:image/png;base64,') == 2 * 6  # true and predicted at 6 time points
    assert 'id="rollout-animation"' in frames and 'src="data:image/gif;base64,' in frames
    assert list((fake / "tables").glob("rollout-*.json"))  # cached for the next rebuild
    assert build_report(fake).read_text().count('src="data:image/gif;base64,') == 1
    assert_offline(text)


@pytest.mark.ray
@pytest.mark.slow
def test_real_smoke_report(smoke_study: StudyRun, tmp_path: Path) -> None:
    # the runner wrote one at the end (and its ReportCallback after each trial)
    assert (smoke_study.exp / "report.html").is_file()
    out = build_report(smoke_study.exp, tmp_path / "report.html")
    text = out.read_text()
    page = parse(text)
    assert page.sections == {sid: title for sid, title in SECTIONS}
    chunks = figure_chunks(text)
    for fid in ("fig-setting-best", "fig-tfr", "fig-beta", "fig-loss", "fig-val-psnr", "fig-frame-psnr", "fig-history",
                "fig-parallel", "fig-slice"):
        assert fid in chunks, fid
    for fid in PSNR_FIGURES:
        if fid in chunks:
            assert FLOOR_LABEL in chunks[fid], fid
    assert "Source: optuna.db" in text
    frames = text.split('<section id="frames">')[1].split("</section>")[0]
    assert 'id="note-frames"' not in frames, frames[:500]
    assert 'id="frame-strip"' in frames and 'id="rollout-animation"' in frames
    assert_offline(text)
