"""The synthetic dancer: deterministic, loadable by the real loader, frame and pose aligned, cached once."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cvae import synthetic
from cvae.config import DataConfig

# cvae.data (and so torch) is imported inside the tests that need it: the spawned children of the
# concurrency test import this module and should start fast.

SMALL = dict(train_videos=2, train_frames=8, val_frames=10, frame_H=32, frame_W=64)


def small_cfg(cache_dir: Path | str | None, **kw: Any) -> DataConfig:
    args: dict[str, Any] = dict(cache_dir=None if cache_dir is None else str(cache_dir), frame_H=32, frame_W=64,
                                video_len=8, val_video_len=40, synthetic_train_videos=2, synthetic_train_frames=32)
    args.update(kw)
    return DataConfig(**args)


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_numbering(tmp_path: Path) -> None:
    out = synthetic.write_dataset(tmp_path / "ds", seed=0, **SMALL)
    assert out == tmp_path / "ds"
    for split, n in (("train", 16), ("val", 10)):
        for kind in ("img", "label"):
            names = {p.name for p in (out / split / f"{split}_{kind}").iterdir()}
            assert names == {f"frame{i}.png" for i in range(n)}
    with Image.open(out / "train" / "train_img" / "frame3.png") as im:
        assert im.mode == "RGB" and im.size == (64, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dir left behind


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = synthetic.write_dataset(tmp_path / "a", seed=7, **SMALL)
    b = synthetic.write_dataset(tmp_path / "b", seed=7, **SMALL)
    c = synthetic.write_dataset(tmp_path / "c", seed=8, **SMALL)
    assert tree_hash(a) == tree_hash(b)
    assert tree_hash(a) != tree_hash(c)
    f = "train/train_img/frame0.png"
    assert (a / f).read_bytes() == (b / f).read_bytes() != (c / f).read_bytes()


def test_videos_differ() -> None:
    p0, p1, pv = (synthetic.video_params(0, v) for v in (0, 1, "val"))
    assert p0.omega != p1.omega and p0.shirt != p1.shirt and p0.wall_top != p1.wall_top
    assert not np.allclose(synthetic.joints(5.0, p0), synthetic.joints(5.0, p1))
    assert not np.allclose(synthetic.joints(5.0, p0), synthetic.joints(5.0, pv))


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="ds"):
        synthetic.write_dataset(tmp_path / "ds", **SMALL)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_dancer_stays_inside_the_frame(seed: int) -> None:
    p = synthetic.video_params(seed, seed % 2 if seed < 4 else "val", 32, 64)
    pts = synthetic.joints(np.arange(0.0, 800.0, 0.5), p)  # (T, 18, 2)
    assert pts.shape == (1600, 18, 2)
    assert pts[..., 0].min() >= 1.0 and pts[..., 0].max() <= 63.0
    assert pts[..., 1].min() >= 1.0 and pts[..., 1].max() <= 31.0


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    inter = ix * iy
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("video", [0, 1, "val"])
def test_frame_and_label_show_the_same_pose(video: int | str) -> None:
    p = synthetic.video_params(3, video, 32, 64)
    bg = Image.fromarray(synthetic.background(p))
    bg_small = np.asarray(bg.reduce(synthetic.SUPERSAMPLE)).astype(int)  # (H, W, 3)
    for t in (0, 13, 57):
        frame = np.asarray(synthetic.render_frame(t, p, bg)).astype(int)  # (H, W, 3)
        label = np.asarray(synthetic.render_label(t, p))
        assert frame.shape == label.shape == (32, 64, 3)
        person = np.abs(frame - bg_small).sum(-1) > 40
        pose = (label < 250).any(-1)
        assert (label[~pose] == 255).all()  # white background
        assert _iou(_bbox(person), _bbox(pose)) > 0.5
        # every joint sits on a coloured pixel of the label; the torso centre on the shirt in the frame
        pts = synthetic.joints(t, p)
        for x, y in pts.astype(int):
            assert pose[y, x], (t, x, y)
        torso = [synthetic.J[k] for k in ("r_shoulder", "l_shoulder", "r_hip", "l_hip")]
        cx, cy = pts[torso].mean(0).astype(int)
        assert person[cy, cx], (t, cx, cy)


def test_label_uses_openpose_limb_colours() -> None:
    p = synthetic.video_params(0, 0)
    label = np.asarray(synthetic.render_label(0, p)).reshape(-1, 3)
    colours = {tuple(c) for c in label}
    # The thick limbs leave some pixels in pure OpenPose colours (no anti-aliasing blend inside them).
    assert len(colours & set(synthetic.COLORS)) >= 4


def test_the_dancer_moves() -> None:
    p = synthetic.video_params(0, 0)
    pts = synthetic.joints(np.arange(0, 64), p)  # (64, 18, 2)
    step = np.linalg.norm(np.diff(pts, axis=0), axis=-1)  # (63, 18) pixels per frame
    assert step.max() > 0.3  # it moves ...
    assert step.max() < 4.0  # ... smoothly
    assert np.abs(pts[:, synthetic.J["l_wrist"]] - pts[0, synthetic.J["l_wrist"]]).max() > 3.0
    a, b = synthetic.render_label(0, p), synthetic.render_label(10, p)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_loads_through_the_real_loader(tmp_path: Path) -> None:
    from cvae.data import clear_cache, load_dataset, sequence_batch

    clear_cache()
    cfg = small_cfg(tmp_path, synthetic_train_frames=36)  # rounded down to 32 = 4 sequences of 8
    ds = load_dataset(cfg)
    assert ds.train.img.shape == (64, 32, 64, 3) and ds.train.label.shape == (64, 32, 64, 3)
    assert ds.val.img.shape == (40, 32, 64, 3)
    assert ds.num_sequences(8) == 8
    assert ds.root.parent == tmp_path.resolve()
    img, label = sequence_batch(ds.train, [0, 7], 8)
    assert img.shape == (2, 8, 3, 32, 64) and 0.0 <= float(label.min()) <= float(label.max()) <= 1.0
    assert float(label.max()) == 1.0  # the white label background
    assert load_dataset(cfg) is ds


def test_cache_key_rounds_train_frames_and_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert synthetic.dataset_dir(small_cfg(tmp_path, synthetic_train_frames=39)) == \
        synthetic.dataset_dir(small_cfg(tmp_path, synthetic_train_frames=32))
    assert synthetic.dataset_dir(small_cfg(tmp_path, synthetic_seed=1)) != synthetic.dataset_dir(small_cfg(tmp_path))
    monkeypatch.setenv("CVAE_CACHE", str(tmp_path / "env"))
    assert synthetic.dataset_dir(small_cfg(None)).parent == (tmp_path / "env").resolve()


def test_ensure_dataset_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_cfg(tmp_path)
    root = synthetic.ensure_dataset(cfg)
    marker = root / synthetic.MARKER
    assert marker.is_file()
    stamp = marker.stat().st_mtime_ns

    def boom(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "write_dataset", boom)
    assert synthetic.ensure_dataset(cfg) == root
    assert marker.stat().st_mtime_ns == stamp


def test_ensure_dataset_redoes_an_incomplete_one(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path)
    root = synthetic.dataset_dir(cfg)
    (root / "train" / "train_img").mkdir(parents=True)  # a crash left this, without the marker
    (root / "train" / "train_img" / "frame0.png").write_bytes(b"half")
    stale = root.parent / f".{root.name}.tmp-123-abc"
    stale.mkdir()
    assert synthetic.ensure_dataset(cfg) == root
    assert (root / synthetic.MARKER).is_file() and not stale.exists()
    assert len(list((root / "train" / "train_img").iterdir())) == 64


def _ensure_in_child(cache_dir: str, counter_dir: str, barrier: Any) -> None:
    real = synthetic.write_dataset

    def counting(*args: Any, **kwargs: Any) -> Path:
        Path(counter_dir, f"generated-{os.getpid()}").touch()
        time.sleep(0.5)  # hold the lock long enough that the other process surely finds no dataset
        return real(*args, **kwargs)

    synthetic.write_dataset = counting  # type: ignore[assignment]
    cfg = small_cfg(cache_dir)
    barrier.wait()
    raced = not (synthetic.dataset_dir(cfg) / synthetic.MARKER).exists()
    root = synthetic.ensure_dataset(cfg)
    Path(counter_dir, f"done-{os.getpid()}").write_text(f"{raced}\n{root}")


def test_concurrent_ensure_dataset_generates_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    cache, counter = tmp_path / "cache", tmp_path / "counter"
    counter.mkdir()
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_ensure_in_child, args=(str(cache), str(counter), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert len(list(counter.glob("generated-*"))) == 1
    done = [f.read_text().split("\n") for f in counter.glob("done-*")]
    assert [raced for raced, _ in done] == ["True", "True"]  # both arrived before the dataset existed
    roots = {root for _, root in done}
    assert len(roots) == 1
    root = Path(roots.pop())
    assert (root / synthetic.MARKER).is_file()
    assert not list(cache.glob(".*.tmp-*"))

    from cvae.data import clear_cache, load_dataset

    clear_cache()
    ds = load_dataset(small_cfg(cache))
    assert ds.root == root and len(ds.train) == 64 and len(ds.val) == 40


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--seed", "2", "--train-videos", "1", "--train-frames", "4",
            "--val-frames", "3", "--height", "16", "--width", "24"]
    assert synthetic.main(args) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and " s" in printed
    with Image.open(out / "val" / "val_label" / "frame2.png") as im:
        assert im.size == (24, 16)
    assert synthetic.main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_one_dancer_dances_every_training_video() -> None:
    own = [synthetic.video_params(0, v) for v in range(3)]
    one = [synthetic.video_params(0, v, dancers=1) for v in range(3)]
    two = [synthetic.video_params(0, v, dancers=2) for v in range(3)]
    for p in one:  # dancer 0's clothes and room, each video its own dance
        assert all(getattr(p, k) == getattr(own[0], k) for k in synthetic.LOOKS)
    assert one[1].omega == own[1].omega and one[1].omega != one[0].omega
    assert two[1].shirt == own[1].shirt and two[2].shirt == own[0].shirt
    assert not np.allclose(synthetic.joints(5.0, one[0]), synthetic.joints(5.0, one[1]))


def test_dancers_is_part_of_the_cache_key(tmp_path: Path) -> None:
    base = DataConfig(cache_dir=str(tmp_path))
    assert synthetic.dataset_dir(base) == synthetic.dataset_dir(DataConfig(cache_dir=str(tmp_path), synthetic_dancers=0))
    assert synthetic.dataset_dir(base) != synthetic.dataset_dir(DataConfig(cache_dir=str(tmp_path), synthetic_dancers=1))
