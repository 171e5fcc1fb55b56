"""The report page: its sections in order, the table of every trial, the CSS, and
`build_report`, which analyzes the results on disk and writes the self-contained HTML file."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import polars as pl
from plotly.offline import get_plotlyjs

from cvae.files import atomic_write_text
from study.tables import Tables, analyze
from study.place import REPORT
from study.report.common import Ctx, context, esc, guard, html_table, note
from study.report.figures import figures_section
from study.report.frames import frames_section
from study.report.search import search_section
from study.report.summary import summary_section

log = logging.getLogger(__name__)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("comparisons", "The lab's questions"),
    ("search", "The search"),
    ("frames", "Predicted vs true frames of the best run"),
    ("trials", "Every trial"),
)


def trials_section(ctx: Ctx) -> str:
    t = ctx.trials
    if not t.height:
        return note("No trials yet.")
    df = t.select(
        pl.col("trial_number").alias("#"), "trial_id", "setting", "seed", "status",
        pl.format("{}/{}", "epochs_run", "epochs").alias("epochs"),
        pl.col("objective").round(4).alias(f"score ({ctx.info.metric} at its {ctx.info.objective} epoch)"),
        pl.col("objective_epoch").alias("score epoch"),
        pl.col("best_val_psnr").round(2).alias("best val/psnr (dB)"), pl.col("best_val_psnr_epoch").alias("its epoch"),
        pl.col("last_val_psnr").round(2).alias("last val/psnr (dB)"),
        pl.col("val_psnr_hold").round(2).alias("floor (dB)"),
        pl.col("wall_s").round(0).alias("wall (s)"), pl.col("cpu_s").round(0).alias("CPU (s)"),
        # GPU-seconds (wall x the GPU fraction Ray reserved); tables built before the column: none
        (pl.col("gpu_s").round(0) if "gpu_s" in t.columns else pl.lit(0.0)).alias("GPU (s)"),
        pl.col("train_frames_per_s").round(1).alias("train frames/s"),
        pl.coalesce("hostname", "node_ip").alias("node"), pl.col("error").alias("error"),
    )
    return html_table(df, "data trials") + ("<p class=\"small\">Status: completed (all epochs), stopped_early (ended by the "
                                        "scheduler), diverged (NaN/inf loss), errored (crashed, retries used up), running "
                                        "(or interrupted before Ray saved its end).</p>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:0 1.5rem 4rem}
header{background:#1f2937;color:#fff;padding:1rem 1.5rem}
header h1{margin:0;font-size:1.5rem} header p{margin:.3rem 0 0;color:#cbd5e1}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.5rem 1.5rem;z-index:10}
nav a{margin-right:1.2rem;color:#1d4ed8;text-decoration:none}
section{background:#fff;margin:1.5rem 0;padding:1rem 1.5rem;border:1px solid #e5e7eb;border-radius:6px}
h2{margin-top:.3rem} figure{margin:1.5rem 0} figcaption,.small{color:#555;font-size:.9rem}
.note{background:#fff8e1;border-left:4px solid #f59e0b;padding:.5rem .8rem}
table.data{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;display:block;overflow-x:auto}
table.data th,table.data td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;white-space:nowrap}
table.data th{background:#f3f4f6}
table.strip{width:100%;table-layout:fixed} table.strip img{width:100%}
table.strip td,table.strip th{padding:.2rem;text-align:center;font-weight:normal}
table.strip tbody th{width:6rem}
img{image-rendering:pixelated}
pre.study-file{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.85rem}
ul.verdicts li{margin:.3rem 0}
p.lead{font-size:1.1rem;font-weight:600;background:#eef2ff;border-left:4px solid #4338ca;padding:.6rem .9rem}
table.claims td{white-space:normal;min-width:9rem;vertical-align:top}
"""


def render(study_dir: str | Path, tables: Tables) -> str:
    """The report's HTML text for a study dir and its tables."""
    study_dir = Path(study_dir)
    ctx = context(study_dir, tables)
    bodies = {
        "summary": lambda: summary_section(ctx),
        "comparisons": lambda: figures_section(ctx),
        "search": lambda: search_section(ctx),
        "frames": lambda: frames_section(ctx),
        "trials": lambda: trials_section(ctx),
    }
    sections = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{guard(bodies[sid])}</section>'
                       for sid, title in SECTIONS)
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    title = f"Study {ctx.info.name}: report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{_CSS}</style>"
        # plotly.js, once, inline: the file works offline and every figure below reuses it
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f"<script type=\"text/javascript\" id=\"plotly-js\">{get_plotlyjs()}</script>"
        f"</head><body><header><h1>{esc(title)}</h1><p>{esc(study_dir.resolve())} · built {esc(stamp)} from the results on "
        f"disk (rebuild: python -m study.report {esc(study_dir)})</p></header><nav>{nav}</nav><main>{sections}</main>"
        "</body></html>\n"
    )


def build_report(study_dir: str | Path, out: str | Path | None = None, tables: Tables | None = None) -> Path:
    """Analyze the study dir (unless given its tables) and write its report (default
    `<study_dir>/report.html`); return the path."""
    study_dir = Path(study_dir)
    start = time.perf_counter()
    tables = analyze(study_dir) if tables is None else tables
    text = render(study_dir, tables)
    path = Path(out) if out is not None else study_dir / REPORT
    atomic_write_text(path, text)  # a browser reloading mid-build never sees half a page
    log.info("report %s: %.1f MB in %.1f s", path, path.stat().st_size / 1e6, time.perf_counter() - start)
    return path
