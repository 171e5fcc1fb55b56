"""The lab's test split, read and checked whole before anything predicts from it.

Layout (the lab's; cvae.synthetic writes the same for the embedded data):

    <root>/test/test_img/<i>/frame0.png                   the first frame of sequence i
    <root>/test/test_label/<i>/frame0.png .. frame629.png the 630 pose images of sequence i
    <root>/test/test_gt/<i>/frame0.png .. frame629.png    the true frames (optional: the lab does not
                                                          hand them out; the embedded data writes them)

i = 0, 1, ... without gaps. Frames are the submission's size (cvae.submission.FRAME_SHAPE, 32x64):
an image of another size is an error here, not resized, since the submission is scored at that size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cvae.data import DatasetError, decode_frame, frame_files
from cvae.submission import FRAME_SHAPE, SEQ_FRAMES

SPLIT = "test"
FIRST, POSES, TRUTH = "test_img", "test_label", "test_gt"


@dataclass(frozen=True, eq=False)
class TestSplit:
    """A test split decoded into memory, sequences in order."""

    __test__ = False  # not a pytest test class, despite its name

    first: np.ndarray  # (S, H, W, 3) uint8: frame 0 of each sequence
    poses: np.ndarray  # (S, T, H, W, 3) uint8, T = SEQ_FRAMES
    truth: np.ndarray | None  # (S, T, H, W, 3) uint8 from test_gt, or None where the split has none
    root: Path  # <root>/test

    def __len__(self) -> int:
        return self.first.shape[0]


def _sequences(folder: Path) -> dict[int, Path]:
    """The sequence folders `<folder>/<i>` by i; hidden entries and stray files are not sequences."""
    if not folder.is_dir():
        raise DatasetError(folder, "is not a folder" if folder.exists() else "missing folder")
    seqs: dict[int, Path] = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not entry.name.isdigit():
            raise DatasetError(folder / entry.name, "folder name is not a sequence number (0, 1, ...)")
        seqs[int(entry.name)] = folder / entry.name
    return seqs


def _frame(path: Path) -> np.ndarray:
    # -> (H, W, 3) uint8 at exactly the submission's size; the header alone gives the size
    h, w = FRAME_SHAPE[1:]
    try:
        with Image.open(path) as im:
            size = im.size
    except Exception:  # noqa: BLE001 - decode_frame names what is wrong with an unreadable file
        size = (w, h)
    if size != (w, h):
        raise DatasetError(path, f"image is {size[1]}x{size[0]} (H x W); the test split's frames must be {h}x{w}, "
                                 "the submission's size")
    return decode_frame(path, h, w)


def _video(folder: Path) -> list[Path]:
    """frame0..frame629.png of one sequence folder, in order (DatasetError for a missing or extra frame)."""
    files = frame_files(folder)
    missing = [n for n in range(SEQ_FRAMES) if n not in files]
    if missing:
        raise DatasetError(folder / f"frame{missing[0]}.png", f"missing: the sequence has {len(files)} frames, "
                                                              f"expected frame0..frame{SEQ_FRAMES - 1}.png")
    extra = sorted(n for n in files if n >= SEQ_FRAMES)
    if extra:
        raise DatasetError(files[extra[0]], f"beyond frame{SEQ_FRAMES - 1}.png: a test sequence has {SEQ_FRAMES} frames")
    return [files[n] for n in range(SEQ_FRAMES)]


def has_truth(root: str | Path) -> bool:
    """Whether a dataset root's test split carries its ground truth (test/test_gt)."""
    return (Path(root) / SPLIT / TRUTH).is_dir()


def load_test_split(root: str | Path) -> TestSplit:
    """Read and check `<root>/test` (see the module docstring) into memory.

    Raises DatasetError naming the file and the reason for: a missing folder, sequence numbers with a
    gap, a sequence with poses but no first frame (or the reverse, or ground truth for other
    sequences), a sequence without exactly frame0..frame629, an image that is not an RGB PNG of the
    submission's size. Everything is checked before this returns.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset root is not a folder" if root.exists() else "dataset root does not exist")
    split = root / SPLIT
    if not split.is_dir():
        raise DatasetError(split, f"missing test split (expected {SPLIT}/{FIRST}/<i>/frame0.png and "
                                  f"{SPLIT}/{POSES}/<i>/frame0..{SEQ_FRAMES - 1}.png)")
    firsts, poses = _sequences(split / FIRST), _sequences(split / POSES)
    truths = _sequences(split / TRUTH) if has_truth(root) else None
    for i in sorted(poses.keys() - firsts.keys()):
        raise DatasetError(split / FIRST / str(i) / "frame0.png", f"missing: sequence {i} has poses but no first frame")
    for i in sorted(firsts.keys() - poses.keys()):
        raise DatasetError(split / POSES / str(i), f"missing: sequence {i} has a first frame but no poses")
    if not poses:
        raise DatasetError(split / POSES, "no sequence folders (0, 1, ...)")
    gaps = sorted(set(range(max(poses) + 1)) - poses.keys())
    if gaps:
        raise DatasetError(split / POSES / str(gaps[0]), f"missing: sequences are numbered 0..{max(poses)} without gaps")
    if truths is not None:
        for i in sorted(poses.keys() ^ truths.keys()):
            raise DatasetError(split / TRUTH / str(i), "missing: no ground truth for this sequence" if i in poses
                               else "ground truth of a sequence the test split does not have")
    order = sorted(poses)
    first_files = [firsts[i] / "frame0.png" for i in order]
    for f in first_files:
        if not f.is_file():
            raise DatasetError(f, f"missing: the first frame of sequence {f.parent.name}")
    pose_files = [_video(poses[i]) for i in order]
    truth_files = [_video(truths[i]) for i in order] if truths is not None else None

    def decode(paths: list[list[Path]]) -> np.ndarray:
        return np.stack([np.stack([_frame(p) for p in seq]) for seq in paths])  # (S, T, H, W, 3)

    return TestSplit(first=decode([first_files])[0], poses=decode(pose_files),
                     truth=decode(truth_files) if truth_files is not None else None, root=split)


__all__ = ["TestSplit", "has_truth", "load_test_split"]
