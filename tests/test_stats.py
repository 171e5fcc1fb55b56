"""Dataset statistics: each definition on hand-made videos with known answers, the command, and the
lab-style stand-in inside the lab's bands (issue 19)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvae import stats
from study_helpers import ROOT



def test_a_still_video_has_infinite_floors() -> None:
    frames = np.full((6, 4, 5, 3), 0.4)
    assert stats.hold_floor(frames) == math.inf and stats.copy_floor(frames) == math.inf
    assert stats.moving_pixels(frames) == 0.0 and stats.dancer_area(frames) == 0.0
    assert all(math.isnan(v) for v in stats.centroid_motion(frames))  # no dancer to follow


def test_a_one_pixel_step_has_the_exact_psnr() -> None:
    # 2x2 frames; from frame 1 on one pixel (all three channels) is 1 instead of 0:
    # MSE = 3 / 12 = 1/4 in every later frame, PSNR = 10 log10(4).
    frames = np.zeros((5, 2, 2, 3))
    frames[1:, 0, 0] = 1.0
    assert stats.hold_floor(frames) == pytest.approx(10 * math.log10(4), abs=1e-5)
    # copying the previous frame is exact from frame 2 on: +inf in the mean
    assert stats.copy_floor(frames) == math.inf


def test_a_ramp_gives_both_floors() -> None:
    # one pixel brightens by 0.1 a frame: consecutive frames differ by 0.1 there, frame t from frame
    # 0 by 0.1 t; MSE = (0.1 t)^2 * 3 / 12
    t = np.arange(8)
    frames = np.zeros((8, 2, 2, 3))
    frames[:, 1, 1] = 0.1 * t[:, None]
    per_frame = -10 * np.log10((0.1 * t[1:]) ** 2 / 4)
    assert stats.hold_floor(frames) == pytest.approx(per_frame.mean(), abs=1e-4)
    assert stats.copy_floor(frames) == pytest.approx(-10 * math.log10(0.01 / 4), abs=1e-4)


def test_moving_pixels_count_a_known_fraction() -> None:
    frames = np.full((10, 4, 5, 3), 0.5)
    for y, x in ((0, 0), (1, 3), (3, 4)):
        frames[::2, y, x, 1] += 0.2  # alternating by 0.2 in one channel: sd 0.1 > 0.05, moves
    frames[::2, 2, 2] += 0.08  # sd 0.04: does not
    assert stats.moving_pixels(frames) == pytest.approx(3 / 20)


def test_pose_ink_counts_pixels_whose_darkest_channel_is_under_0_9() -> None:
    labels = np.ones((2, 4, 5, 3))
    labels[0, 0, :3] = (1.0, 0.0, 0.5)  # 3 ink pixels
    labels[1, 2, 2] = (0.85, 1.0, 1.0)  # 1 more
    labels[1, 3, 3] = (0.95, 0.92, 1.0)  # faint: not ink
    assert stats.pose_ink(labels) == pytest.approx(4 / 40)


@pytest.mark.parametrize("width, px64", [(64, 1.0), (32, 2.0)])
def test_dancer_area_and_centroid_of_a_walking_pixel(width: int, px64: float) -> None:
    # a bright pixel walks right one pixel a frame over a flat grey frame: the per-pixel median is
    # the grey, so the dancer is that one pixel; the centroid moves 1 pixel a frame (in a 64-wide frame)
    frames = np.full((10, 4, width, 3), 0.5)
    for t in range(10):
        frames[t, 2, 3 + t] = 0.9
    assert stats.dancer_area(frames) == pytest.approx(1 / (4 * width))
    assert stats.centroid_motion(frames) == pytest.approx((px64, px64))
    assert stats.dancer_masks(frames)[4].sum() == 1 and stats.dancer_masks(frames)[4][2, 7]
    frames[:, 2, :] -= 0.1  # 0.1 from the median: not the dancer
    frames[5, 2, 8] = 0.5  # (the walker vanishes in frame 5 and is back at 9 in frame 6)
    median, _ = stats.centroid_motion(frames)
    assert median == pytest.approx(px64)  # the steps to and from the empty frame are left out


def test_mean_rgb() -> None:
    frames = np.zeros((2, 2, 2, 3))
    frames[..., 0], frames[0, ..., 1], frames[..., 2] = 1.0, 1.0, 0.25
    assert stats.mean_rgb(frames) == pytest.approx((1.0, 0.5, 0.25))


def test_bands_and_the_lab_reference() -> None:
    floor, ink, rgb = stats.STATISTICS["hold_floor"], stats.STATISTICS["pose_ink"], stats.STATISTICS["mean_rgb"]
    assert floor.in_band(29.7, 28.22) and not floor.in_band(29.8, 28.22)
    assert ink.in_band(0.029 * 1.49, 0.029) and ink.in_band(0.029 / 1.49, 0.029) and not ink.in_band(0.029 * 1.6, 0.029)
    assert stats.STATISTICS["moving_pixels"].in_band(0.125, 0.096) and not stats.STATISTICS["moving_pixels"].in_band(0.127, 0.096)
    assert rgb.in_band((0.6, 0.6, 0.6), (0.63, 0.62, 0.61)) and not rgb.in_band((0.6, 0.6, 0.55), (0.63, 0.62, 0.61))
    assert stats.lab_value("hold_floor", (32, 64), 300) == 23.26
    assert stats.lab_value("copy_floor", (32, 64), 300) is None  # the table gives it for 150 frames only
    assert stats.lab_value("pose_ink", (16, 32), 630) == 0.011  # ink does not depend on the length
    assert stats.lab_value("moving_pixels", (16, 32), 630) is None  # read as the 150-frame figure
    assert stats.lab_value("dancer_area", (16, 32), 630) is None
    assert set(k[0] for k in stats.LAB_REFERENCE) == set(stats.STATISTICS)


def _write_video_folder(root: Path, n_val: int = 12, h: int = 16, w: int = 32) -> Path:
    # a lab-layout folder whose validation video is a grey frame with a dark square stepping right
    for split, n in (("train", 2), ("val", n_val)):
        for kind in ("img", "label"):
            (root / split / f"{split}_{kind}").mkdir(parents=True)
        for t in range(n):
            img = np.full((h, w, 3), 160, np.uint8)
            img[6:10, 2 + t:6 + t] = 40
            label = np.full((h, w, 3), 255, np.uint8)
            label[8, 4 + t] = (255, 0, 0)
            Image.fromarray(img).save(root / split / f"{split}_img" / f"frame{t}.png")
            Image.fromarray(label).save(root / split / f"{split}_label" / f"frame{t}.png")
    return root


def test_the_command_prints_the_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write_video_folder(tmp_path / "ds")
    assert stats.main([str(root), "--frame-size", "16x32", "--val-frames", "6", "--val-frames", "12"]) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "floor: repeat frame 0" in out and "16x32" in out
    assert stats.main([str(root), "--frame-size", "16x32", "--val-frames", "12", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["statistic"]: r for r in doc["rows"]}
    assert {r["val_frames"] for r in doc["rows"]} == {12} and {r["frame_size"] for r in doc["rows"]} == {"16x32"}
    frames = np.stack([np.asarray(Image.open(root / "val" / "val_img" / f"frame{t}.png")) for t in range(12)]) / 255
    assert rows["hold_floor"]["value"] == pytest.approx(stats.hold_floor(frames))
    assert rows["pose_ink"]["value"] == pytest.approx(1 / 512)
    assert rows["hold_floor"]["lab"] is None  # the lab has no figure for 12 frames


def test_the_command_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stats.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path / "missing") in err and "\n" not in err
    (tmp_path / "flat").mkdir()
    assert stats.main([str(tmp_path / "flat")]) == 2
    assert "missing train folder" in capsys.readouterr().err
    root = _write_video_folder(tmp_path / "short", n_val=8)
    assert stats.main([str(root), "--val-frames", "150"]) == 2
    assert "has 8 frames, fewer than --val-frames 150" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_cvae_data_stats_is_the_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cvae.data", "stats", str(tmp_path / "nope"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: dataset root does not exist"


@pytest.mark.slow
def test_the_lab_style_stand_in_is_within_the_lab_bands() -> None:
    # the command's own path: written in the lab layout, read back by the loader, at both sizes
    rows = stats.synthetic_rows("lab", seed=0, sizes=stats.LAB_SIZES, lengths=stats.LAB_VAL_FRAMES)
    judged = [r for r in rows if r.lab is not None]
    assert {(r.size, r.val_frames) for r in judged} == {(s, n) for s in stats.LAB_SIZES for n in stats.LAB_VAL_FRAMES}
    out = [f"{r.stat} {r.size} {r.val_frames}: {r.value} vs {r.lab}" for r in judged if not r.in_band]
    assert not out, out
    assert all(math.isfinite(r.value) for r in rows if r.stat == "copy_floor")  # no two frames alike
