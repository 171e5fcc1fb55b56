"""The embedded default dataset, written in the lab's folder layout, in one of two styles.

`style = "bold"` (the default; the shipped studies are tuned on it) is the dancer below; `style =
"lab"` is a stand-in whose statistics are the lab's (cvae.synthetic_lab; cvae.stats measures both).
Besides train/ and val/, a dataset holds a test split as the lab's test phase has it, always at the
submission's 32x64: test/test_img/<i>/frame0.png (the first frame of sequence i), test/test_label/<i>/
frame0..629.png (its poses) and, which the lab keeps hidden, test/test_gt/<i>/frame0..629.png (its
frames). Every video of a dataset (test sequences included) is a new dance; the validation and test
videos are danced by the dancer of training video 0.

The bold style: each video is one dancer (COCO/OpenPose 18-joint skeleton) whose joint angles are sums of
sinusoids with a per-video tempo, phases and amplitudes. Every frame is rendered twice, aligned:
an RGB frame (clothed body on a non-flat background) and an OpenPose-style pose label (coloured
limbs and joint dots on white). Both are drawn at 4x resolution and box-downsampled, so edges are
anti-aliased. The same seed gives byte-identical PNGs; `cvae.data` reads the result like the real
dataset.

CLI: python -m cvae.synthetic [--out DIR] [--style bold|lab] [--seed S] [--frame-size HxW]
                              [--train-videos N] [--train-frames N] [--val-frames N] [--dancers K]
                              [--test-sequences N]
     prints the root it wrote (without --out: the cached dataset these keys give, generated if missing).
"""
from __future__ import annotations

import argparse
import dataclasses
import colorsys
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

from cvae.config import SYNTHETIC_STYLES, DataConfig
from cvae.submission import FRAME_SHAPE, SEQ_FRAMES

log = logging.getLogger(__name__)

# Bump when the rendering, the motion or the layout changes, so cached datasets of the old kind are
# not reused. 3: the test split, and the lab style.
FORMAT_VERSION = 3
MARKER = "complete.json"  # written last into a cached dataset: its presence means "complete"
SUPERSAMPLE = 4  # draw at this multiple of the frame size, then box-downsample (anti-aliasing)
LOCK_TIMEOUT_S = 600.0
TEST_SIZE: tuple[int, int] = FRAME_SHAPE[1:]  # (H, W): the test split is at the submission's size
# Video numbering within a seed (it seeds each video's generator): training video i is i.
VAL_TAG = 1_000_000
TEST_TAG = 2_000_000  # + i for test sequence i

# COCO-18 / OpenPose keypoint order.
JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
J = {name: i for i, name in enumerate(JOINT_NAMES)}
# OpenPose's body limbs (its limbSeq, 0-based) and its fixed colour wheel: limb i and joint i use COLORS[i].
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

# Driven degrees of freedom: (name, centre, half-range). Each is centre + half * tanh(sum of
# sinusoids), so it stays smooth and inside its range whatever the random amplitudes.
# Angles in radians from "hanging straight down", positive = away from the body's midline.
CHANNELS: tuple[tuple[str, float, float], ...] = (
    ("lean", 0.0, 0.18),  # torso tilt
    ("head", 0.0, 0.30),  # head tilt relative to the torso
    ("r_arm", 1.05, 1.00),  # upper arm raise
    ("r_elbow", 0.80, 0.80),  # forearm raise relative to the upper arm
    ("l_arm", 1.05, 1.00),
    ("l_elbow", 0.80, 0.80),
    ("r_thigh", 0.10, 0.15),  # leg spread
    ("r_knee", 0.55, 0.55),  # knee bend (plié: knee out, foot back in)
    ("l_thigh", 0.10, 0.15),
    ("l_knee", 0.55, 0.55),
    ("sway", 0.0, 0.06),  # hip side-to-side shift, body units
)
C = {name: i for i, (name, _, _) in enumerate(CHANNELS)}
HARMONICS = np.array([1.0, 2.0, 0.5])  # multiples of the beat; all periodic within 4 pi / omega
_CENTRE = np.array([c for _, c, _ in CHANNELS])
_HALF = np.array([h for _, _, h in CHANNELS])

# Body proportions in "body units" (standing height ~1), jittered per video.
_BONES = {
    "torso": 0.32, "shoulder": 0.105, "hip": 0.07, "upper_arm": 0.16, "forearm": 0.15,
    "thigh": 0.24, "shin": 0.23, "neck": 0.11, "head_r": 0.075,
}


