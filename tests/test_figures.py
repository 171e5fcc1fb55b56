"""study.report --figures: the lab's figures as PNG and SVG files, from results on disk (hand-made
results, no Ray); and when the exporter is missing, one line says what to install and the HTML report
is still written."""
from __future__ import annotations

import importlib.metadata
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fake_results import write_fake_study, write_race_study
from scipy import stats

from study.race import RaceRule, race_arms, standings
from study.tables import analyze
from study.report import export, main
from study.report.common import FLOOR_LABEL, context
from study.report.export import FORMATS, PNG_SCALE, WIDTH, ExportError, lab_figures, write_figures
from study.report.figures import LAB_FIGURES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = [name for name, _, _ in LAB_FIGURES]
RACE = "seed_race"  # drawn for a seed race only


def needs_export() -> None:
    if export.exporter_problem():
        pytest.skip(export.exporter_problem())


def needs_chromium() -> None:
    needs_export()
    if export.chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium)")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path}: not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.browser
def test_figures_are_written_as_png_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_chromium()
    study = write_fake_study(tmp_path, fast_train=True)  # fast_train varies: every lab figure but the race's has data
    out = tmp_path / "figs"
    assert main([str(study), "--figures", str(out)]) == 0
    assert (study / "report.html").is_file()
    drawn = [n for n in NAMES if n != RACE]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{fmt}" for n in drawn for fmt in FORMATS)
    for name in drawn:
        png = out / f"{name}.png"
        assert png.stat().st_size > 20_000, png  # a drawn figure, not an empty canvas
        width, height = png_size(png)
        assert width == WIDTH * PNG_SCALE and height > 0
        root = ET.parse(out / f"{name}.svg").getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    printed = capsys.readouterr().out
    assert f"figures: {len(drawn) * len(FORMATS)} files in {out}" in printed and "tfr_loss.{png,svg}" in printed


@pytest.mark.slow
def test_figures_without_data_say_why(tmp_path: Path) -> None:
    study = write_fake_study(tmp_path)  # fast_train_epoch is 0 everywhere
    figures, skipped = lab_figures(context(study, analyze(study)))
    assert list(figures) == [n for n in NAMES if n not in ("fast_train", RACE)]
    assert set(skipped) == {"fast_train", RACE} and "fast_train_epoch is 0 in every trial" in skipped["fast_train"]
    assert "fixed list" in skipped[RACE] and "no seed race" in skipped[RACE]


@pytest.mark.slow
def test_the_race_figure_draws_each_configurations_mean_with_its_t_interval(tmp_path: Path) -> None:
    per_seed = {"None": [30.0, 30.2, 29.9, 30.1], "Monotonic": [25.1, 25.3, 24.9, 25.0], "Cyclical": [29.0, 30.5, 29.5, 31.0]}
    study = write_race_study(tmp_path, per_seed)  # seeds 2 to 4
    tables = analyze(study)
    figures, skipped = lab_figures(context(study, tables))
    assert RACE in figures and RACE not in skipped
    arms = race_arms(tables.trials.select("setting", "seed", "objective").iter_rows())
    state = {st.setting: st.state for st in standings(arms, RaceRule(2, 4))}
    traces = [tr for tr in figures[RACE].fig.data if tr.name != FLOOR_LABEL]
    assert sorted(tr.name for tr in traces) == sorted(f"{s}: {st}" for s, st in state.items())  # one per configuration
    for tr in traces:
        xs = [arms[tr.name.rsplit(": ", 1)[0]][seed] for seed in sorted(arms[tr.name.rsplit(": ", 1)[0]])]
        assert list(tr.customdata) == list(range(1, len(xs) + 1))
        means = [float(np.mean(xs[:k])) for k in range(1, len(xs) + 1)]
        assert list(tr.y) == pytest.approx(means)
        assert tr.error_y.array[0] is None and tr.error_y.arrayminus[0] is None  # one seed: no interval
        for k in range(2, len(xs) + 1):
            low, high = stats.t.interval(0.95, k - 1, loc=means[k - 1], scale=stats.sem(xs[:k]))
            assert tr.error_y.array[k - 1] == pytest.approx(high - means[k - 1])
            assert tr.error_y.arrayminus[k - 1] == pytest.approx(means[k - 1] - low)


@pytest.mark.slow
def test_missing_exporter_costs_one_line_and_the_report_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "kaleido":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(export.importlib.metadata, "version", version)
    study = write_fake_study(tmp_path)
    out = tmp_path / "figs"
    assert main([str(study), "--figures", str(out)]) == 1
    assert (study / "report.html").is_file() and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'kaleido>=1.0'" in err[0], err


@pytest.mark.slow
def test_a_browser_that_fails_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_export()
    from choreographer.browsers.chromium import Chromium

    fake = str(tmp_path / "no-such-chromium")
    monkeypatch.setenv("BROWSER_PATH", fake)
    if Chromium.find_browser(skip_local=False) != fake:
        pytest.skip("a Chrome that kaleido_get_chrome downloaded comes before BROWSER_PATH")
    study = write_fake_study(tmp_path)
    out = tmp_path / "figs"
    with pytest.raises(ExportError, match="no-such-chromium"):
        write_figures(context(study, analyze(study)), out)
    assert list(out.iterdir()) == []
