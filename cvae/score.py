"""Score a submission as the lab's leaderboard does:
`python -m cvae.score SUBMISSION (--truth TRUTH.csv | --truth-dir ROOT) [--json]`.

PSNR per row, data range 255 (10 log10(255^2 / MSE) over the row's 6144 integer values), over rows
1..600 of each 630-row sequence (row 0 is the given first frame, rows 601..629 are not scored); the
public score is the mean over sequences 0-2, the private score over the rest.

A row identical to its truth has an infinite PSNR; it counts as CAP_DB = 100 dB (the cap
scikit-image-style and Kaggle-like PSNR scorers use), so one perfect row cannot make a mean infinite,
and the output says how many rows were capped.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvae.data import DatasetError
from cvae.submission import PUBLIC_SEQUENCES, SCORED, SEQ_FRAMES, SubmissionError, read_submission, to_rows
from cvae.testsplit import TRUTH, TestSplit, load_test_split

CAP_DB = 100.0  # the PSNR an identical row counts as (its true PSNR is infinite)
DATA_RANGE = 255


@dataclass(frozen=True)
class Score:
    """A submission's leaderboard numbers, in dB."""

    public: float  # mean PSNR over the scored rows of sequences 0..PUBLIC_SEQUENCES-1
    private: float | None  # mean over the scored rows of the other sequences; None if there are none
    overall: float  # mean over every scored row
    sequences: tuple[float, ...]  # mean per sequence, in order
    rows: int  # rows scored (600 per sequence)
    capped: int  # scored rows identical to their truth, counted as CAP_DB

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sequences": list(self.sequences), "cap_db": CAP_DB, "data_range": DATA_RANGE,
                "frames": [SCORED.start, SCORED.stop - 1], "public_sequences": PUBLIC_SEQUENCES}


def row_psnr(sub: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR (data range 255) of each row, sub/truth (N, 6144) integers -> (N,) float64, capped at CAP_DB."""
    mse = np.mean((sub.astype(np.int32) - truth.astype(np.int32)) ** 2, axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(DATA_RANGE**2 / mse)
    return np.minimum(psnr, CAP_DB)


def score_rows(sub: np.ndarray, truth: np.ndarray) -> Score:
    """The leaderboard's numbers of submission rows against truth rows, each (S * 630, 6144)."""
    if sub.shape != truth.shape or sub.shape[0] % SEQ_FRAMES:
        raise ValueError(f"expected two equal (S * {SEQ_FRAMES}, 6144) row arrays, got {sub.shape} and {truth.shape}")
    s, v = sub.shape[0] // SEQ_FRAMES, sub.shape[1]

    def scored(rows: np.ndarray) -> np.ndarray:  # (S * 630, V) -> (S * 600, V)
        return rows.reshape(s, SEQ_FRAMES, v)[:, SCORED.start:SCORED.stop].reshape(-1, v)

    psnr = row_psnr(scored(sub), scored(truth)).reshape(s, -1)  # (S, 600)
    pub, priv = psnr[:PUBLIC_SEQUENCES], psnr[PUBLIC_SEQUENCES:]
    return Score(public=float(pub.mean()), private=float(priv.mean()) if priv.size else None,
                 overall=float(psnr.mean()), sequences=tuple(float(x) for x in psnr.mean(axis=1)),
                 rows=int(psnr.size), capped=int((psnr >= CAP_DB).sum()))


def truth_rows(split: TestSplit) -> np.ndarray:
    """A test split's ground truth as submission rows (S * 630, 6144) uint8."""
    if split.truth is None:
        raise DatasetError(split.root / TRUTH, "missing folder: this test split has no ground truth")
    return to_rows(np.ascontiguousarray(np.moveaxis(split.truth, -1, -3)))  # (S, T, H, W, 3) -> (S, T, 3, H, W)


def truth_from_dir(root: str | Path) -> np.ndarray:
    """The truth rows of `<root>/test/test_gt` (cvae.testsplit checks the whole split first)."""
    return truth_rows(load_test_split(root))


def _range(first: int, last: int) -> str:
    return f"sequence {first}" if first == last else f"sequences {first}-{last}"


def report_lines(score: Score) -> list[str]:
    """The score as a user reads it, a few lines."""
    n = len(score.sequences)
    lines = [f"  public  ({_range(0, min(n, PUBLIC_SEQUENCES) - 1)}): {score.public:.3f} dB"]
    if score.private is not None:
        lines.append(f"  private ({_range(PUBLIC_SEQUENCES, n - 1)}): {score.private:.3f} dB")
    lines.append("  per sequence: " + "  ".join(f"{i}: {v:.2f}" for i, v in enumerate(score.sequences)))
    lines.append(f"  ({score.rows} rows scored: frames {SCORED.start}..{SCORED.stop - 1} of each sequence; a row equal to "
                 f"its truth has an infinite PSNR and counts as {CAP_DB:.0f} dB: {score.capped} such rows)")
    return lines


def main(argv: list[str] | None = None, prog: str = "python -m cvae.score") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Score a submission.csv as the lab's "
                                "leaderboard does: PSNR (data range 255) per row over frames 1..600 of each sequence, "
                                f"public = sequences 0-{PUBLIC_SEQUENCES - 1}, private = the rest.")
    p.add_argument("submission", help="the submission CSV (python -m cvae.predict writes one)")
    truth = p.add_mutually_exclusive_group(required=True)
    truth.add_argument("--truth", help="the true frames in the submission's own format (header, id, 6144 integers)")
    truth.add_argument("--truth-dir", help="a dataset root whose test split has its ground truth: "
                                           "<ROOT>/test/test_gt/<i>/frame0..629.png")
    p.add_argument("--json", action="store_true", help="print the score as one JSON object")
    args = p.parse_args(argv)
    try:
        sub = read_submission(args.submission)
        truth_rows = read_submission(args.truth) if args.truth else truth_from_dir(args.truth_dir)
    except (SubmissionError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    against = args.truth or str(Path(args.truth_dir) / "test" / TRUTH)
    if sub.shape != truth_rows.shape:
        print(f"error: {args.submission}: {sub.shape[0]} rows ({sub.shape[0] // SEQ_FRAMES} x {SEQ_FRAMES}), but the "
              f"truth {against} has {truth_rows.shape[0]} ({truth_rows.shape[0] // SEQ_FRAMES} x {SEQ_FRAMES})",
              file=sys.stderr)
        return 2
    score = score_rows(sub, truth_rows)
    if args.json:
        print(json.dumps({"submission": str(args.submission), "truth": str(against), **score.to_dict()}))
        return 0
    print(f"{args.submission} against {against}: PSNR (data range {DATA_RANGE}), {len(score.sequences)} sequences")
    print("\n".join(report_lines(score)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