@dataclass(frozen=True, eq=False)
class DancerParams:
    """Everything that makes one video's dancer: body, motion, placement and looks."""

    frame_H: int
    frame_W: int
    bones: dict[str, float]  # body proportions, body units
    omega: float  # beat angular frequency, rad per frame
    amps: np.ndarray  # (C, 3) amplitude of each channel's harmonics (pre-tanh)
    phases: np.ndarray  # (C, 3) their phases, rad
    scale: float  # pixels per body unit
    floor_y: float  # pixel row the lower foot stands on
    center_x: float  # pixel column of the hip centre, midpoint of the travel
    travel_amp: float  # pixels of horizontal travel either side of center_x
    travel_omega: float  # rad per frame
    travel_phase: float  # rad
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    wall_top: tuple[int, int, int]
    wall_bottom: tuple[int, int, int]
    floor: tuple[int, int, int]
    stripe_amp: float  # relative brightness of the soft wall stripes
    stripe_period: float  # pixels (frame resolution)
    stripe_phase: float


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _channels(t: np.ndarray, amps: np.ndarray, phases: np.ndarray, omega: float) -> np.ndarray:
    # t (...,) -> (..., C)
    theta = omega * t[..., None, None] * HARMONICS + phases  # (..., C, 3)
    raw = (amps * np.sin(theta)).sum(-1)
    return _CENTRE + _HALF * np.tanh(raw)


