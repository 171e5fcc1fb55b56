"""Reading a study's results folder: its trial folders and each one's files, as Ray Tune writes them.

    <study>/<trial>/params.json             the sampled config (+ "seed")
    <study>/<trial>/result.json             one JSON object per epoch (metrics + Ray's keys)
    <study>/<trial>/error.txt               when the trial failed
    <study>/<trial>/checkpoint_NNNNNN/      config.json (full cvae Config), psnr_per_frame.json
    <study>/experiment_state-*.json         Ray's trial statuses (read through study._compat)

study.tables builds the tables from these; study.progress reads them for `cvae-study status`.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from cvae.checkpoint import MANIFEST_FILE
from study._compat import EXPERIMENT_STATE_GLOB
from study.keys import SEED
from study.place import FINISHED, STUDY_COPY, TABLES_DIR, TRIAL_ERROR, TRIAL_PARAMS, TRIAL_RESULTS
from study.spec import FIELD_SECTION

log = logging.getLogger(__name__)


CHECKPOINT_KEY = "checkpoint_dir_name"  # Tune's result key naming the checkpoint reported with it


# Ray writes NaN/Infinity as bare tokens (Python's json), which is not JSON and which Polars refuses.
_NONFINITE = re.compile(rb"(?<=[:,\[])(\s*)(?:-?Infinity|NaN)(?=\s*[,\]}])")


def trial_dirs(study_dir: str | Path) -> list[Path]:
    """The trial dirs of a study (those holding params.json or result.json), in name order."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        return []
    return sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith((".", TABLES_DIR))
                  and ((p / TRIAL_PARAMS).is_file() or (p / TRIAL_RESULTS).is_file()))


def checkpoints(trial_dir: Path, results: pl.DataFrame) -> list[Path]:
    """The trial's complete checkpoints that Tune still keeps (manifest written last), oldest first,
    as its result rows name them."""
    if CHECKPOINT_KEY not in results.columns:
        return []
    names = results[CHECKPOINT_KEY].drop_nulls().unique(maintain_order=True).to_list()
    return [trial_dir / n for n in names if (trial_dir / n / MANIFEST_FILE).is_file()]


def read_json(path: Path) -> Any:
    """A JSON file's value, None (with a warning) when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); ignored", path, e)
        return None


def _first_row_config(path: Path) -> Any:
    """The "config" of a result.json's first row (Tune writes the trial's config into every row)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with path.open("rb") as f:
            return json.loads(next(ln for ln in f if ln.strip())).get("config")
    return None


def trial_params(trial_dir: Path) -> dict[str, Any]:
    """The trial's sampled values (params.json): scalar config fields and the seed only. A params.json
    cut short (Tune's driver rewrites it in place, and may be killed meanwhile) is read from the
    config Tune also writes into each result row."""
    raw = read_json(trial_dir / TRIAL_PARAMS) if (trial_dir / TRIAL_PARAMS).is_file() else None
    if not isinstance(raw, dict):
        raw = _first_row_config(trial_dir / TRIAL_RESULTS)
    if not isinstance(raw, dict):
        return {}
    # Only scalar config fields and the seed: the runner may add constants or Ray its own keys.
    return {k: v for k, v in raw.items()
            if (k == SEED or k in FIELD_SECTION) and isinstance(v, (str, int, float, bool))}


def read_results(path: Path) -> pl.DataFrame:
    """One result.json as a DataFrame (NaN/inf -> null, a half-written last line dropped)."""
    data = path.read_bytes() if path.is_file() else b""
    lines = [ln for ln in _NONFINITE.sub(rb"\1null", data).splitlines() if ln.strip()]
    error: Exception | None = None
    # A running trial's last line may be half written: on failure, retry once without it.
    for keep in (lines, lines[:-1]):
        if not keep:
            break
        try:
            df = pl.read_ndjson(io.BytesIO(b"\n".join(keep)), infer_schema_length=None)
            return df.drop([c for c in df.columns if c == "config"])
        except Exception as e:  # noqa: BLE001 - Polars raises several kinds for bad JSON
            error = e
    if lines:
        log.warning("%s: unreadable (%s); ignored", path, error)
    return pl.DataFrame()


def trial_start(results: pl.DataFrame) -> float | None:
    """When the trial started (epoch seconds), from Tune's auto-filled timestamp and time_total_s."""
    if not {"timestamp", "time_total_s"} <= set(results.columns) or not results.height:
        return None
    start = results.select((pl.col("timestamp") - pl.col("time_total_s")).min()).item()
    return None if start is None else float(start)


def last_line(text: str) -> str:
    """An error text's last non-empty line: its message (a traceback ends with it)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else text[:500]


FRAME_SCHEMA = {"trial_id": pl.String(), "frame": pl.Int64(), "psnr_final": pl.Float64(),
                 "psnr_best": pl.Float64(), "psnr_hold": pl.Float64(), "epoch": pl.Int64(), "best_epoch": pl.Int64()}


def frame_rows(path: Path, trial_id: str) -> pl.DataFrame:
    """One checkpoint's psnr_per_frame.json as rows of the frames table."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("psnr"), list):
        return pl.DataFrame(schema=FRAME_SCHEMA)
    n = len(raw["psnr"])

    def col(key: str) -> list[float | None]:
        v = raw.get(key)
        v = list(v) if isinstance(v, list) else []
        return [None if x is None or not math.isfinite(x) else float(x) for x in (v + [None] * n)[:n]]

    return pl.DataFrame({
        "trial_id": [trial_id] * n, "frame": list(range(1, n + 1)), "psnr_final": col("psnr"),
        "psnr_best": col("best_psnr"), "psnr_hold": col("psnr_hold"),
        "epoch": [raw.get("epoch")] * n, "best_epoch": [raw.get("best_epoch")] * n,
    }, schema=FRAME_SCHEMA)


def sources(study_dir: Path) -> Iterable[Path]:
    """Every file and folder the tables are built from (study.tables.load_tables compares their mtimes)."""
    yield from (study_dir / n for n in (STUDY_COPY, FINISHED))
    yield from study_dir.glob(EXPERIMENT_STATE_GLOB)
    for d in trial_dirs(study_dir):
        yield d
        yield from (d / n for n in (TRIAL_PARAMS, TRIAL_RESULTS, TRIAL_ERROR))
        yield from (p for p in d.iterdir() if p.is_dir())  # its checkpoints


__all__ = ["CHECKPOINT_KEY", "FRAME_SCHEMA", "checkpoints", "frame_rows", "last_line", "read_json", "read_results",
           "sources", "trial_dirs", "trial_params", "trial_start"]
