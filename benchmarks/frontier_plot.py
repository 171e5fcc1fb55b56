"""Draw learning_budget.py's frontier: dB over the floor against CPU-minutes, one curve per file.

    python benchmarks/frontier_plot.py --out docs/lablike_frontier.svg \\
        "tfr 1=runs/e10_tfr1.jsonl,runs/e20_tfr1.jsonl" "tfr 0=runs/e10_tfr0.jsonl,runs/e20_tfr0.jsonl"

Each argument is LABEL=FILE[,FILE...]: the JSON lines `learning_budget.py --epochs ... --seeds ...`
printed. A curve's points are the ends of its runs (epoch == budget), as the budgets' seed means
(the lines with gain_db_mean), or the single seed's points where a file has no mean lines; the error
bars are the sd over the seeds. The floor
(repeating frame 0) is the zero line. Written through plotly's image export (kaleido and a Chromium,
as `python -m study.report --figures`); the format follows --out's suffix (.svg, .png, .html).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ends(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # a run's end points only (epoch == its budget): a point inside a longer run has that run's schedule;
    # lines from before "budget" was printed: the file's last epoch
    if all("budget" in x for x in lines):
        return [x for x in lines if x["epoch"] == x["budget"]]
    last = max((x["epoch"] for x in lines), default=None)
    return [x for x in lines if x["epoch"] == last]


def points(files: list[Path]) -> list[dict[str, Any]]:
    """(epoch, cpu_min, gain, sd) per budget, from the files' mean lines (or single-seed lines), at
    each run's end."""
    out: list[dict[str, Any]] = []
    for f in files:
        lines = _ends([json.loads(x) for x in f.read_text().splitlines() if x.startswith("{")])
        means = [x for x in lines if "gain_db_mean" in x]
        if means:
            out += [{"epoch": m["epoch"], "cpu_min": m["cpu_s"] / 60, "gain": m["gain_db_mean"], "sd": m["gain_db_sd"] or 0.0}
                    for m in means]
        else:
            out += [{"epoch": p["epoch"], "cpu_min": p["cpu_s"] / 60, "gain": p["gain_db"], "sd": 0.0}
                    for p in lines if "gain_db" in p]
    return sorted(out, key=lambda p: p["cpu_min"])


def figure(curves: dict[str, list[dict[str, Any]]], title: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, pts in curves.items():
        fig.add_trace(go.Scatter(
            x=[p["cpu_min"] for p in pts], y=[p["gain"] for p in pts], name=label, mode="lines+markers",
            error_y={"type": "data", "array": [p["sd"] for p in pts], "visible": True},
            text=[f"{p['epoch']} epochs" for p in pts], hovertemplate="%{text}: %{y:+.2f} dB at %{x:.1f} CPU-min"))
    fig.add_hline(y=0, line_dash="dot", annotation_text="floor: repeat frame 0")
    fig.update_layout(title=title, xaxis_title="CPU-minutes per run (1 thread)", yaxis_title="val/psnr - val/psnr_hold (dB)",
                      template="plotly_white", width=900, height=500)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("curves", nargs="+", help="LABEL=FILE[,FILE...] of learning_budget.py JSON lines")
    p.add_argument("--out", type=Path, required=True, help="the figure file (.svg, .png or .html)")
    p.add_argument("--title", default="dB over the floor per CPU budget")
    args = p.parse_args(argv)
    curves: dict[str, list[dict[str, Any]]] = {}
    for spec in args.curves:
        label, sep, files = spec.partition("=")
        if not sep or not files:
            print(f"error: {spec!r}: expected LABEL=FILE[,FILE...]", file=sys.stderr)
            return 2
        try:
            curves[label] = points([Path(f) for f in files.split(",")])
        except (OSError, json.JSONDecodeError, KeyError) as e:
            print(f"error: {spec}: {e}", file=sys.stderr)
            return 2
    fig = figure(curves, args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".html":
        fig.write_html(args.out, include_plotlyjs="cdn")
    else:
        from study.report.export import browser_path, chromium

        with browser_path(chromium()):  # kaleido's Chromium, as `python -m study.report --figures` finds it
            fig.write_image(args.out)
    print(json.dumps({"benchmark": "frontier_plot", "out": str(args.out),
                      "curves": {k: [(p["epoch"], round(p["cpu_min"], 2), p["gain"]) for p in v] for k, v in curves.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
