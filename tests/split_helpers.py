"""Hand-made lab test splits and tiny checkpoints for the predict and score tests (written in ~1 s).

`write_split(root, n)` writes `root/test/{test_img,test_label,test_gt}/<i>/` in the lab's layout: a
square moving over a gradient (the true frames), a dot moving on white (the poses); every frame
differs from the one before, so the true frames never equal frame 0 after it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cvae.checkpoint import save_checkpoint
from cvae.config import Config
from cvae.model import CVAE

H, W, T = 32, 64, 630
TINY = {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16}


def true_frames(seq: int) -> np.ndarray:
    """(T, H, W, 3) uint8: sequence `seq`'s true video."""
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 3 + seq * 20, y * 6, np.full_like(x, 90 + seq * 30)], axis=-1).clip(0, 255).astype(np.uint8)
    out = np.repeat(base[None], T, axis=0)
    for t in range(T):
        r, c = (t // 7 + seq) % (H - 6), (t + 5 * seq) % (W - 6)
        out[t, r:r + 6, c:c + 6] = (250, 240 - (t % 50), 10 + (t % 40))
    return out


def poses(seq: int) -> np.ndarray:
    """(T, H, W, 3) uint8: white with a moving coloured dot."""
    out = np.full((T, H, W, 3), 255, dtype=np.uint8)
    for t in range(T):
        r, c = (t // 5 + 2 * seq) % (H - 3), (2 * t + seq) % (W - 3)
        out[t, r:r + 3, c:c + 3] = (255, 0, (t * 3) % 256)
    return out


def _save(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame{t}.png", compress_level=1)


def write_split(root: Path, n: int = 2, truth: bool = True) -> Path:
    """Write n sequences of a lab-layout test split under root/test (see the module docstring)."""
    for i in range(n):
        gt = true_frames(i)
        _save(root / "test" / "test_img" / str(i), gt[:1])
        _save(root / "test" / "test_label" / str(i), poses(i))
        if truth:
            _save(root / "test" / "test_gt" / str(i), gt)
    return root


def write_checkpoint(directory: Path, frame_H: int = H, frame_W: int = W, seed: int = 0,
                     model: dict[str, int] | None = None) -> Path:
    """A real checkpoint folder (config.json, state.pt, manifest.json) of a tiny untrained CVAE."""
    cfg = Config.from_dict({"model": model or TINY, "data": {"frame_H": frame_H, "frame_W": frame_W, "video_len": 4}})
    torch.manual_seed(seed)
    model = CVAE(cfg.model)
    return save_checkpoint(directory, {"epoch": 0, "model": model.state_dict()}, cfg, None)