def _pose(t: np.ndarray, bones: dict[str, float], amps: np.ndarray, phases: np.ndarray,
          omega: float) -> tuple[np.ndarray, np.ndarray]:
    # t (...,) -> joints (..., 18, 2), head centre (..., 2), in body units: x from the hip-centre
    # column (before travel), y down from the floor (the lower foot at 0).
    v = _channels(t, amps, phases, omega)  # (..., C)
    ch = {name: v[..., i] for name, i in C.items()}
    b = bones

    def vec(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([x, y], -1)

    def seg(origin: np.ndarray, angle: np.ndarray, length: float, side: float) -> np.ndarray:
        # side -1 = image left (the dancer's right, as they face the camera)
        return origin + length * vec(side * np.sin(angle), np.cos(angle))

    lean = ch["lean"]
    up = vec(np.sin(lean), -np.cos(lean))  # torso axis, hip -> neck
    perp = vec(np.cos(lean), np.sin(lean))  # towards image right
    hipc = vec(ch["sway"], np.zeros_like(lean))
    neck = hipc + b["torso"] * up
    r_sh, l_sh = neck - b["shoulder"] * perp, neck + b["shoulder"] * perp
    r_el = seg(r_sh, ch["r_arm"], b["upper_arm"], -1.0)
    r_wr = seg(r_el, ch["r_arm"] + ch["r_elbow"], b["forearm"], -1.0)
    l_el = seg(l_sh, ch["l_arm"], b["upper_arm"], 1.0)
    l_wr = seg(l_el, ch["l_arm"] + ch["l_elbow"], b["forearm"], 1.0)
    r_hip, l_hip = hipc - b["hip"] * perp, hipc + b["hip"] * perp
    r_kn = seg(r_hip, ch["r_thigh"] + 0.5 * ch["r_knee"], b["thigh"], -1.0)
    r_an = seg(r_kn, ch["r_thigh"] - 0.5 * ch["r_knee"], b["shin"], -1.0)
    l_kn = seg(l_hip, ch["l_thigh"] + 0.5 * ch["l_knee"], b["thigh"], 1.0)
    l_an = seg(l_kn, ch["l_thigh"] - 0.5 * ch["l_knee"], b["shin"], 1.0)

    tilt = lean + ch["head"]
    hup = vec(np.sin(tilt), -np.cos(tilt))
    hperp = vec(np.cos(tilt), np.sin(tilt))
    r = b["head_r"]
    head = neck + b["neck"] * hup
    nose = head - 0.25 * r * hup
    r_eye, l_eye = head + 0.2 * r * hup - 0.4 * r * hperp, head + 0.2 * r * hup + 0.4 * r * hperp
    r_ear, l_ear = head + 0.05 * r * hup - 0.95 * r * hperp, head + 0.05 * r * hup + 0.95 * r * hperp

    pts = np.stack([nose, neck, r_sh, r_el, r_wr, l_sh, l_el, l_wr, r_hip, r_kn, r_an,
                    l_hip, l_kn, l_an, r_eye, l_eye, r_ear, l_ear], -2)  # (..., 18, 2)
    # The lower foot stands on the floor: knee bends lower the whole body.
    ground = np.maximum(r_an[..., 1], l_an[..., 1])[..., None]  # (..., 1)
    pts[..., 1] -= ground
    head[..., 1] -= ground[..., 0]
    return pts, head


def joints(t: float | np.ndarray, params: DancerParams) -> np.ndarray:
    """Joint positions (COCO-18 order, JOINT_NAMES) at frame time t, in frame pixel coordinates.

    t may be an array; returns (..., 18, 2) as (x, y) with x to the right and y down.
    """
    pts, _ = _pixels(np.asarray(t, dtype=np.float64), params)
    return pts


def _pixels(t: np.ndarray, p: DancerParams) -> tuple[np.ndarray, np.ndarray]:
    pts, head = _pose(t, p.bones, p.amps, p.phases, p.omega)
    x0 = p.center_x + p.travel_amp * np.sin(p.travel_omega * t + p.travel_phase)  # (...,)
    origin = np.stack([x0, np.full_like(x0, p.floor_y)], -1)
    return origin[..., None, :] + p.scale * pts, origin + p.scale * head


def make_params(rng: np.random.Generator, frame_H: int, frame_W: int) -> DancerParams:
    """Draw one video's dancer (body, motion, looks) and fit it inside the frame with a margin."""
    bones = {k: v * float(rng.uniform(0.93, 1.07)) for k, v in _BONES.items()}
    period = float(rng.uniform(18.0, 40.0))  # frames per beat
    omega = 2.0 * np.pi / period
    n = len(CHANNELS)
    amps = np.stack([rng.uniform(0.4, 1.4, n), rng.uniform(0.0, 0.6, n), rng.uniform(0.0, 0.5, n)], -1)
    phases = rng.uniform(0.0, 2.0 * np.pi, (n, 3))
    # Dance-like coupling: the limbs of a pair move in unison, in opposition, or freely.
    for a, b in (("r_arm", "l_arm"), ("r_elbow", "l_elbow"), ("r_knee", "l_knee"), ("r_thigh", "l_thigh")):
        mode = rng.integers(0, 3)
        if mode < 2:
            phases[C[b]] = phases[C[a]] + np.pi * mode
            amps[C[b]] = amps[C[a]]

    # Fit: the pose over one full period (the motion repeats every 4 pi / omega), padded by the
    # limb thickness and the head radius, must fit inside the frame minus the margin.
    t = np.linspace(0.0, 4.0 * np.pi / omega, 720, endpoint=False)
    pts, head = _pose(t, bones, amps, phases, omega)
    pad, hr = 0.05, bones["head_r"] + 0.01
    x_lo = min(pts[..., 0].min() - pad, head[:, 0].min() - hr)
    x_hi = max(pts[..., 0].max() + pad, head[:, 0].max() + hr)
    y_lo = min(pts[..., 1].min() - pad, head[:, 1].min() - hr)
    y_hi = pts[..., 1].max() + pad  # feet
    margin = max(1.0, 0.06 * min(frame_H, frame_W))
    scale = min((frame_H - 2 * margin) / (y_hi - y_lo), (frame_W - 2 * margin) / (x_hi - x_lo))
    scale *= float(rng.uniform(0.88, 1.0))
    floor_y = frame_H - margin - y_hi * scale
    lo, hi = margin - x_lo * scale, frame_W - margin - x_hi * scale  # allowed hip-centre columns
    travel_amp = max(0.0, (hi - lo) / 2) * float(rng.uniform(0.5, 1.0))

    skins = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36))
    hairs = ((30, 20, 15), (70, 45, 25), (20, 20, 20), (120, 80, 40), (210, 180, 100))
    wall_h = float(rng.uniform())
    wall_s, wall_v = float(rng.uniform(0.08, 0.35)), float(rng.uniform(0.55, 0.9))
    wall_top = _hsv(wall_h, wall_s, wall_v)
    wall_bottom = _hsv(wall_h + float(rng.uniform(-0.08, 0.08)), wall_s, wall_v * float(rng.uniform(0.6, 0.85)))
    floor = _hsv(float(rng.uniform()), float(rng.uniform(0.15, 0.5)), float(rng.uniform(0.3, 0.6)))
    # Clothes that stand out from the wall and floor behind them, or the dancer would vanish.
    shirt = _contrasting(rng, (0.55, 0.95), (0.6, 0.95), (wall_top, wall_bottom))
    trousers = _contrasting(rng, (0.3, 0.8), (0.15, 0.45), (wall_bottom, floor))
    return DancerParams(
        frame_H=frame_H, frame_W=frame_W, bones=bones, omega=omega, amps=amps, phases=phases,
        scale=float(scale), floor_y=float(floor_y), center_x=float((lo + hi) / 2), travel_amp=float(travel_amp),
        travel_omega=2.0 * np.pi / float(rng.uniform(150.0, 400.0)), travel_phase=float(rng.uniform(0, 2 * np.pi)),
        skin=skins[rng.integers(len(skins))], hair=hairs[rng.integers(len(hairs))],
        shirt=shirt, trousers=trousers, shoes=_hsv(0.0, 0.0, float(rng.choice([0.08, 0.9]))),
        wall_top=wall_top, wall_bottom=wall_bottom, floor=floor,
        stripe_amp=float(rng.uniform(0.03, 0.10)), stripe_period=float(rng.uniform(5.0, 16.0)),
        stripe_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def _contrasting(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float],
                 against: tuple[tuple[int, int, int], ...], min_dist: float = 120.0) -> tuple[int, int, int]:
    # Redraw (a bounded number of times, so it stays deterministic) until the colour is far
    # enough (RGB L1 distance) from every colour it is seen against.
    best, best_d = (0, 0, 0), -1.0
    for _ in range(32):
        c = _hsv(float(rng.uniform()), float(rng.uniform(*sat)), float(rng.uniform(*val)))
        d = min(float(np.abs(np.subtract(c, a)).sum()) for a in against)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


