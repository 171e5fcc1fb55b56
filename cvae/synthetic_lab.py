"""The lab-style stand-in (`[data] synthetic_style = "lab"`): one small person in one grey studio.

What the lab's own data looks like (issue 19), and what this draws: one person, the same in every
video (dark trousers, blue-grey shirt), small in the frame, in a bare grey studio lit from the top
and centre, a static camera; each video puts the person at its own place across the width, and the
person does slow, varied moves (an arm rises, arms out or up, a turn, a lunge, a crouch) and steps
slowly from place to place. The pose images are thin OpenPose-style skeleton lines on white.

Learnable by construction: a frame is a function of its pose (the skeleton the label draws, the
fixed look, the static lighting) plus camera noise, so the previous frame and the pose say all there
is to say about the next frame. The noise (sd NOISE_LEVELS at 32x64) is what the lab's copy floor
implies; it also keeps two frames from ever being equal (a copy floor of +inf).

Its numbers were tuned to issue 19's table with `cvae.stats` (see tests/test_stats.py for the
bands); the constants below are those numbers. Frames are drawn at the requested size natively: on a
canvas a few times larger, then reduced by the bilinear filter the loader resizes the lab's files
with. Deterministic per (seed, video).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from cvae.synthetic import COLORS, J, LIMBS  # the OpenPose skeleton both styles draw

# Pose channels of the lab-style person, each a smooth function of time.
CHANNELS: tuple[str, ...] = ("dx", "crouch", "lunge", "lean", "yaw", "r_arm", "l_arm", "r_elbow", "l_elbow", "head")
K = {name: i for i, name in enumerate(CHANNELS)}
# Body proportions in body units (standing height ~0.95): one person, the same in every video.
BONES = {"torso": 0.30, "shoulder": 0.105, "hip": 0.07, "upper_arm": 0.16, "forearm": 0.15,
         "thigh": 0.245, "shin": 0.235, "neck": 0.10, "head_r": 0.065}

SCALE = 0.76  # pixels per body unit, as a fraction of the frame height
FLOOR = 0.90  # the row the feet stand on, as a fraction of the frame height
# Motion, in frames and body units. The opening is calm (one arm rises while the person starts to
# step away), which is what gives the lab's high 150-frame floor; afterwards the person never stands
# where it started, which is what makes the longer floors fall to the lab's.
OPENING = (50.0, 70.0)  # frames to the first pose keyframe
GAP = (40.0, 90.0)  # frames between later pose keyframes
DEPART = (15.0, 30.0)  # the frame the first step away starts
SPEED = (0.0012, 0.0014)  # stepping speed, body units per frame (~0.03 px/frame at 32x64)
PAUSE = (40.0, 120.0)  # frames standing at a place before the next step
AWAY = 0.25  # every later place is at least this far from the video's first
ROAM = 0.6  # ... and at most this far
CROUCH = (0.4, 0.9)
LUNGE = (0.4, 0.9)
FIRST_ARM = (1.0, 1.4)  # rad: the opening's arm raise
ARMS = ("down", "out", "up", "one")
ARMS_P = (0.2, 0.3, 0.2, 0.3)
# Looks (RGB 0..255). The shirt sits ~0.15 from the wall in its reddest channel, as the lab's
# blue-grey shirt does, so its pixels hover at cvae.stats' dancer threshold (the lab's jumpy centroid).
SHIRT, TROUSERS = (128, 136, 153), (48, 48, 56)
SKIN, HAIR, SHOES = (205, 165, 140), (40, 32, 28), (30, 30, 32)
WALL = (170, 167, 163)
LIGHT_Y, LIGHT_X = 0.10, 0.07  # the lighting's brightening towards the top, and towards the centre
NOISE_LEVELS = 1.5  # camera noise sd at 32x64, in levels of 255; scaled by H/32 (an area average)
LINE = 0.25 / 32  # pose line width, as a fraction of the frame height ...
INK = 0.87  # ... drawn at this strength (a thinner line than the canvas can draw)
FRAME_CANVAS, LABEL_CANVAS = 128, 128  # least canvas heights the frame and label are drawn on


def _relaxed(rng: np.random.Generator) -> np.ndarray:
    v = np.zeros(len(CHANNELS))
    v[K["r_arm"]], v[K["l_arm"]] = rng.uniform(0.1, 0.3, 2)
    v[K["r_elbow"]], v[K["l_elbow"]] = rng.uniform(0.05, 0.3, 2)
    return v


def _keyframe(rng: np.random.Generator, first: bool) -> np.ndarray:
    # (C,) the next pose keyframe: the opening's arm raise, else a whole-body move with an arm posture
    v = _relaxed(rng)
    if first:
        v[K[str(rng.choice(["r_arm", "l_arm"]))]] = rng.uniform(*FIRST_ARM)
        v[K["lean"]] += rng.uniform(-0.04, 0.04)
        return v
    kind = rng.choice(["crouch", "lunge", "stand", "turn"])
    if kind == "crouch":
        v[K["crouch"]] = rng.uniform(*CROUCH)
    elif kind == "lunge":
        v[K["lunge"]] = rng.choice([-1, 1]) * rng.uniform(*LUNGE)
        v[K["lean"]] = 0.1 * np.sign(v[K["lunge"]])
    elif kind == "turn":
        v[K["yaw"]] = rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)
        v[K["crouch"]] = rng.uniform(0, CROUCH[0])
    arms = rng.choice(ARMS, p=ARMS_P)
    if arms == "out":
        v[K["r_arm"]], v[K["l_arm"]] = rng.uniform(0.8, 1.5, 2)
    elif arms == "up":
        v[K["r_arm"]] = v[K["l_arm"]] = rng.uniform(2.2, 2.8)
    elif arms == "one":
        v[K[str(rng.choice(["r_arm", "l_arm"]))]] = rng.uniform(1.0, 2.6)
    v[K["lean"]] += rng.uniform(-0.05, 0.05)
    v[K["head"]] = rng.uniform(-0.15, 0.15)
    return v


def _ease(keys_t: np.ndarray, keys_v: np.ndarray, ts: np.ndarray) -> np.ndarray:
    # keyframes (K,), (K, C) -> (T, C) at times ts, joined by a cosine ease (no jerk at a keyframe)
    i = np.clip(np.searchsorted(keys_t, ts, side="right") - 1, 0, len(keys_t) - 2)
    u = np.clip((ts - keys_t[i]) / (keys_t[i + 1] - keys_t[i]), 0.0, 1.0)
    e = 0.5 - 0.5 * np.cos(np.pi * u)
    return keys_v[i] + (keys_v[i + 1] - keys_v[i]) * e[:, None]


def motion(rng: np.random.Generator, n: int, dx_range: tuple[float, float]) -> np.ndarray:
    """(n, C) pose channels of one video: pose keyframes and places to stand, each joined by a
    smooth ease, plus a slow sway that never stops. dx_range: the offsets (body units) from the
    video's first place that keep the person inside the frame."""
    keys_t, keys_v = [0.0], [_relaxed(rng)]
    t = 0.0
    while t < n + 1:
        first = len(keys_t) == 1
        t += rng.uniform(*(OPENING if first else GAP))
        keys_t.append(t)
        keys_v.append(_keyframe(rng, first))
    ts = np.arange(n, dtype=np.float64)
    out = _ease(np.array(keys_t), np.stack(keys_v), ts)
    # Places: a first step away, then from place to place, never back within AWAY of the start.
    lo, hi = dx_range
    st_t, st_x = [0.0], [0.0]
    x, t = 0.0, rng.uniform(*DEPART)
    st_t.append(t)
    st_x.append(0.0)
    while t < n + 1:
        nx = rng.choice([-1, 1]) * rng.uniform(AWAY, ROAM)
        if abs(nx - x) < 0.15:
            nx = -nx
        if not lo <= nx <= hi:
            nx = -nx if lo <= -nx <= hi else float(np.clip(nx, lo, hi))
        t += max(abs(nx - x), 0.05) / rng.uniform(*SPEED)
        st_t += [t, t + rng.uniform(*PAUSE)]
        st_x += [nx, nx]
        t = st_t[-1]
        x = nx
    out[:, K["dx"]] = _ease(np.array(st_t), np.array(st_x)[:, None], ts)[:, 0]
    ph = rng.uniform(0, 2 * np.pi, 4)
    out[:, K["lean"]] += 0.02 * np.sin(2 * np.pi * ts / 97 + ph[0])
    out[:, K["r_arm"]] += 0.04 * np.sin(2 * np.pi * ts / 61 + ph[1])
    out[:, K["l_arm"]] += 0.04 * np.sin(2 * np.pi * ts / 73 + ph[2])
    out[:, K["head"]] += 0.05 * np.sin(2 * np.pi * ts / 89 + ph[3])
    return out


