"""The report's provenance table: one row per run of the study (its start and each resume) from
results/<study>/manifest.json (study.manifest): the code, packages, machine and data it ran on."""
from __future__ import annotations

from typing import Any

import polars as pl

from study.manifest import RunRecord, read_manifest
from study.place import MANIFEST
from study.report.common import Ctx, esc, html_table, note

_SHORT = 12  # hex digits of a commit or a hash


def _data(r: RunRecord) -> str:
    d = r.dataset
    gen = d.generator or {}
    kind = (f"embedded dancer, seed {gen.get('synthetic_seed')}, {gen.get('synthetic_train_videos')} videos x "
            f"{gen.get('synthetic_train_frames')} frames" if d.synthetic else "lab layout")
    return f"{d.root} ({kind}; {sum(d.frames.values())} PNGs; fingerprint {d.files_sha256[:_SHORT]})"


def _row(i: int, r: RunRecord) -> dict[str, str]:
    m = r.machine
    return {
        "run": f"{i}{' (resume)' if r.resumed else ''}",
        "started": r.started,
        "commit": r.code.shown(),
        "versions": ", ".join(f"{k} {v or 'n/a'}" for k, v in r.versions.items()),
        "machine": f"{m.hostname}: {m.cpu_model or 'CPU'} x {m.cpu_count}"
                   + (f", {', '.join(m.gpus)}" if m.gpus else ", no GPU"),
        "dataset": _data(r),
        "study file": f"sha256 {r.study_sha256[:_SHORT]}",
    }


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ", ".join(f"{x:.2f}" for x in v)
    return f"{100 * v:.1f}%" if unit == "%" else f"{v:.2f}" + (" dB" if unit == "dB" else "")


def data_section(runs: list[RunRecord]) -> str:
    """The study's data beside the lab's (issue 19's table), from the newest run's record."""
    rows = runs[-1].dataset.statistics if runs else []
    if not rows:
        return note("No statistics of this study's data were recorded (`python -m cvae.data stats ROOT` prints them).")
    d = runs[-1].dataset
    what = (f"the embedded data, {(d.generator or {}).get('synthetic_style', 'bold')} style" if d.synthetic
            else f"{d.root}")
    df = pl.DataFrame([{"statistic": r["label"], "this study's data": _fmt(r["value"], r["unit"]),
                        "the lab's data": _fmt(r["lab"], r["unit"]), "band": r["band"] if r["lab"] is not None else "",
                        "alike": {True: "yes", False: "no", None: ""}[r["in_band"]]} for r in rows])
    r0 = rows[0]
    return (f'<p>The data: {esc(what)}, validated on {r0["val_frames"]} frames at {esc(r0["frame_size"])}. '
            "Beside each statistic, the lab's dataset as measured at the same size and length, where known: "
            "evidence found on data unlike the lab's may not carry over.</p>"
            + html_table(df, "data statistics"))


def provenance_section(ctx: Ctx) -> str:
    """The manifest as one short table, or a note saying why there is none."""
    try:
        runs = read_manifest(ctx.study_dir)
    except ValueError as e:
        return note(f"The manifest cannot be read: {e}")
    if not runs:
        return note(f"No {MANIFEST}: this study was started before each run's code, packages, machine and data "
                    "were recorded.")
    table = data_section(runs) + html_table(pl.DataFrame([_row(i, r) for i, r in enumerate(runs, 1)]), "data manifest")
    return table + (f'<p class="small">From {MANIFEST} (one record per start and resume). The commit is the '
                    "code's git commit, with the sha256 of its uncommitted diff when the tree was dirty; the dataset "
                    "fingerprint hashes every frame file's name, size and mtime.</p>")


__all__ = ["provenance_section"]
