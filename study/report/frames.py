"""Predicted vs true frames of THE ranking's best run: its validation rollout rerun from the
checkpoint of the epoch its score comes from (cvae.evaluate), as a strip and an animation."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cvae.checkpoint import MANIFEST_FILE, STATE_FILE
from cvae.files import atomic_write_text
from study.tables import winner
from study.place import TABLES_DIR
from study.report.common import Ctx, esc, note, score_text, unit_of

log = logging.getLogger(__name__)

_STRIP_POINTS = 6  # time points in the frame strip
_GIF_FRAMES = 64  # at most this many frames in the rollout animation
_SCALE = 3  # pixel upscaling of the 32x64 frames


def _png(arr: np.ndarray) -> str:
    from PIL import Image

    img = Image.fromarray(arr).resize((arr.shape[1] * _SCALE, arr.shape[0] * _SCALE), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _gif(true: np.ndarray, pred: np.ndarray, frames: list[int]) -> str:
    from PIL import Image, ImageDraw

    h, w = true.shape[1:3]
    gap, bar = 4, 12
    images = []
    for i in frames:
        canvas = np.full((h + bar, 2 * w + gap, 3), 255, dtype=np.uint8)
        canvas[:h, :w] = true[i]
        canvas[:h, w + gap:] = pred[i]
        img = Image.fromarray(canvas)
        ImageDraw.Draw(img).text((2, h), f"t={i + 1}  true | predicted", fill=(0, 0, 0))
        images.append(img.resize((img.width * _SCALE, img.height * _SCALE), Image.NEAREST).convert("P", palette=Image.ADAPTIVE))
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0, optimize=True)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()


def rollout(ckpt: Path) -> dict[str, Any]:
    """Strip and animation of a checkpoint's validation rollout, as data: URIs (cached beside the tables)."""
    key = hashlib.sha256(str(ckpt.resolve()).encode() + (ckpt / MANIFEST_FILE).read_bytes()).hexdigest()[:16]
    cache = ckpt.parents[1] / TABLES_DIR / f"rollout-{key}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    pred, true = _predict(ckpt)
    n = true.shape[0]
    points = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(_STRIP_POINTS, n))})
    step = max(1, math.ceil(n / _GIF_FRAMES))
    manifest = json.loads((ckpt / MANIFEST_FILE).read_text())
    out = {"epoch": manifest.get("epoch"), "frames": n, "step": step,
           "strip": [{"t": i + 1, "true": _png(true[i]), "pred": _png(pred[i])} for i in points],
           "gif": _gif(true, pred, list(range(0, n, step)))}
    cache.parent.mkdir(exist_ok=True)
    for old in cache.parent.glob("rollout-*.json"):  # only the current best run's is worth keeping
        old.unlink(missing_ok=True)
    atomic_write_text(cache, json.dumps(out))
    return out


def _predict(ckpt: Path) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's validation rollout, predicted and true, as uint8 arrays (T-1, H, W, 3)."""
    if not (ckpt / STATE_FILE).is_file():  # checked before loading the dataset
        raise FileNotFoundError(f"{ckpt / STATE_FILE}: the model weights are missing")
    import torch

    from cvae.data import load_dataset
    from cvae.evaluate import load_model, predict_val

    model, cfg = load_model(ckpt)
    data = load_dataset(cfg.data)
    # One thread: a report runs beside busy trials, where OpenMP threads contend (the smoke rollout
    # took 22 s with 2 threads on a loaded 2-core machine, 0.5 s with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pred, true = predict_val(model, data, cfg.train.seed)  # (1, T-1, 3, H, W)
    finally:
        torch.set_num_threads(threads)

    def u8(x: torch.Tensor) -> np.ndarray:
        return (x[0].detach().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)

    return u8(pred), u8(true)


def frames_section(ctx: Ctx) -> str:
    """The rollout of THE ranking's best run, from the checkpoint of the epoch its score comes from."""
    best, metric = winner(ctx.summary), ctx.info.metric
    if best is None:
        return note("No trial has a score yet: the frames appear once one has.", "note-frames")
    run = (f"Trial {esc(best['best_trial_id'])} ({esc(best['setting'])}, seed {esc(best['best_seed'])}), the best run of "
           f"the best configuration: {esc(metric)} {esc(score_text(best['best_value'], unit=unit_of(metric)))} at epoch "
           f"{esc(best['best_epoch'])}")
    if best["best_checkpoint"] is None:
        return note(f"{run}; Tune did not keep the checkpoint of that epoch, so its frames cannot be shown.",
                     "note-frames")
    ckpt = ctx.study_dir / best["best_checkpoint"]
    try:
        out = rollout(ckpt)
    except Exception as e:  # noqa: BLE001 - a lost checkpoint or dataset costs only this section
        log.info("frames of %s not shown: %s", ckpt, e)
        return note(f"The best run's frames cannot be shown: its checkpoint {best['best_checkpoint']} or its dataset "
                     f"could not be loaded ({type(e).__name__}: {e}).", "note-frames")
    head = "".join(f"<th>t = {s['t']}</th>" for s in out["strip"])
    true = "".join(f'<td><img alt="true frame {s["t"]}" src="{s["true"]}"></td>' for s in out["strip"])
    pred = "".join(f'<td><img alt="predicted frame {s["t"]}" src="{s["pred"]}"></td>' for s in out["strip"])
    return (f"<p>{run}; frames from that epoch's checkpoint (<span id=\"frames-checkpoint\">"
            f"{esc(best['best_checkpoint'])}</span>, epoch {esc(out['epoch'])}), rerun from frame 0 and the poses with "
            "the run's own noise seed.</p>"
            f'<table class="strip" id="frame-strip"><thead><tr><th></th>{head}</tr></thead><tbody>'
            f"<tr><th>true</th>{true}</tr><tr><th>predicted</th>{pred}</tr></tbody></table>"
            f'<figure class="rollout"><img id="rollout-animation" alt="rollout animation: true (left) and predicted (right)" '
            f'src="{out["gif"]}"><figcaption>The rollout of all {esc(out["frames"])} predicted frames'
            f"{'' if out['step'] == 1 else ', every %dth shown' % out['step']}: true on the left, predicted on the right "
            f"({_SCALE}x enlarged).</figcaption></figure>")