def skeleton(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C,) pose channels -> joints (18, 2) in COCO-18 order and the head centre (2,), in body units:
    x to the right of the first place's hip centre, y down, the lower foot at 0."""
    ch = {name: float(v[K[name]]) for name in CHANNELS}
    b = BONES
    w = max(0.35, math.cos(ch["yaw"] * math.pi / 2))  # widths shrink as the body turns
    lean = ch["lean"]
    up, perp = np.array([math.sin(lean), -math.cos(lean)]), np.array([math.cos(lean), math.sin(lean)])
    hipc = np.array([ch["dx"], 0.0])
    neck = hipc + b["torso"] * up

    def seg(o: np.ndarray, ang: float, length: float, side: float, sx: float = 1.0) -> np.ndarray:
        # side -1 = image left (the person's right, facing the camera)
        return o + length * np.array([side * sx * math.sin(ang), math.cos(ang)])

    r_sh, l_sh = neck - b["shoulder"] * w * perp, neck + b["shoulder"] * w * perp
    sx = 0.5 + 0.5 * w
    r_el = seg(r_sh, ch["r_arm"], b["upper_arm"], -1, sx)
    r_wr = seg(r_el, ch["r_arm"] + ch["r_elbow"], b["forearm"], -1, sx)
    l_el = seg(l_sh, ch["l_arm"], b["upper_arm"], 1, sx)
    l_wr = seg(l_el, ch["l_arm"] + ch["l_elbow"], b["forearm"], 1, sx)
    r_hip, l_hip = hipc - b["hip"] * w * perp, hipc + b["hip"] * w * perp
    bend, lu = 1.3 * ch["crouch"], ch["lunge"]
    r_out, l_out = 0.06 + 0.55 * max(0.0, -lu), 0.06 + 0.55 * max(0.0, lu)  # the lunging leg steps out
    r_kb, l_kb = bend + max(0.0, -lu), bend + max(0.0, lu)
    r_kn = seg(r_hip, r_out + 0.5 * r_kb, b["thigh"], -1)
    r_an = seg(r_kn, r_out - 0.5 * r_kb, b["shin"], -1)
    l_kn = seg(l_hip, l_out + 0.5 * l_kb, b["thigh"], 1)
    l_an = seg(l_kn, l_out - 0.5 * l_kb, b["shin"], 1)
    tilt = lean + ch["head"]
    hup, hperp = np.array([math.sin(tilt), -math.cos(tilt)]), np.array([math.cos(tilt), math.sin(tilt)])
    r = b["head_r"]
    head = neck + b["neck"] * hup
    face = head + 0.6 * r * math.sin(ch["yaw"] * math.pi / 2) * hperp  # the face turns with the body
    nose = face - 0.2 * r * hup
    r_eye, l_eye = face + 0.2 * r * hup - 0.4 * r * w * hperp, face + 0.2 * r * hup + 0.4 * r * w * hperp
    r_ear, l_ear = head + 0.05 * r * hup - 0.95 * r * w * hperp, head + 0.05 * r * hup + 0.95 * r * w * hperp
    pts = np.stack([nose, neck, r_sh, r_el, r_wr, l_sh, l_el, l_wr, r_hip, r_kn, r_an,
                    l_hip, l_kn, l_an, r_eye, l_eye, r_ear, l_ear])
    ground = max(r_an[1], l_an[1])  # the lower foot stands on the floor: a crouch lowers the body
    pts[:, 1] -= ground
    return pts, head - np.array([0.0, ground])