LOOKS = ("skin", "hair", "shirt", "trousers", "shoes", "wall_top", "wall_bottom", "floor",
         "stripe_amp", "stripe_period", "stripe_phase")


def _tag(video: int | str) -> int:
    # train video i -> i, "val" -> VAL_TAG, "test<i>" -> TEST_TAG + i
    if isinstance(video, int):
        return video
    if video == "val":
        return VAL_TAG
    if video.startswith("test") and video[4:].isdigit():
        return TEST_TAG + int(video[4:])
    raise ValueError(f"video must be a training video number, 'val' or 'test<i>', got {video!r}")


def video_params(seed: int, video: int | str, frame_H: int = 32, frame_W: int = 64,
                 dancers: int = 0) -> DancerParams:
    """The dancer of one video: train video i (int), "val" or test sequence "test<i>"; independent of
    the other videos' count.

    dancers = 0: every training video has its own dancer (body, clothes, room). dancers = K >= 1:
    training video i is danced by dancer i mod K (that dancer's body, clothes and room), each video
    still with its own dance (tempo, moves, travel, framing).
    The validation video and the test sequences are new dances (their own tempo, moves and travel)
    by the dancer of training video 0, in the same clothes and room, as the lab's validation clip
    shows the same dancer as its training clips: what is tested is predicting new motion, not new
    colours.
    """
    tag = _tag(video)
    if isinstance(video, int):
        own = make_params(np.random.default_rng([seed, tag]), frame_H, frame_W)
        if dancers == 0 or video < dancers:
            return own
        dancer = video_params(seed, video % dancers, frame_H, frame_W)
        return dataclasses.replace(own, **{k: getattr(dancer, k) for k in LOOKS})
    own = make_params(np.random.default_rng([seed, tag]), frame_H, frame_W)
    looks = video_params(seed, 0, frame_H, frame_W)
    return dataclasses.replace(own, **{k: getattr(looks, k) for k in LOOKS})


