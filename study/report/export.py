"""The lab's figures as image files for a write-up: `python -m study.report results/kl --figures DIR`
writes each of study.report.figures.LAB_FIGURES as DIR/<name>.png and DIR/<name>.svg.

Drawn by plotly's own export (plotly.io.write_images), i.e. kaleido >= 1, which renders in a headless
Chrome/Chromium that it drives through choreographer (no sandbox unless asked, which also works as root).
The browser is $BROWSER_PATH when set (choreographer's own override), else Debian's chromium
(`apt-get install chromium`, the one the browser test uses); a Chrome that `kaleido_get_chrome`
downloaded comes before both (choreographer's order). The figures are the report's, from the same
tables on disk (docs/ARCHITECTURE.md, contract 5).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from study.report.common import Ctx, Figure
from study.report.figures import LAB_FIGURES

FORMATS = ("png", "svg")
WIDTH = 1000  # px of layout; the page's figures are as wide as its column
PNG_SCALE = 2  # PNG pixels per layout pixel: sharp when printed
INSTALL = "pip install 'kaleido>=1.0' (plotly's image export) and a Chromium: apt-get install chromium"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


class ExportError(RuntimeError):
    """The figures cannot be written here: the message says why and what to install."""


@dataclass(frozen=True)
class Export:
    written: list[Path]  # every file, in LAB_FIGURES order, PNG then SVG
    skipped: dict[str, str]  # figure name -> why it was not drawn
    browser: str | None  # the browser kaleido was pointed at (None: kaleido's own search)
    seconds: float


def exporter_problem() -> str | None:
    """Why plotly cannot export images here (kaleido missing or older than 1), or None."""
    try:
        version = importlib.metadata.version("kaleido")
    except importlib.metadata.PackageNotFoundError:
        return f"the image exporter kaleido is not installed: {INSTALL}"
    if int(version.split(".")[0]) < 1:
        return f"kaleido {version} is too old (plotly's export needs kaleido >= 1): {INSTALL}"
    return None


def chromium() -> str | None:
    """The browser to hand kaleido: $BROWSER_PATH, else Debian's chromium on PATH or in /usr/bin, else None."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file() else None


@contextlib.contextmanager
def browser_path(path: str | None) -> Iterator[None]:
    # plotly's write_images takes no browser argument; choreographer reads BROWSER_PATH when it
    # searches for one, so it is set for the export only and the caller's environment is left as it was.
    old = os.environ.get("BROWSER_PATH")
    if path is not None:
        os.environ["BROWSER_PATH"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old


def lab_figures(ctx: Ctx) -> tuple[dict[str, Figure], dict[str, str]]:
    """The figures to write (name -> Figure) and those not drawn (name -> why)."""
    figures: dict[str, Figure] = {}
    skipped: dict[str, str] = {}
    for name, what, build in LAB_FIGURES:
        try:
            item = build(ctx)
        except Exception as e:  # noqa: BLE001 - one figure's failure costs that figure, as on the page
            skipped[name] = f"could not be drawn: {type(e).__name__}: {e}"
            continue
        if isinstance(item, Figure):
            figures[name] = item
        else:
            skipped[name] = item or f"no {what} data yet"
    return figures, skipped


def write_figures(ctx: Ctx, out_dir: str | Path) -> Export:
    """Write the lab's figures of a study (its report context) as PNG and SVG into out_dir.

    ExportError when the exporter is missing or the browser fails (nothing half-written is kept)."""
    problem = exporter_problem()
    if problem:
        raise ExportError(problem)
    import plotly.io as pio

    start = time.perf_counter()
    figures, skipped = lab_figures(ctx)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(fig.styled(), out / f"{name}.{fmt}", fmt) for name, fig in figures.items() for fmt in FORMATS]
    browser = chromium()
    if jobs:
        try:
            with browser_path(browser):
                # one browser for every image: kaleido's start-up costs about a second, each image far less
                pio.write_images([f for f, _, _ in jobs], [p for _, p, _ in jobs], format=[m for _, _, m in jobs],
                                 width=WIDTH, height=[int(f.layout.height) for f, _, _ in jobs],
                                 scale=[PNG_SCALE if m == "png" else 1 for _, _, m in jobs])
        except Exception as e:  # noqa: BLE001 - kaleido's and choreographer's errors have no common base
            for _, path, _ in jobs:
                path.unlink(missing_ok=True)
            where = f" (browser: {browser})" if browser else " (no Chromium found: apt-get install chromium)"
            raise ExportError(f"plotly's image export failed{where}: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]}") from e
    return Export([p for _, p, _ in jobs], skipped, browser, time.perf_counter() - start)


__all__ = ["Export", "ExportError", "FORMATS", "chromium", "exporter_problem", "lab_figures", "write_figures"]
