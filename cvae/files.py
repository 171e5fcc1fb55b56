"""Files written whole or not at all: the project's one temp-and-rename writer.

A reader (a browser reloading the report, `cvae-study status`, a resumed driver, the leaderboard
upload) never sees half a file, and a failure or an interrupt leaves the old file, or none, in place.
Predictions, the submission, the report, its tables and frames cache, the manifest, the driver's
mark and the copies of Tune's state are all written through `atomic_write`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where `atomic_write` writes `path` first: `.<name>.<pid>.tmp` beside it (hidden, one per
    process, so two writers never share one; `pid` names another process's, to clean up after it)."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temp file beside `path` (temp_path), then rename it onto `path`; the temp file
    is removed if `write` fails."""
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write of a UTF-8 text."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = ["atomic_write", "atomic_write_text", "temp_path"]