def background(p: DancerParams) -> np.ndarray:
    """The video's static background at SUPERSAMPLE x the frame size: (H*S, W*S, 3) uint8."""
    S = SUPERSAMPLE
    Hs, Ws = p.frame_H * S, p.frame_W * S
    y = (np.arange(Hs, dtype=np.float64)[:, None] + 0.5) / S  # frame pixels, (Hs, 1)
    x = (np.arange(Ws, dtype=np.float64)[None, :] + 0.5) / S  # (1, Ws)
    top, bottom = np.array(p.wall_top, float), np.array(p.wall_bottom, float)
    wall = top + (bottom - top) * (y / p.frame_H)[..., None]  # (Hs, 1, 3) vertical gradient
    stripes = 1.0 + p.stripe_amp * np.sin(2 * np.pi * x / p.stripe_period + p.stripe_phase)
    img = wall * stripes[..., None]  # (Hs, Ws, 3)
    # The floor band starts a little above the feet line (seen slightly from above), darkening downwards.
    floor_top = p.floor_y - 0.12 * p.scale
    depth = np.clip((y - floor_top) / max(p.frame_H - floor_top, 1e-6), 0.0, 1.0)  # (Hs, 1)
    floor = np.array(p.floor, float) * (1.0 - 0.3 * depth)[..., None]  # (Hs, 1, 3)
    on_floor = (y >= floor_top)[..., None]
    img = np.where(on_floor, np.broadcast_to(floor, img.shape), img)
    skirting = (y >= floor_top - 0.5) & (y < floor_top)  # a thin darker line where wall meets floor
    img = np.where(skirting[..., None], img * 0.7, img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _limb(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, width: float, color: tuple[int, int, int]) -> None:
    # A thick segment with round caps (PIL lines have square ends).
    w = max(1, int(round(width)))
    draw.line([tuple(a), tuple(b)], fill=color, width=w)
    r = width / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def render_frame(t: float, p: DancerParams, bg: Image.Image | None = None) -> Image.Image:
    """The RGB frame at time t (frame_W x frame_H), bg being `background(p)` as a PIL image."""
    pts, head = _pixels(np.asarray(float(t)), p)
    return _draw_frame(pts, head, p, bg if bg is not None else Image.fromarray(background(p)))


def _draw_frame(pts: np.ndarray, head: np.ndarray, p: DancerParams, bg: Image.Image) -> Image.Image:
    # pts (18, 2), head (2,) in frame pixels
    S = SUPERSAMPLE
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    P, head = pts * S, head * S  # supersampled pixels
    u = p.scale * S  # supersampled pixels per body unit
    darker = tuple(int(c * 0.8) for c in p.floor)
    hip_x = (P[J["r_hip"], 0] + P[J["l_hip"], 0]) / 2
    floor = p.floor_y * S
    draw.ellipse([hip_x - 0.22 * u, floor - 0.025 * u, hip_x + 0.22 * u, floor + 0.035 * u], fill=darker)  # shadow

    for hip, knee, ankle in (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle")):
        _limb(draw, P[J[hip]], P[J[knee]], 0.095 * u, p.trousers)
        _limb(draw, P[J[knee]], P[J[ankle]], 0.08 * u, p.trousers)
        ax, ay = P[J[ankle]]
        side = -1.0 if hip == "r_hip" else 1.0
        toe = ax + side * 0.02 * u  # shoes point slightly outwards
        draw.ellipse([toe - 0.05 * u, ay - 0.02 * u, toe + 0.05 * u, ay + 0.035 * u], fill=p.shoes)
    # Torso: shoulders to hips, slightly widened so the limbs join it.
    rs, ls, rh, lh = P[J["r_shoulder"]], P[J["l_shoulder"]], P[J["r_hip"]], P[J["l_hip"]]
    draw.polygon([tuple(rs), tuple(ls), tuple(lh + (lh - rh) * 0.25), tuple(rh - (lh - rh) * 0.25)], fill=p.shirt)
    _limb(draw, rh, lh, 0.08 * u, p.trousers)  # waistband
    _limb(draw, rs, ls, 0.07 * u, p.shirt)  # round shoulders
    _limb(draw, P[J["neck"]], head, 0.06 * u, p.skin)
    for sh, el, wr in (("r_shoulder", "r_elbow", "r_wrist"), ("l_shoulder", "l_elbow", "l_wrist")):
        _limb(draw, P[J[sh]], P[J[el]], 0.07 * u, p.shirt)
        _limb(draw, P[J[el]], P[J[wr]], 0.055 * u, p.skin)
        x, y = P[J[wr]]
        r = 0.04 * u
        draw.ellipse([x - r, y - r, x + r, y + r], fill=p.skin)
    r = p.bones["head_r"] * u
    hx, hy = head
    draw.ellipse([hx - r * 1.05, hy - r * 1.15, hx + r * 1.05, hy + r * 0.55], fill=p.hair)  # hair behind
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=p.skin)
    draw.chord([hx - r, hy - r * 1.1, hx + r, hy + r * 0.9], 180, 360, fill=p.hair)  # fringe on top
    return img.reduce(S)


def render_label(t: float, p: DancerParams) -> Image.Image:
    """The OpenPose-style pose image at time t: coloured limbs and joint dots on white."""
    return _draw_label(joints(float(t), p), p)


def _draw_label(pts: np.ndarray, p: DancerParams) -> Image.Image:
    # pts (18, 2) in frame pixels
    S = SUPERSAMPLE
    img = Image.new("RGB", (p.frame_W * S, p.frame_H * S), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    P = pts * S  # supersampled pixels
    # Line width ~1.2 frame pixels at the lab's 32x64, scaled with the frame.
    width = max(S, 0.045 * p.scale * S)
    for i, (a, b) in enumerate(LIMBS):
        draw.line([tuple(P[a]), tuple(P[b])], fill=COLORS[i], width=int(round(width)))
    r = 0.6 * width
    for k, (x, y) in enumerate(P):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=COLORS[k])
    return img.reduce(S)


def _save(img: Image.Image, path: Path) -> None:
    # Fixed options and no metadata: same pixels, same bytes.
    img.save(path, format="PNG", compress_level=1, optimize=False)


def _bold_video(p: DancerParams, n_frames: int) -> Iterator[tuple[Image.Image, Image.Image]]:
    bg = Image.fromarray(background(p))
    pts, head = _pixels(np.arange(n_frames, dtype=np.float64), p)  # (T, 18, 2), (T, 2): one numpy pass
    for k in range(n_frames):
        yield _draw_frame(pts[k], head[k], p, bg), _draw_label(pts[k], p)


def video_frames(style: str, seed: int, video: int | str, frame_H: int, frame_W: int, n_frames: int,
                 dancers: int = 0) -> Iterator[tuple[Image.Image, Image.Image]]:
    """(frame, pose image) of one video in order, as PIL RGB images of frame_W x frame_H.

    video: train video i (int), "val" or "test<i>"; dancers: see `video_params` (the lab style has
    one person in every video, so it ignores it)."""
    if style == "bold":
        yield from _bold_video(video_params(seed, video, frame_H, frame_W, dancers), n_frames)
        return
    if style != "lab":
        raise ValueError(f"style must be one of {', '.join(SYNTHETIC_STYLES)}, got {style!r}")
    from cvae import synthetic_lab  # it imports the skeleton from here

    frames, labels = synthetic_lab.video(seed, _tag(video), frame_H, frame_W, n_frames)
    for frame, label in zip(frames, labels):
        yield Image.fromarray(frame), Image.fromarray(label)


def _write_video(pairs: Iterable[tuple[Image.Image, Image.Image]], first: int, img_dir: Path, label_dir: Path) -> None:
    for k, (frame, label) in enumerate(pairs):
        name = f"frame{first + k}.png"
        _save(frame, img_dir / name)
        _save(label, label_dir / name)


def _link_tree(src: Path, dst: Path) -> None:
    # A copy of src's files as hard links (no time, no disk), or plain copies across file systems.
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copyfile(a, b)

    shutil.copytree(src, dst, copy_function=link)


def _write_test_split(tmp: Path, style: str, seed: int, sequences: int) -> None:
    # test/test_img/<i>/frame0.png, test/test_label/<i>/frame0..629.png, test/test_gt/<i>/frame0..629.png
    h, w = TEST_SIZE
    for i in range(sequences):
        first, poses, truth = (tmp / "test" / kind / str(i) for kind in ("test_img", "test_label", "test_gt"))
        for d in (first, poses, truth):
            d.mkdir(parents=True)
        _write_video(video_frames(style, seed, f"test{i}", h, w, SEQ_FRAMES), 0, truth, poses)
        shutil.copyfile(truth / "frame0.png", first / "frame0.png")


def write_dataset(out: str | Path, seed: int = 0, train_videos: int = 8, train_frames: int = 128,
                  val_frames: int = 630, frame_H: int = 32, frame_W: int = 64, dancers: int = 0,
                  style: str = "bold", test_sequences: int = DataConfig.synthetic_test_sequences,
                  test_from: Path | None = None) -> Path:
    """Write a synthetic dataset in the lab layout under `out` and return `out`.

    Train frames are numbered 0..train_videos*train_frames-1, video after video; the validation
    split is one further video of `val_frames` frames; the test split has `test_sequences`
    sequences of 630 frames at 32x64 (see the module's docstring), or is `test_from` (a test/ folder
    written for the same style, seed and count) linked in. dancers: see `video_params`.
    Everything is written into a temporary folder beside `out` and renamed at the end, so `out` is
    either absent or complete. Raises FileExistsError if `out` exists and is not empty.
    """
    for name, v, lo in (("train_videos", train_videos, 1), ("train_frames", train_frames, 1),
                        ("val_frames", val_frames, 1), ("frame_H", frame_H, 8), ("frame_W", frame_W, 8),
                        ("dancers", dancers, 0), ("test_sequences", test_sequences, 0)):
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    if style not in SYNTHETIC_STYLES:
        raise ValueError(f"style must be one of {', '.join(SYNTHETIC_STYLES)}, got {style!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not empty; not overwriting it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        dirs = {}
        for split in ("train", "val"):
            for kind in ("img", "label"):
                d = tmp / split / f"{split}_{kind}"
                d.mkdir(parents=True)
                dirs[split, kind] = d
        for v in range(train_videos):
            _write_video(video_frames(style, seed, v, frame_H, frame_W, train_frames, dancers),
                         v * train_frames, dirs["train", "img"], dirs["train", "label"])
        _write_video(video_frames(style, seed, "val", frame_H, frame_W, val_frames), 0, dirs["val", "img"], dirs["val", "label"])
        if test_from is not None and test_sequences:
            _link_tree(test_from, tmp / "test")
        else:
            _write_test_split(tmp, style, seed, test_sequences)
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename cannot replace a directory on every OS
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote synthetic dataset %s (%s style): %d train videos x %d frames + %d val frames at %dx%d, "
             "%d test sequences in %.2f s", out, style, train_videos, train_frames, val_frames, frame_H, frame_W,
             test_sequences, time.perf_counter() - t0)
    return out


def _spec(cfg: DataConfig) -> dict[str, int | str]:
    # write_dataset's arguments for cfg (also the cache key and the marker's content). Whole
    # sequences only, so no training sequence spans two videos.
    train_frames = cfg.synthetic_train_frames // cfg.video_len * cfg.video_len
    return {"seed": cfg.synthetic_seed, "train_videos": cfg.synthetic_train_videos, "train_frames": train_frames,
            "val_frames": cfg.val_video_len, "frame_H": cfg.frame_H, "frame_W": cfg.frame_W,
            # the lab style has one person whatever the key says: one cache for every value
            "dancers": cfg.synthetic_dancers if cfg.synthetic_style == "bold" else 0,
            "style": cfg.synthetic_style, "test_sequences": cfg.synthetic_test_sequences}


def cache_root(cfg: DataConfig) -> Path:
    """The cache folder: cfg.cache_dir, else $CVAE_CACHE, else ~/.cache/cvae-study."""
    base = cfg.cache_dir or os.environ.get("CVAE_CACHE") or Path.home() / ".cache" / "cvae-study"
    return Path(base).expanduser().resolve()


def dataset_dir(cfg: DataConfig) -> Path:
    """Where `ensure_dataset(cfg)` keeps this configuration's dataset (it may not exist yet)."""
    spec = _spec(cfg)
    key = json.dumps({"format": FORMAT_VERSION, **spec}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    kind = "dancer" if spec["style"] == "bold" else str(spec["style"])
    return cache_root(cfg) / f"{kind}-s{spec['seed']}-{spec['frame_H']}x{spec['frame_W']}-{digest}"


def _ensure(out: Path, write: Callable[[Path], object], record: dict[str, Any]) -> Path:
    # `out`, made by write(out) on first use under a file lock; complete once its marker (holding
    # `record`) exists, so a crash's leftovers are removed and redone.
    marker = out / MARKER
    if marker.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f"{out.name}.lock"), timeout=LOCK_TIMEOUT_S):
        if marker.is_file():  # another process made it while we waited
            return out
        # Leftovers of a crashed generation: nobody else writes under this name while we hold the lock.
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if out.exists():
            log.warning("removing incomplete synthetic dataset %s (no %s)", out, MARKER)
            shutil.rmtree(out)
        log.info("generating synthetic data into %s", out)
        write(out)
        tmp_marker = out / f".{MARKER}.tmp"
        tmp_marker.write_text(json.dumps({"format": FORMAT_VERSION, **record}, sort_keys=True, indent=1) + "\n")
        os.replace(tmp_marker, marker)  # last, and atomic
    return out


