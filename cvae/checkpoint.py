"""The checkpoint format of a run: one folder per epoch, written atomically, verified on load.

A checkpoint folder holds `state.pt` (weights, optimizer, scheduler, RNG and loop state),
`config.json` (the run's full Config), optionally `psnr_per_frame.json` (the validation curve) and
`manifest.json` (sha256 of every other file, written last), so a half-written or corrupt checkpoint
is detected before anything is loaded from it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from cvae.config import Config

log = logging.getLogger(__name__)

RESULTS_DIR = "results"  # the project's results folder: single runs under runs/<config>/, studies beside
RUNS_DIR = "runs"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
FRAMES_FILE = "psnr_per_frame.json"
METRICS_FILE = "metrics.jsonl"  # a single run's metrics, one JSON object per epoch (beside its epoch_NNNN/)
EPOCH_PREFIX = "epoch_"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt (names the path and what is wrong)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def epoch_dir(root: Path, epoch: int) -> Path:
    """Where a plain run keeps the checkpoint of `epoch` under `root`."""
    return root / f"{EPOCH_PREFIX}{epoch:04d}"


def save_checkpoint(directory: Path, state: dict[str, Any], cfg: Config, frames: dict[str, Any] | None) -> Path:
    """Write one epoch's checkpoint atomically (a temp dir renamed into place), with a manifest
    of sha256 sums so a corrupt or half-written checkpoint is detected on load."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    import torch  # here, not at the top: `cvae-study status` reads folders through this module

    torch.save(state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    if frames is not None:
        (tmp / FRAMES_FILE).write_text(json.dumps(frames))
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"epoch": state["epoch"], "sha256": {f: _sha256(tmp / f) for f in files}}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def verify_checkpoint(directory: str | Path) -> None:
    """Raise CheckpointError unless every file listed in the manifest is there with its sha256."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        sums = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path}: missing or unreadable manifest ({e})") from None
    for name, digest in sums.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the manifest (corrupt or truncated)")


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Verified state of a checkpoint directory (tensors and plain data only: weights_only=True)."""
    verify_checkpoint(directory)
    import torch

    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def load_config_of(directory: str | Path) -> Config:
    """The full Config stored in a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    try:
        return Config.from_dict(json.loads(path.read_text()), source=path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from None


def epoch_dirs(root: Path) -> list[Path]:
    """Complete epoch checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{EPOCH_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))


def epoch_of(directory: Path) -> int:
    """The epoch number in a plain run's checkpoint folder name (`epoch_0007` -> 7)."""
    return int(directory.name[len(EPOCH_PREFIX):])


def latest_good_checkpoint(root: Path) -> Path | None:
    """Newest epoch checkpoint under root that verifies; corrupt ones are logged and skipped."""
    for path in reversed(epoch_dirs(root)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            log.warning("skipping corrupt checkpoint: %s", e)
    return None


def prune(root: Path, keep: int, keep_epoch: int) -> None:
    """Delete all but the newest `keep` epoch checkpoints under root, and never `keep_epoch`'s."""
    for path in epoch_dirs(root)[:-keep]:
        if path != epoch_dir(root, keep_epoch):
            shutil.rmtree(path, ignore_errors=True)


def move_aside(path: Path) -> Path:
    """Rename a local run or study folder to `<name>.old-<stamp>` (never delete a user's results)."""
    aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    path.rename(aside)
    return aside
