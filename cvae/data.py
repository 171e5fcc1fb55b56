"""The lab's dataset layout, decoded once into memory, and the sequence batches cut from it.

Layout (the lab's Dataset_Dance):

    <root>/train/train_img/frame<N>.png    RGB frames
    <root>/train/train_label/frame<N>.png  the matching pose images
    <root>/val/val_img/frame<N>.png        one validation video
    <root>/val/val_label/frame<N>.png

Frames are ordered by the integer N. Consecutive runs of `video_len` training frames form one
sequence; the first `val_video_len` validation frames are the rollout. With `DataConfig.root`
unset, the embedded synthetic dancer (`cvae.synthetic`) is generated into a cache and read by the
same code.

CLI: python -m cvae.data stats ROOT | --synthetic [...]: what a dataset's validation video is like,
beside the lab's (cvae.stats; `python -m cvae.data stats --help`).
"""
from __future__ import annotations

import functools
import io
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cvae.config import DataConfig

log = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"frame(\d+)\.png", re.IGNORECASE)
_CACHE_SIZE = 4  # datasets memoised per process (a lab-size one is ~300 MB of uint8)


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the offending path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Keep it picklable (Ray ships exceptions between processes).
        return (DatasetError, (self.path, self.reason))


@dataclass(frozen=True, eq=False)
class Frames:
    """One split decoded into memory; img[i] and label[i] are frame i in N order."""

    img: np.ndarray  # (N, H, W, 3) uint8
    label: np.ndarray  # (N, H, W, 3) uint8
    root: Path  # the split folder it came from, e.g. <root>/train

    def __len__(self) -> int:
        return len(self.img)


@dataclass(frozen=True, eq=False)
class Dataset:
    """The training frames, the validation video (already cut to val_video_len) and their root."""

    train: Frames
    val: Frames
    root: Path

    def num_sequences(self, video_len: int) -> int:
        """Whole training sequences of `video_len` frames (a trailing remainder is unused)."""
        return len(self.train) // video_len