def _shared_test_split(cfg: DataConfig) -> Path:
    # The test split depends on the style, the seed and the count only (it is always 32x64): made once
    # in the cache and linked into every dataset that has it, so other sizes cost no time or disk.
    key = {"style": cfg.synthetic_style, "seed": cfg.synthetic_seed, "test_sequences": cfg.synthetic_test_sequences}
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root(cfg) / f"test-{cfg.synthetic_style}-s{cfg.synthetic_seed}-n{cfg.synthetic_test_sequences}-{digest}"

    def write(d: Path) -> None:
        d.mkdir(parents=True)
        _write_test_split(d, cfg.synthetic_style, cfg.synthetic_seed, cfg.synthetic_test_sequences)

    return _ensure(out, write, key)


def ensure_dataset(cfg: DataConfig) -> Path:
    """Return the root of the synthetic dataset for `cfg`, generating it on first use.

    Safe to call from several processes at once: one generates under a file lock, the others
    wait and then reuse it. A dataset counts as complete only once its marker file exists.
    """
    spec = _spec(cfg)
    test_from = _shared_test_split(cfg) / "test" if cfg.synthetic_test_sequences else None
    return _ensure(dataset_dir(cfg), lambda out: write_dataset(out, **spec, test_from=test_from), spec)  # type: ignore[arg-type]


