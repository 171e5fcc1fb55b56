"""study.report --figures: the lab's figures as PNG and SVG files, from results on disk (hand-made
results, no Ray); and when the exporter is missing, one line says what to install and the HTML report
is still written."""
from __future__ import annotations

import importlib.metadata
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fake_results import write_fake_study

from study.tables import analyze
from study.report import export, main
from study.report.common import context
from study.report.export import FORMATS, PNG_SCALE, WIDTH, ExportError, lab_figures, write_figures
from study.report.figures import LAB_FIGURES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = [name for name, _, _ in LAB_FIGURES]


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
    study = write_fake_study(tmp_path, fast_train=True)  # fast_train varies: every lab figure has data
    out = tmp_path / "figs"
    assert main([str(study), "--figures", str(out)]) == 0
    assert (study / "report.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{fmt}" for n in NAMES for fmt in FORMATS)
    for name in NAMES:
        png = out / f"{name}.png"
        assert png.stat().st_size > 20_000, png  # a drawn figure, not an empty canvas
        width, height = png_size(png)
        assert width == WIDTH * PNG_SCALE and height > 0
        root = ET.parse(out / f"{name}.svg").getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    printed = capsys.readouterr().out
    assert f"figures: {len(NAMES) * len(FORMATS)} files in {out}" in printed and "tfr_loss.{png,svg}" in printed


def test_figures_without_data_say_why(tmp_path: Path) -> None:
    study = write_fake_study(tmp_path)  # fast_train_epoch is 0 everywhere
    figures, skipped = lab_figures(context(study, analyze(study)))
    assert list(figures) == [n for n in NAMES if n != "fast_train"]
    assert set(skipped) == {"fast_train"} and "fast_train_epoch is 0 in every trial" in skipped["fast_train"]


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
