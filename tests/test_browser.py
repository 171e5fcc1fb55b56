"""The report in a real headless Chromium: every figure renders with its title, no console errors,
and no request leaves file:// (the report works offline).

Uses Debian's /usr/bin/chromium through Playwright for Python (no browser download), with a fresh
profile per test. Skipped when no Chromium executable is found.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from fake_results import write_fake_study

from study.report import SECTIONS, build_report
from study_helpers import StudyRun

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (persistent context) that records and blocks every non-file request."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium executable (looked for `chromium` on PATH and {CHROMIUM})")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900})
        browser = SimpleNamespace(context=context, blocked=[])

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(("file:", "data:", "blob:")):
                r.continue_()
            else:
                browser.blocked.append(url)
                r.abort()

        context.route("**/*", route)
        try:
            yield browser
        finally:
            context.close()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """Load the report, wait until every figure is drawn; return the page and its errors."""
    page = browser.context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    expected = len(re.findall(r'<figure class="plot"', path.read_text()))
    page.wait_for_function(
        "n => document.querySelectorAll('figure.plot .js-plotly-plot .main-svg .gtitle').length >= n",
        arg=expected, timeout=60_000)
    return page, errors


def rendered_titles(page: Any) -> list[tuple[str, str]]:
    """(expected title, rendered .gtitle text) of each figure."""
    return page.eval_on_selector_all(
        "figure.plot",
        "els => els.map(f => [f.dataset.title, (f.querySelector('.js-plotly-plot .gtitle') || {}).textContent || ''])")


def check_report(browser: Any, path: Path) -> Any:
    page, errors = open_report(browser, path)
    titles = rendered_titles(page)
    assert titles, "no figure in the report"
    for expected, shown in titles:
        assert shown == expected, f"figure {expected!r} rendered with title {shown!r}"
    for sid, title in SECTIONS:
        assert page.locator(f"section#{sid} h2").inner_text() == title
    assert page.evaluate("typeof Plotly") == "object"
    assert not errors, errors
    assert not browser.blocked, f"the report tried to reach the network: {browser.blocked}"
    return page


def test_fake_report_renders_offline(browser: Any, tmp_path: Path) -> None:
    path = build_report(write_fake_study(tmp_path))
    page = check_report(browser, path)
    titles = [t for t, _ in rendered_titles(page)]
    for title in ("Validation PSNR per epoch", "Training loss per epoch (log scale)", "Optimisation history of val/psnr",
                  "Parameter importance for val/psnr", "Per-frame PSNR over the validation video, best run of each setting"):
        assert title in titles
    assert page.locator("#note-frames").is_visible()
    # the floor is drawn in the PSNR figure's legend
    for fid in ("fig-val-psnr", "fig-frame-psnr", "fig-setting-best", "fig-history"):
        legend = page.eval_on_selector_all(f"#{fid} .legendtext", "els => els.map(e => e.textContent)")
        assert "repeat frame 0 (floor)" in legend, (fid, legend)


def test_fast_train_report_renders_offline(browser: Any, tmp_path: Path) -> None:
    page = check_report(browser, build_report(write_fake_study(tmp_path, fast_train=True)))
    assert "Validation PSNR per epoch by fast_train_epoch" in [t for t, _ in rendered_titles(page)]


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_report_renders_offline(browser: Any, smoke_study: StudyRun, tmp_path: Path) -> None:
    page = check_report(browser, build_report(smoke_study.exp, tmp_path / "report.html"))
    page.locator("#rollout-animation").scroll_into_view_if_needed()
    sizes = page.eval_on_selector_all("#frames img", "els => els.map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 13 and all(done and width > 0 for done, width in sizes), sizes  # 12 strip frames + the animation


def test_the_network_guard_catches_requests(browser: Any, tmp_path: Path) -> None:
    """The offline checks above mean something: a page that fetches from the network is caught."""
    page = tmp_path / "online.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png"><script src="https://cdn.example.invalid/p.js">'
                    "</script></body></html>")
    browser.context.new_page().goto(page.as_uri(), wait_until="load")
    assert sorted(browser.blocked) == ["http://example.invalid/x.png", "https://cdn.example.invalid/p.js"]
