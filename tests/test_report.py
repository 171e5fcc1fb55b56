"""study.report: the HTML report has every section and figure, the floor everywhere, and needs no network."""
from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import optuna
import polars as pl
import pytest
from fake_results import write_fake_study
from smoke_study import smoke_results  # noqa: F401 - the session fixture

from study.analyze import StudyInfo, Tables, analyze, ranking
from study.spec import Param
from study.report import FLOOR, SECTIONS, build_report, comparisons, main, optuna_study

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


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return write_fake_study(tmp_path)


def test_sections_figures_and_notes(fake: Path) -> None:
    path = build_report(fake)
    assert path == fake / "report.html"
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


def test_axis_titles_and_log_loss(fake: Path) -> None:
    chunks = figure_chunks(build_report(fake).read_text())
    assert '"type":"log"' in chunks["fig-loss"]
    for fid in ("fig-tfr", "fig-beta", "fig-loss", "fig-val-psnr"):
        assert '"xaxis":{"title":{"text":"epoch"}' in chunks[fid] or '"title":{"text":"epoch"}' in chunks[fid], fid
    assert "val/psnr (dB)" in chunks["fig-val-psnr"] and "PSNR (dB)" in chunks["fig-frame-psnr"]
    # the legend names the setting
    assert "kl_anneal_type=Cyclical, kl_anneal_cycle=4 (n=3)" in chunks["fig-val-psnr"]


def test_the_floor_is_everywhere(fake: Path) -> None:
    text = build_report(fake).read_text()
    for fid, chunk in figure_chunks(text).items():
        if fid in PSNR_FIGURES:
            assert FLOOR in chunk and '"dash":"dash"' in chunk, fid
    assert 'id="floor"' in text and "val/psnr_hold = 19.00 dB" in text


def test_summary(fake: Path) -> None:
    text = build_report(fake).read_text()
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert '<pre class="study-file">' in summary and "[space.kl_anneal_cycle]" in summary
    assert "9 (6 completed, 1 stopped early, 1 diverged, 1 errored, 0 running)" in summary
    assert "Best configuration</b>: kl_anneal_type=Cyclical, kl_anneal_cycle=4" in summary
    assert ("kl_anneal_type: kl_anneal_type=Cyclical (kl_anneal_cycle=4) wins with 22.78 ± 0.57 dB (n=3) over "
            "kl_anneal_type=None 21.66 ± 0.14 dB (n=3); the gap (1.12 dB) exceeds the seed-to-seed spread") in summary
    assert ("kl_anneal_cycle: kl_anneal_cycle=4 (kl_anneal_type=Cyclical) wins with 22.78 ± 0.57 dB (n=3) over "
            "kl_anneal_cycle=2 (kl_anneal_type=Cyclical) 22.36 ± 0.43 dB (n=3); the gap (0.42 dB) is within") in summary
    assert "22.78 ± 0.57 dB" in summary.split('<table class="data summary">')[1]
    assert "11.2 min of trial wall time" in summary and "10.1 min of CPU time" in summary


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
    out = comparisons(_ranked(trials), ["a"])
    assert out[0].startswith("Overall: a=3 wins with 25.00 dB (n=1) over the runner-up a=2 21.10 ± 0.14 dB (n=2)")
    assert "cannot be judged against the seed-to-seed spread (a single seed)" in out[0]
    out = comparisons(_ranked(trials.filter(pl.col("a") < 3)), ["a"])
    assert "the gap (1.00 dB) exceeds the seed-to-seed spread (sd 0.14 + 0.14 dB)" in out[0]
    assert comparisons(_ranked(trials.head(0)), ["a"]) == []


def test_fast_train_comparison(tmp_path: Path) -> None:
    text = build_report(write_fake_study(tmp_path, fast_train=True)).read_text()
    chunks = figure_chunks(text)
    assert "fig-fast-train" in chunks and "Validation PSNR per epoch by fast_train_epoch" in chunks["fig-fast-train"]
    assert "fast_train_epoch=0" in chunks["fig-fast-train"] and "fast_train_epoch=3" in chunks["fig-fast-train"]
    assert FLOOR in chunks["fig-fast-train"] and 'id="note-fast-train"' not in text
    assert "fast_train_epoch: fast_train_epoch=3" in text  # its verdict
    assert_offline(text)


def test_partial_and_empty_studies(tmp_path: Path) -> None:
    text = build_report(write_fake_study(tmp_path, partial=True)).read_text()
    assert "2 running" in text and parse(text).sections.keys() == dict(SECTIONS).keys()
    empty = tmp_path / "empty"
    empty.mkdir()
    text = build_report(empty).read_text()
    assert parse(text).sections.keys() == dict(SECTIONS).keys() and "No trials yet." in text
    assert_offline(text)


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
    assert "Source: optuna.db" in build_report(fake).read_text()
    assert "fig-importance" not in build_report(fake).read_text().split('id="search"')[1].split("</section>")[0] \
        .replace('id="note-importance"', "")


def test_importance_needs_two_completed(tmp_path: Path) -> None:
    d = write_fake_study(tmp_path)
    for t in d.iterdir():
        if t.name.startswith("train_cvae_") and "Cyclical" in t.name:
            shutil.rmtree(t)
    text = build_report(d).read_text()
    assert 'id="note-importance"' in text and "at least 2 completed" in text
    assert "fig-history" in figure_chunks(text)


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
def test_real_smoke_report(smoke_results: Path, tmp_path: Path) -> None:  # noqa: F811
    # the runner wrote one at the end (and its ReportCallback after each trial)
    assert (smoke_results / "report.html").is_file()
    out = build_report(smoke_results, tmp_path / "report.html")
    text = out.read_text()
    page = parse(text)
    assert page.sections == {sid: title for sid, title in SECTIONS}
    chunks = figure_chunks(text)
    for fid in ("fig-setting-best", "fig-tfr", "fig-beta", "fig-loss", "fig-val-psnr", "fig-frame-psnr", "fig-history",
                "fig-parallel", "fig-slice"):
        assert fid in chunks, fid
    for fid in PSNR_FIGURES:
        if fid in chunks:
            assert FLOOR in chunks[fid], fid
    assert "Source: optuna.db" in text
    frames = text.split('<section id="frames">')[1].split("</section>")[0]
    assert 'id="note-frames"' not in frames, frames[:500]
    assert 'id="frame-strip"' in frames and 'id="rollout-animation"' in frames
    assert_offline(text)
