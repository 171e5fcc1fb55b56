"""What a finished study bought: each setting's margin over the floor, per CPU- and GPU-minute.

    python benchmarks/study_margin.py results/lablike-tfr [results/kl ...]

Prints one JSON line per study: the data it was measured on (style or root, frame size, validation
frames), its trials, the CPU-seconds and GPU-seconds its trials spent (GPU-seconds: each trial's wall
time x the GPU share Ray reserved for it), and per setting, best margin first, the mean and sd of
val/psnr at each trial's scored epoch, the floor (val/psnr_hold: repeating frame 0) and the margin
over it (study.evidence.learning, the report's first sentence). `db_per_cpu_min` and
`db_per_gpu_min` divide the best setting's margin by the study's total CPU- and GPU-minutes (null
without GPUs): what `make gpu-check` prints after its short lab-size study.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _round(x: Any, nd: int = 3) -> Any:
    return round(float(x), nd) if x is not None else None


def margin(study_dir: Path) -> dict[str, Any]:
    """The JSON line of one study's results folder; ValueError when it has no trials to read."""
    from study.analyze import read_study
    from study.evidence import learning, trial_scores
    from study.tables import load_tables

    info = read_study(study_dir)
    tables = load_tables(study_dir)
    t = tables.trials
    if not t.height:
        raise ValueError(f"{study_dir}: no trials")
    first = t.row(0, named=True)
    per = learning(trial_scores(tables, info))
    cpu_s = float(t["cpu_s"].fill_null(0.0).sum()) if "cpu_s" in t.columns else 0.0
    gpu_s = float(t["gpu_s"].fill_null(0.0).sum()) if "gpu_s" in t.columns else 0.0
    best = per.row(0, named=True) if per.height else None
    top = best["margin"] if best and best["margin"] is not None else None
    return {
        "benchmark": "study_margin", "study": info.name, "dir": str(study_dir),
        "data": {"root": first.get("root"), "style": None if first.get("root") else first.get("synthetic_style"),
                 "frame": f"{first.get('frame_H')}x{first.get('frame_W')}", "val_frames": first.get("val_video_len")},
        "trials": t.height, "cpu_s": round(cpu_s, 1), "gpu_s": round(gpu_s, 1),
        "settings": [{"setting": r["setting"], "n": r["n"], "mean": _round(r["mean"]), "sd": _round(r["sd"]),
                      "floor": _round(r["floor"]), "margin_db": _round(r["margin"]), "learned": r["learned"]}
                     for r in per.iter_rows(named=True)],
        "best_margin_db": _round(top),
        "db_per_cpu_min": _round(top / (cpu_s / 60)) if top is not None and cpu_s else None,
        "db_per_gpu_min": _round(top / (gpu_s / 60)) if top is not None and gpu_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study_dirs", nargs="+", type=Path, help="finished (or interrupted) studies' results folders")
    args = p.parse_args(argv)
    rc = 0
    for d in args.study_dirs:
        try:
            print(json.dumps(margin(d)), flush=True)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