def frame_size(text: str) -> tuple[int, int]:
    """Parse "HxW" (e.g. "32x64") into (H, W); an argparse type, so a bad one is a usage error."""
    h, sep, w = text.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit()) or int(h) < 8 or int(w) < 8:
        raise argparse.ArgumentTypeError(f"frame size must be HxW with H, W >= 8 (e.g. 32x64), got {text!r}")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cvae.synthetic", description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="dataset folder to create (must not exist, or be empty)")
    where.add_argument("--config", help="a single-run TOML: its [data]'s embedded dataset, in the cache "
                                        "(generated if missing); the other keys are then unused")
    ap.add_argument("--style", choices=SYNTHETIC_STYLES, default="bold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-videos", type=int, default=8)
    ap.add_argument("--train-frames", type=int, default=128, help="frames per training video")
    ap.add_argument("--val-frames", type=int, default=630)
    ap.add_argument("--frame-size", type=frame_size, help="HxW, e.g. 32x64 (instead of --height and --width)")
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--dancers", type=int, default=0, help="distinct dancers over the training videos (0 = one per "
                                                           "video; bold style only)")
    ap.add_argument("--test-sequences", type=int, default=DataConfig.synthetic_test_sequences,
                    help="test sequences of 630 frames at 32x64 (0 = no test split)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.config is not None:
        from cvae.config import ConfigError, load_config

        try:
            data = load_config(a.config).data
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if not data.synthetic:
            print(f"error: {a.config}: data.root is set ({data.root}): that config reads a dataset, not the embedded one",
                  file=sys.stderr)
            return 2
        out = ensure_dataset(data)
        print(f"embedded dataset of {a.config} ({data.synthetic_style} style) ready in {time.perf_counter() - t0:.2f} s",
              file=sys.stderr)
        print(out)
        return 0
    h, w = a.frame_size or (a.height, a.width)
    try:
        out = write_dataset(a.out, seed=a.seed, train_videos=a.train_videos, train_frames=a.train_frames,
                            val_frames=a.val_frames, frame_H=h, frame_W=w, dancers=a.dancers, style=a.style,
                            test_sequences=a.test_sequences)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_train = a.train_videos * a.train_frames
    # The summary on stderr, the root alone on stdout: ROOT=$(python -m cvae.synthetic --out DIR)
    print(f"wrote {a.style}-style {n_train} train ({a.train_videos} videos x {a.train_frames}) + {a.val_frames} val "
          f"frame/label pairs at {h}x{w}, {a.test_sequences} test sequences at {TEST_SIZE[0]}x{TEST_SIZE[1]}, "
          f"in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
