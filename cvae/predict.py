"""The lab's test phase: `python -m cvae.predict --checkpoint DIR --data ROOT --out OUT [--seed S] [--resize]
[--device D]`.

Reads ROOT's test split (cvae.testsplit), rolls each sequence out from its first frame and its 630
poses with z ~ N(0, 1) (CVAE.rollout, the validation's own path), and writes into OUT:

    submission.csv     the lab's Kaggle format (cvae.submission), 630 rows per sequence
    pred_seq<i>.gif    the 630 frames of sequence i, 20 ms each (the lab's Tester)
    pred_seq<i>.png    a strip of a few of them, for a quick look
    score.json         only where the split has its ground truth (test/test_gt): cvae.score's numbers

Everything is read and checked before anything is written, and each file is renamed into place
whole, so a bad checkpoint, a bad test split or an interrupted run leaves no partial submission.
The noise is drawn on the CPU from one generator seeded by --seed, sequence after sequence, so every
device sees the same z; the same --seed, --threads and device give the same submission bit for bit
(the thread count changes the last bits of float sums, and rint can then flip a value).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as nnf

from cvae.checkpoint import CONFIG_FILE, FRAMES_FILE, MANIFEST_FILE, CheckpointError
from cvae.config import ConfigError
from cvae.data import DatasetError, to_tensor
from cvae.device import choose_threads, resolve_device
from cvae.evaluate import load_model
from cvae.model import CVAE
from cvae.files import atomic_write
from cvae.submission import FRAME_SHAPE, SEQ_FRAMES, quantize, to_rows, write_submission
from cvae.testsplit import TestSplit, load_test_split

SUBMISSION = "submission.csv"
SCORE = "score.json"
GIF_MS = 20  # per frame, as the lab's Tester writes its GIFs
STRIP_FRAMES = 8  # frames in the pred_seq<i>.png strip, evenly spaced from 0 to 629
STRIP_GAP = 2  # white pixels between them


def _resize_u8(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3): Pillow's bilinear, as cvae.data resizes training frames,
    so a model trained at another size sees its inputs as it saw its training frames."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in flat])
    return out.reshape(*frames.shape[:-3], h, w, 3)


@torch.inference_mode()
def predict_split(model: CVAE, split: TestSplit, seed: int, size: tuple[int, int],
                  progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> np.ndarray:
    """The rollout of every test sequence, (S, 630, 3, 32, 64) uint8 in the submission's rounding.

    Frame 0 is the given first frame, unchanged; frames 1..629 are the model's, each from its own
    previous prediction. `size` (h, w) is the model's frame size: inputs are resized to it and
    predictions back (bilinear) when it is not the submission's.
    """
    device = next(model.parameters()).device
    h, w = size
    out_h, out_w = FRAME_SHAPE[1:]
    resize = (h, w) != (out_h, out_w)
    gen = torch.Generator().manual_seed(seed)
    out = np.empty((len(split), SEQ_FRAMES, *FRAME_SHAPE), dtype=np.uint8)
    for i in progress(range(len(split))):
        first, poses = split.first[i], split.poses[i]  # (H, W, 3), (T, H, W, 3) uint8
        if resize:
            first, poses = _resize_u8(first, h, w), _resize_u8(poses, h, w)
        x0 = to_tensor(first)[None]  # (1, 3, h, w)
        z = model.noise(1, SEQ_FRAMES - 1, x0, generator=gen)  # (T-1, 1, N, h, w), drawn on the CPU
        pred = model.rollout(x0.to(device), to_tensor(poses)[None].to(device), z.to(device))[0]  # (T-1, 3, h, w)
        if resize:
            pred = nnf.interpolate(pred, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
        out[i, 0] = np.moveaxis(split.first[i], -1, 0)
        out[i, 1:] = quantize(pred.float().cpu().numpy())
    return out


def _hwc(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(frames, -3, -1))  # (..., 3, H, W) -> (..., H, W, 3)


def write_gif(path: Path, frames: np.ndarray) -> None:
    """frames (T, 3, H, W) uint8 -> an animated GIF, GIF_MS a frame, looping.

    One palette for the whole video (median cut over all its frames, no dithering): a tenth of the
    time of Pillow's palette per frame, and no colour flicker between frames. Pillow merges a frame
    identical to the one before into it (one frame, twice as long), so the play time is always T * GIF_MS.
    """
    t, _, h, w = frames.shape
    video = Image.fromarray(_hwc(frames).reshape(t * h, w, 3))  # the frames stacked top to bottom
    video = video.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    images = [video.crop((0, i * h, w, (i + 1) * h)) for i in range(t)]  # P images sharing the palette
    atomic_write(path, lambda p: images[0].save(p, format="GIF", save_all=True, append_images=images[1:],
                                                duration=GIF_MS, loop=0))


def strip_points(t: int) -> list[int]:
    """The frame indices shown in a strip: STRIP_FRAMES evenly spaced from 0 to t-1."""
    return sorted({int(round(x)) for x in np.linspace(0, t - 1, min(STRIP_FRAMES, t))})


def write_strip(path: Path, frames: np.ndarray) -> None:
    """frames (T, 3, H, W) uint8 -> one PNG of the frames at strip_points(T), side by side."""
    pick = _hwc(frames[strip_points(frames.shape[0])])  # (K, H, W, 3)
    k, h, w = pick.shape[:3]
    canvas = np.full((h, k * w + (k - 1) * STRIP_GAP, 3), 255, dtype=np.uint8)
    for j, f in enumerate(pick):
        canvas[:, j * (w + STRIP_GAP):j * (w + STRIP_GAP) + w] = f
    atomic_write(path, lambda p: Image.fromarray(canvas).save(p, format="PNG"))


def _val_psnr(ckpt: Path) -> float | None:
    """The checkpoint's own validation score (mean of its per-frame PSNR curve), if it kept one."""
    try:
        return float(np.mean(json.loads((ckpt / FRAMES_FILE).read_text())["psnr"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def parser(prog: str = "python -m cvae.predict", checkpoint_required: bool = True) -> argparse.ArgumentParser:
    """The command's flags (cvae-study predict adds a study's results folder in place of --checkpoint)."""
    h, w = FRAME_SHAPE[1:]
    p = argparse.ArgumentParser(prog=prog, description="Predict the lab's test split with a trained checkpoint: "
                                "submission.csv, pred_seq<i>.gif and .png (and score.json where the split has its "
                                "ground truth).")
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="a checkpoint folder (config.json, state.pt, manifest.json), e.g. results/runs/demo/epoch_0009")
    p.add_argument("--data", required=True, help="dataset root holding test/test_img/<i>/frame0.png and "
                                                 "test/test_label/<i>/frame0..629.png")
    p.add_argument("--out", required=True, help="folder for submission.csv and the pred_seq<i> files (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of z ~ N(0, 1); same seed, same submission (default 0)")
    p.add_argument("--resize", action="store_true", help=f"accept a model trained at another frame size than {h}x{w}: "
                                                         "inputs and predictions resized bilinearly")
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the free CPUs, as python -m cvae.train "
                                               "picks them); the count changes float sums' last bits, so the same "
                                               "--seed and --threads reproduce a submission bit for bit")
    return p


def run(args: argparse.Namespace) -> int:
    """The command, from parsed flags: 0 when written, 2 for a bad checkpoint, test split or device."""
    from tqdm import tqdm

    from cvae.score import report_lines, score_rows, truth_rows

    ckpt = Path(args.checkpoint)
    out_h, out_w = FRAME_SHAPE[1:]
    try:
        if args.threads is not None and args.threads < 1:
            raise ConfigError("--threads", f"must be >= 1, got {args.threads}")
        if not ckpt.is_dir():
            raise CheckpointError(f"{ckpt}: no such checkpoint folder")
        model, cfg = load_model(ckpt)
        size = (cfg.data.frame_H, cfg.data.frame_W)
        if size != (out_h, out_w) and not args.resize:
            raise CheckpointError(f"{ckpt / CONFIG_FILE}: the model was trained on {size[0]}x{size[1]} frames "
                                  f"(data.frame_H x data.frame_W); the submission is {out_h}x{out_w}. Pass --resize to "
                                  f"resize its inputs to {size[0]}x{size[1]} and its predictions back (bilinear)")
        device = resolve_device(args.device)
        split = load_test_split(args.data)
    except (CheckpointError, ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads is None:
        choice = choose_threads(cfg.model.F_dim * size[0] * size[1])
        threads, why = choice.threads, f"{choice.why}; --threads sets it"
    else:
        threads, why = args.threads, "--threads"
    epoch = json.loads((ckpt / MANIFEST_FILE).read_text()).get("epoch")
    print(f"checkpoint {ckpt} (epoch {epoch}, frames {size[0]}x{size[1]}), on {device}, seed {args.seed}, "
          f"threads {threads} ({why})")
    print(f"test split {split.root}: {len(split)} sequences of {SEQ_FRAMES} frames"
          + (", with ground truth" if split.truth is not None else ""))
    if size != (out_h, out_w):
        print(f"resize: inputs {out_h}x{out_w} -> {size[0]}x{size[1]}, predictions back to {out_h}x{out_w} (bilinear)")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frames = predict_split(model.to(device), split, args.seed, size,
                               progress=lambda r: tqdm(r, desc="predict", unit="seq", dynamic_ncols=True))
    finally:
        torch.set_num_threads(before)  # a caller's own setting (the tests', a notebook's) comes back

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, seq in enumerate(frames):
        write_gif(out / f"pred_seq{i}.gif", seq)
        write_strip(out / f"pred_seq{i}.png", seq)
    start = time.perf_counter()
    rows = to_rows(frames)
    write_submission(out / SUBMISSION, rows)
    print(f"wrote {out / SUBMISSION} ({rows.shape[0]} rows x {1 + rows.shape[1]} columns, "
          f"{time.perf_counter() - start:.1f} s) and pred_seq0..{len(frames) - 1}.gif/.png "
          f"(strip frames {', '.join(map(str, strip_points(SEQ_FRAMES)))})")
    if split.truth is not None:
        score = score_rows(rows, truth_rows(split))
        val = _val_psnr(ckpt)
        record = {"submission": str(out / SUBMISSION), "checkpoint": str(ckpt), "seed": args.seed,
                  "threads": threads, "device": str(device), "val/psnr": val, **score.to_dict()}
        atomic_write(out / SCORE, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
        print(f"score against {split.root / 'test_gt'} (PSNR, data range 255) -> {out / SCORE}:")
        print("\n".join(report_lines(score)))
        if val is not None:
            print(f"  the checkpoint's val/psnr: {val:.3f} dB (its validation rollout, frames 1..T-1)")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