def light(frame_H: int, frame_W: int) -> np.ndarray:
    """(H, W) the studio's lighting: brighter towards the top and the centre (it lights the person too)."""
    y = (np.arange(frame_H)[:, None] + 0.5) / frame_H
    x = (np.arange(frame_W)[None, :] + 0.5) / frame_W
    return (1 + LIGHT_Y * (0.5 - y)) * (1 + LIGHT_X * (np.exp(-(((x - 0.5) / 0.3) ** 2)) - 0.5))


def _capsule(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, width: float, color: tuple[int, int, int]) -> None:
    draw.line([tuple(a), tuple(b)], fill=color, width=max(1, int(round(width))))
    r = width / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def _reduce(img: Image.Image, frame_W: int, frame_H: int) -> np.ndarray:
    return np.asarray(img.resize((frame_W, frame_H), Image.Resampling.BILINEAR))


def _canvas(frame_H: int, least: int) -> int:
    return max(4, math.ceil(least / frame_H))


def draw_frame(pts: np.ndarray, head: np.ndarray, unit: float, frame_H: int, frame_W: int) -> np.ndarray:
    """The person on the unlit wall, (H, W, 3) uint8; pts (18, 2), head (2,) in frame pixels, unit =
    frame pixels per body unit."""
    S = _canvas(frame_H, FRAME_CANVAS)
    img = Image.new("RGB", (frame_W * S, frame_H * S), WALL)
    draw = ImageDraw.Draw(img)
    P, hd, u = pts * S, head * S, unit * S
    for hip, knee, ankle in (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle")):
        _capsule(draw, P[J[hip]], P[J[knee]], 0.14 * u, TROUSERS)
        _capsule(draw, P[J[knee]], P[J[ankle]], 0.119 * u, TROUSERS)
        ax, ay = P[J[ankle]]
        draw.ellipse([ax - 0.05 * u, ay - 0.02 * u, ax + 0.05 * u, ay + 0.03 * u], fill=SHOES)
    rs, ls, rh, lh = P[J["r_shoulder"]], P[J["l_shoulder"]], P[J["r_hip"]], P[J["l_hip"]]
    wide = np.array([0.03 * u, 0.0])
    draw.polygon([tuple(rs - wide), tuple(ls + wide), tuple(lh + wide), tuple(rh - wide)], fill=SHIRT)
    _capsule(draw, rh, lh, 0.126 * u, TROUSERS)
    _capsule(draw, rs, ls, 0.112 * u, SHIRT)
    _capsule(draw, P[J["neck"]], hd, 0.05 * u, SKIN)
    for sh, el, wr in (("r_shoulder", "r_elbow", "r_wrist"), ("l_shoulder", "l_elbow", "l_wrist")):
        _capsule(draw, P[J[sh]], P[J[el]], 0.091 * u, SHIRT)
        _capsule(draw, P[J[el]], P[J[wr]], 0.077 * u, SHIRT)
        x, y = P[J[wr]]
        r = 0.03 * u
        draw.ellipse([x - r, y - r, x + r, y + r], fill=SKIN)
    r = BONES["head_r"] * u
    hx, hy = hd
    draw.ellipse([hx - r, hy - r * 1.1, hx + r, hy + r], fill=SKIN)
    draw.chord([hx - r * 1.05, hy - r * 1.15, hx + r * 1.05, hy + r * 0.7], 180, 360, fill=HAIR)
    return _reduce(img, frame_W, frame_H)


_INKS = [tuple(int(round(255 - INK * (255 - c))) for c in col) for col in COLORS]


def draw_label(pts: np.ndarray, frame_H: int, frame_W: int) -> np.ndarray:
    """The pose image, (H, W, 3) uint8: thin OpenPose-coloured limbs on white; pts (18, 2) in frame pixels."""
    S = _canvas(frame_H, LABEL_CANVAS)
    img = Image.new("RGB", (frame_W * S, frame_H * S), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    P = pts * S
    width = max(1, int(round(LINE * frame_H * S)))
    for i, (a, b) in enumerate(LIMBS):
        draw.line([tuple(P[a]), tuple(P[b])], fill=_INKS[i], width=width)
    return _reduce(img, frame_W, frame_H)


def _layout(seed: int, tag: int, frame_H: int, frame_W: int, n_frames: int) -> tuple[np.ndarray, np.ndarray, float]:
    # -> pose channels (n_frames, C), the first place's origin in frame pixels (2,), pixels per body unit
    rng = np.random.default_rng([seed, tag])
    home = rng.uniform(0.2, 0.8)  # the video's first place, as a fraction of the width
    unit = SCALE * frame_H
    margin = 0.25 * unit + 1.0  # half a body and a pixel
    x0 = home * frame_W
    channels = motion(rng, n_frames, ((margin - x0) / unit, (frame_W - margin - x0) / unit))
    return channels, np.array([x0, FLOOR * frame_H]), unit


def video(seed: int, tag: int, frame_H: int, frame_W: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One video: frames and pose images, each (n_frames, H, W, 3) uint8. tag names the video
    within the seed (cvae.synthetic's numbering); a longer video starts with the shorter one."""
    channels, origin, unit = _layout(seed, tag, frame_H, frame_W, n_frames)
    frames = np.empty((n_frames, frame_H, frame_W, 3), np.float32)
    labels = np.empty((n_frames, frame_H, frame_W, 3), np.uint8)
    for k, v in enumerate(channels):
        pts, head = skeleton(v)
        pts, head = origin + unit * pts, origin + unit * head
        frames[k] = draw_frame(pts, head, unit, frame_H, frame_W)
        labels[k] = draw_label(pts, frame_H, frame_W)
    frames *= light(frame_H, frame_W)[None, :, :, None].astype(np.float32)
    sd = NOISE_LEVELS * frame_H / 32
    frames += np.random.default_rng([seed, tag, 1]).normal(0.0, sd, frames.shape).astype(np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), labels


def joints(seed: int, tag: int, frame_H: int, frame_W: int, n_frames: int) -> np.ndarray:
    """The joints (n_frames, 18, 2), (x, y) in frame pixels, that `video` draws."""
    channels, origin, unit = _layout(seed, tag, frame_H, frame_W, n_frames)
    return np.stack([origin + unit * skeleton(v)[0] for v in channels])