def frame_files(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        reason = "is not a folder" if folder.exists() else "missing folder"
        raise DatasetError(folder, reason)
    files: dict[int, Path] = {}
    for entry in os.scandir(folder):
        name = entry.name
        # Non-PNG clutter (.DS_Store, Thumbs.db, desktop.ini) and hidden files such as macOS's
        # "._frame1.png" resource forks are not frames.
        if name.startswith(".") or not name.lower().endswith(".png"):
            continue
        path = folder / name
        m = _FRAME_RE.fullmatch(name)
        if m is None:
            raise DatasetError(path, "PNG file name is not frame<integer>.png")
        if not entry.is_file():
            raise DatasetError(path, "is not a file")
        n = int(m.group(1))
        if n in files:
            raise DatasetError(path, f"same frame number {n} as {files[n].name}")
        files[n] = path
    return files


def decode_frame(path: Path, frame_H: int, frame_W: int) -> np.ndarray:
    # -> (frame_H, frame_W, 3) uint8
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        # One read, then decode from memory: cheaper than Pillow's many small file reads.
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            im.load()
            mode = im.mode
            if mode == "P":  # palette PNGs are colour images; transparency is checked below
                im = im.convert("RGBA")
                mode = "RGBA"
            if mode == "RGBA":
                alpha = np.asarray(im.getchannel("A"))
                if alpha.min() < 255:
                    raise DatasetError(path, "expected 3 channels (RGB), got RGBA with transparent pixels")
                im = im.convert("RGB")
            elif mode != "RGB":
                bands = len(im.getbands())
                plural = "s" if bands != 1 else ""
                raise DatasetError(path, f"expected 3 channels (RGB), got mode {mode} with {bands} channel{plural}")
            if im.size != (frame_W, frame_H):
                im = im.resize((frame_W, frame_H), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError(path, "cannot decode PNG: not a PNG image, or truncated before its pixel data") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(path, f"cannot decode PNG: {e}") from None


def _decode_all(paths: list[Path], frame_H: int, frame_W: int) -> np.ndarray:
    # -> (len(paths), frame_H, frame_W, 3) uint8. Serial on purpose: a tiny PNG costs ~0.2 ms, mostly
    # Pillow's Python-level chunk parsing under the GIL; a thread pool measured slower, not faster.
    out = np.empty((len(paths), frame_H, frame_W, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = decode_frame(path, frame_H, frame_W)
    return out


def split_files(root: str | Path, split: Literal["train", "val"]) -> list[tuple[Path, Path]]:
    """The (image, label) file pairs of `<root>/<split>` in frame-number order, without decoding them.

    Raises DatasetError naming the path for a missing root or folder, an unpaired or misnamed file,
    or an empty split: the lab layout's whole check short of reading the pixels.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset root is not a folder" if root.exists() else "dataset root does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        what = "is not a folder" if split_dir.exists() else f"missing {split} folder"
        raise DatasetError(split_dir, f"{what} (expected {split}/{split}_img and {split}/{split}_label)")
    img_dir, label_dir = split_dir / f"{split}_img", split_dir / f"{split}_label"
    imgs, labels = frame_files(img_dir), frame_files(label_dir)
    for n in sorted(imgs.keys() - labels.keys()):
        raise DatasetError(imgs[n], f"image has no matching label {label_dir / imgs[n].name}")
    for n in sorted(labels.keys() - imgs.keys()):
        raise DatasetError(labels[n], f"label has no matching image {img_dir / labels[n].name}")
    if not imgs:
        raise DatasetError(img_dir, "no frame<N>.png files")
    return [(imgs[n], labels[n]) for n in sorted(imgs)]


def load_split(root: str | Path, split: Literal["train", "val"], frame_H: int, frame_W: int) -> Frames:
    """Decode `<root>/<split>/<split>_img` and `_label` into uint8 arrays of frame_H x frame_W.

    Files are ordered by their frame number; images of another size are resized (bilinear).
    Raises DatasetError naming the path for a missing folder, an unpaired or misnamed file,
    an unreadable PNG, a non-RGB image or an empty split.
    """
    pairs = split_files(root, split)
    split_dir = Path(root) / split
    t0 = time.perf_counter()
    img = _decode_all([i for i, _ in pairs], frame_H, frame_W)
    label = _decode_all([lb for _, lb in pairs], frame_H, frame_W)
    # Shared through the cache: nobody may write into them.
    img.flags.writeable = False
    label.flags.writeable = False
    log.info("decoded %d %s frame pairs from %s at %dx%d in %.2f s",
             len(pairs), split, split_dir, frame_H, frame_W, time.perf_counter() - t0)
    return Frames(img=img, label=label, root=split_dir)


def _dir_stamp(root: Path) -> tuple[int, ...]:
    # Folder mtimes change when files are added, removed or renamed: then the cache is stale.
    stamp = []
    for sub in ("train/train_img", "train/train_label", "val/val_img", "val/val_label"):
        try:
            stamp.append(os.stat(root / sub).st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(root: Path, stamp: tuple[int, ...], frame_H: int, frame_W: int,
                 video_len: int, val_video_len: int) -> Dataset:
    train = load_split(root, "train", frame_H, frame_W)
    if len(train) < video_len:
        raise DatasetError(root / "train" / "train_img",
                           f"has {len(train)} frames, fewer than one training sequence of video_len={video_len}")
    val = load_split(root, "val", frame_H, frame_W)
    if len(val) < val_video_len:
        raise DatasetError(root / "val" / "val_img",
                           f"has {len(val)} frames, the validation rollout needs val_video_len={val_video_len}")
    if len(val) > val_video_len:
        val = Frames(img=val.img[:val_video_len], label=val.label[:val_video_len], root=val.root)
    return Dataset(train=train, val=val, root=root)


def dataset_root(cfg: DataConfig) -> Path:
    """The folder cfg's dataset is read from: `cfg.root` (DatasetError if it is no folder), else the
    embedded dataset's cache folder, generated on first use. load_dataset and the manifest both ask here."""
    if cfg.root is None:
        from cvae.synthetic import ensure_dataset  # lazy: only the synthetic path needs it

        root = ensure_dataset(cfg)
    else:
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            raise DatasetError(root, "dataset root is not a folder" if root.exists() else "dataset root does not exist")
    return root.resolve()


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes: `cfg.root` if set, else the cached synthetic dancer.

    Checks there is at least one training sequence and `val_video_len` validation frames, and
    cuts the validation video to `val_video_len` frames. Memoised per process on (root, sizes),
    so a second call returns the same arrays without reading a file.
    """
    root = dataset_root(cfg)
    return _load_cached(root, _dir_stamp(root), cfg.frame_H, cfg.frame_W, cfg.video_len, cfg.val_video_len)


def clear_cache() -> None:
    """Forget the datasets memoised by load_dataset (frees their memory)."""
    _load_cached.cache_clear()


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [0, 1] (a new tensor)."""
    if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected a (..., H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    # Channels first on the uint8 data (a quarter of the bytes of float32), then one conversion.
    # The transposed copy is also writable, which torch.from_numpy wants (our arrays are read-only).
    chw = np.ascontiguousarray(np.moveaxis(arr, -1, -3))  # (..., 3, H, W) uint8
    if not chw.flags.writeable:
        chw = chw.copy()
    return torch.from_numpy(chw).to(torch.float32).div_(255.0)


def sequence_batch(frames: Frames, indices: np.ndarray | list[int], video_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training sequences `indices` (sequence i = frames [i*video_len, (i+1)*video_len)).

    Returns (img, label), each (B, T, 3, H, W) float32 in [0, 1] with T = video_len.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
    n_seq = len(frames) // video_len
    if idx.size and (idx.min() < 0 or idx.max() >= n_seq):
        raise IndexError(f"sequence index out of range 0..{n_seq - 1}: {idx.tolist()}")
    frame_idx = idx[:, None] * video_len + np.arange(video_len)  # (B, T)
    # Fancy indexing copies just these frames (writable uint8); one float conversion each.
    return to_tensor(frames.img[frame_idx]), to_tensor(frames.label[frame_idx])


class DeviceFrames:
    """A split's frames as uint8 tensors (N, 3, H, W) on a device: uploaded once per run (a quarter
    of float32's bytes), each batch converted to float there. Same numbers as `sequence_batch`."""

    def __init__(self, frames: Frames, device: torch.device | str = "cpu") -> None:
        def chw(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.moveaxis(arr, -1, -3).copy()).to(device)  # (N, 3, H, W) uint8

        self.img, self.label = chw(frames.img), chw(frames.label)
        self.root = frames.root

    def __len__(self) -> int:
        return self.img.shape[0]

    def batch(self, indices: torch.Tensor | np.ndarray | list[int], video_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training sequences `indices` -> (img, label), each (B, T, 3, H, W) float32 in [0, 1]."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        n_seq = len(self) // video_len
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_seq):
            raise IndexError(f"sequence index out of range 0..{n_seq - 1}: {idx.tolist()}")
        frame_idx = (idx[:, None] * video_len + torch.arange(video_len)).to(self.img.device)  # (B, T)
        return self.img[frame_idx].to(torch.float32).div_(255.0), self.label[frame_idx].to(torch.float32).div_(255.0)


def main(argv: list[str] | None = None) -> int:
    """`python -m cvae.data stats ...`: the one subcommand, whose definitions live in cvae.stats."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "stats":
        print("usage: python -m cvae.data stats ROOT | --synthetic [--style lab] [--frame-size HxW ...] "
              "[--val-frames N ...] [--json]   (see: python -m cvae.data stats --help)", file=sys.stderr)
        return 2
    from cvae.stats import main as stats_main  # it imports this module

    return stats_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
