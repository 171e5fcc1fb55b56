"""The lab's Kaggle submission format: the one definition that predict writes and score reads.

    id,0,1,...,6143                 header (pandas' default column names, as the lab's Tester writes)
    0,v0,v1,...,v6143               one row per frame: the 3x32x64 frame flattened in (C, H, W) order,
    1,...                           each value rint(x * 255) as an integer in 0..255

630 rows per test sequence (its given first frame included), sequences in order, ids 0, 1, ... over
all rows. The leaderboard scores rows 1..600 of each sequence (PSNR, data range 255); sequences
0-2 are the public score, the rest the private one.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cvae.files import atomic_write

FRAME_SHAPE: tuple[int, int, int] = (3, 32, 64)  # (C, H, W) of a submitted frame: the lab's size
VALUES = FRAME_SHAPE[0] * FRAME_SHAPE[1] * FRAME_SHAPE[2]  # 6144 values per row
COLUMNS = 1 + VALUES  # id + values
SEQ_FRAMES = 630  # rows per test sequence (frame 0, the given one, included)
SCORED = range(1, 601)  # the rows of each sequence the leaderboard scores (frames 1..600)
PUBLIC_SEQUENCES = 3  # sequences 0..2 make the public score, the rest the private one
HEADER = "id," + ",".join(map(str, range(VALUES)))

# Each value as 4 bytes, "v," padded with NULs ("255," fills them): rows become one table lookup and
# one bytes.replace instead of 6145 Python formattings each (see write_submission).
_CELLS = np.array([f"{v}," for v in range(256)], dtype="S4")
_LAST = np.array([f"{v}\n" for v in range(256)], dtype="S4")
_BAD_CHAR = re.compile(rb"[^0-9,\r\n]")


class SubmissionError(ValueError):
    """A submission CSV that breaks the format: names the file, the line (1 = the header) and why."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}: {f'line {line}: ' if line is not None else ''}{reason}")


def to_rows(frames: np.ndarray) -> np.ndarray:
    """Frames (..., 3, 32, 64) uint8 -> submission rows (N, 6144) uint8, (C, H, W) order flattened."""
    if frames.dtype != np.uint8 or frames.shape[-3:] != FRAME_SHAPE:
        raise ValueError(f"expected (..., {', '.join(map(str, FRAME_SHAPE))}) uint8 frames, got {frames.dtype} {frames.shape}")
    return frames.reshape(-1, VALUES)


def quantize(x: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] (float) -> rint(x * 255) as uint8, the lab's rounding; clipped to [0, 1] first,
    so an unsquashed Generator's output still makes a valid submission."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def encode_rows(rows: np.ndarray, first_id: int) -> bytes:
    """Rows (N, 6144) uint8 -> their CSV lines as bytes, ids first_id, first_id + 1, ..."""
    n = rows.shape[0]
    ids = np.array([f"{i}," for i in range(first_id, first_id + n)], dtype="S12").view(np.uint8).reshape(n, 12)
    cells = _CELLS[rows[:, :-1]].view(np.uint8).reshape(n, 4 * (VALUES - 1))
    last = _LAST[rows[:, -1]].view(np.uint8).reshape(n, 4)
    return np.concatenate([ids, cells, last], axis=1).tobytes().replace(b"\0", b"")


def write_submission(path: str | Path, rows: np.ndarray, chunk: int = SEQ_FRAMES) -> Path:
    """Write rows (N, 6144) uint8 as a submission CSV, atomically (cvae.files.atomic_write)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            f.write(HEADER.encode() + b"\n")
            for s in range(0, rows.shape[0], chunk):
                f.write(encode_rows(rows[s:s + chunk], s))

    atomic_write(path, write)
    return path


def _parse_line(path: Path, lineno: int, line: bytes) -> np.ndarray:
    # -> (COLUMNS,) int64, or SubmissionError naming the line and the first bad field
    n = line.count(b",") + 1
    if n != COLUMNS:
        raise SubmissionError(path, lineno, f"has {n} columns, expected {COLUMNS} (id + {VALUES} values "
                                            f"of a {'x'.join(map(str, FRAME_SHAPE))} frame)")
    bad = _BAD_CHAR.search(line)
    if bad is not None or b",," in line or line.startswith(b",") or line.endswith(b","):
        fields = line.split(b",")
        col = line[:bad.start()].count(b",") if bad is not None else fields.index(b"")
        raise SubmissionError(path, lineno, f"column {col + 1}: {fields[col][:20].decode(errors='replace')!r} is not "
                                            "a non-negative integer")
    # Only digits and single commas are left: numpy's C parser reads the line whole (a tenth of the
    # time of splitting it into Python objects).
    values = np.fromstring(line, dtype=np.int64, sep=",")
    if values[1:].max() > 255:
        col = int(np.argmax(values[1:] > 255))
        raise SubmissionError(path, lineno, f"column {col + 2}: {values[col + 1]} is outside 0..255")
    return values


def read_submission(path: str | Path) -> np.ndarray:
    """Read and check a submission CSV -> rows (N, 6144) uint8, N a multiple of 630.

    Raises SubmissionError naming the file and line for a missing or wrong header, a row with the wrong
    column count, a value that is not an integer in 0..255, ids that are not 0, 1, ... in order, or a
    row count that is not a multiple of 630.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SubmissionError(path, None, f"cannot read file: {e.strerror or e}") from None
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline
    if not lines:
        raise SubmissionError(path, 1, f"empty file: expected the header {HEADER[:12]}...")
    header = lines[0].split(b",")
    if header[0].strip() != b"id" or len(header) != COLUMNS:
        raise SubmissionError(path, 1, f"header must be {HEADER[:12]}...,{VALUES - 1} ({COLUMNS} columns, the first "
                                       f"'id'), got {len(header)} columns starting {header[0][:20].decode(errors='replace')!r}")
    rows = np.empty((len(lines) - 1, VALUES), dtype=np.uint8)
    for r, line in enumerate(lines[1:]):
        values = _parse_line(path, r + 2, line)
        if values[0] != r:
            raise SubmissionError(path, r + 2, f"id {values[0]} out of order: expected {r} (ids are 0, 1, ... in order)")
        rows[r] = values[1:]
    if rows.shape[0] == 0 or rows.shape[0] % SEQ_FRAMES:
        raise SubmissionError(path, len(lines), f"{rows.shape[0]} rows is not a positive multiple of {SEQ_FRAMES} "
                                                f"(rows per test sequence)")
    return rows


__all__ = ["COLUMNS", "FRAME_SHAPE", "HEADER", "PUBLIC_SEQUENCES", "SCORED", "SEQ_FRAMES", "VALUES", "SubmissionError",
           "encode_rows", "quantize", "read_submission", "to_rows", "write_submission"]
