"""The embedded data, both styles: deterministic, loadable by the real loader, frame and pose aligned,
with the lab's test split, cached once."""
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

SMALL: dict[str, Any] = dict(train_videos=2, train_frames=8, val_frames=10, frame_H=32, frame_W=64, test_sequences=0)


def small_cfg(cache_dir: Path | str | None, **kw: Any) -> DataConfig:
    args: dict[str, Any] = dict(cache_dir=None if cache_dir is None else str(cache_dir), frame_H=32, frame_W=64,
                                video_len=8, val_video_len=40, synthetic_train_videos=2, synthetic_train_frames=32,
                                synthetic_test_sequences=0)
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
    cfg = small_cfg(tmp_path, synthetic_train_frames=8, val_video_len=8)
    root = synthetic.ensure_dataset(cfg)
    marker = root / synthetic.MARKER
    assert marker.is_file()
    stamp = marker.stat().st_mtime_ns

    def boom(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "write_dataset", boom)
    assert synthetic.ensure_dataset(cfg) == root
    assert marker.stat().st_mtime_ns == stamp


@pytest.mark.slow
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


@pytest.mark.slow
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
            "--val-frames", "3", "--height", "16", "--width", "24", "--test-sequences", "0"]
    assert synthetic.main(args) == 0
    printed = capsys.readouterr()
    assert printed.out == f"{out.resolve()}\n"  # the root alone: ROOT=$(python -m cvae.synthetic --out DIR)
    assert "bold-style" in printed.err and " s" in printed.err
    with Image.open(out / "val" / "val_label" / "frame2.png") as im:
        assert im.size == (24, 16)
    assert synthetic.main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_cli_lab_style_and_frame_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lab"
    assert synthetic.main(["--out", str(out), "--style", "lab", "--frame-size", "32x64", "--train-videos", "1",
                           "--train-frames", "2", "--val-frames", "3", "--test-sequences", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    with Image.open(out / "train" / "train_img" / "frame1.png") as im:
        assert im.size == (64, 32)
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tmp_path / "x"), "--frame-size", "32by64"])
    assert "HxW" in capsys.readouterr().err


def test_cli_prints_a_configs_cached_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[data]\ncache_dir = "{tmp_path / "cache"}"\nframe_H = 16\nframe_W = 32\nvideo_len = 4\n'
                   'val_video_len = 6\nsynthetic_train_videos = 1\nsynthetic_train_frames = 4\n'
                   'synthetic_test_sequences = 0\n')
    assert synthetic.main(["--config", str(cfg)]) == 0
    root = Path(capsys.readouterr().out.strip())
    assert root == synthetic.dataset_dir(DataConfig(cache_dir=str(tmp_path / "cache"), frame_H=16, frame_W=32, video_len=4,
                                                    val_video_len=6, synthetic_train_videos=1, synthetic_train_frames=4,
                                                    synthetic_test_sequences=0))
    assert (root / synthetic.MARKER).is_file()
    cfg.write_text('[data]\nroot = "/somewhere"\n')
    assert synthetic.main(["--config", str(cfg)]) == 2
    assert "not the embedded one" in capsys.readouterr().err


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


def test_style_and_test_split_are_part_of_the_cache_key(tmp_path: Path) -> None:
    base = small_cfg(tmp_path)
    lab = small_cfg(tmp_path, synthetic_style="lab")
    assert synthetic.dataset_dir(base) != synthetic.dataset_dir(lab)
    assert synthetic.dataset_dir(lab).name.startswith("lab-s0-32x64-")
    assert synthetic.dataset_dir(base) != synthetic.dataset_dir(small_cfg(tmp_path, synthetic_test_sequences=2))
    # one person in every lab-style video: the dancers key cannot change that, nor the cache
    assert synthetic.dataset_dir(lab) == synthetic.dataset_dir(small_cfg(tmp_path, synthetic_style="lab", synthetic_dancers=1))


def test_data_config_checks_the_new_keys() -> None:
    from cvae.config import Config, ConfigError

    with pytest.raises(ConfigError, match="data.synthetic_style: must be one of 'bold', 'lab'"):
        Config.from_dict({"data": {"synthetic_style": "real"}})
    with pytest.raises(ConfigError, match="data.synthetic_test_sequences: must be >= 0"):
        Config.from_dict({"data": {"synthetic_test_sequences": -1}})
    with pytest.raises(ConfigError, match="data.synthetic_dancers: the lab style has one person"):
        Config.from_dict({"data": {"synthetic_style": "lab", "synthetic_dancers": 2}})
    assert DataConfig().synthetic_style == "bold" and DataConfig().synthetic_test_sequences == 5


@pytest.mark.slow
@pytest.mark.parametrize("style", ["bold", "lab"])
def test_the_test_split_is_the_labs_layout_at_32x64(tmp_path: Path, style: str) -> None:
    kw = dict(SMALL, frame_H=16, frame_W=32, test_sequences=2)
    out = synthetic.write_dataset(tmp_path / "ds", seed=1, style=style, **kw)
    test = out / "test"
    assert sorted(p.name for p in test.iterdir()) == ["test_gt", "test_img", "test_label"]
    for i in range(2):
        assert [p.name for p in (test / "test_img" / str(i)).iterdir()] == ["frame0.png"]
        for kind in ("test_label", "test_gt"):
            assert {p.name for p in (test / kind / str(i)).iterdir()} == {f"frame{t}.png" for t in range(630)}
        assert (test / "test_img" / str(i) / "frame0.png").read_bytes() == (test / "test_gt" / str(i) / "frame0.png").read_bytes()
        with Image.open(test / "test_gt" / str(i) / "frame629.png") as im:
            assert im.size == (64, 32)  # the submission's size, whatever the training size
    gt0, gt1 = (np.asarray(Image.open(test / "test_gt" / str(i) / "frame100.png")) for i in (0, 1))
    assert not np.array_equal(gt0, gt1)  # two dances
    from cvae.testsplit import load_test_split  # the reader predict uses takes it as the lab's

    split = load_test_split(out)
    assert len(split) == 2 and split.truth is not None and split.poses.shape == (2, 630, 32, 64, 3)


@pytest.mark.parametrize("style", ["bold", "lab"])
def test_both_styles_are_deterministic_per_seed(tmp_path: Path, style: str) -> None:
    a, b, c = (synthetic.write_dataset(tmp_path / name, seed=s, style=style, **SMALL)
               for name, s in (("a", 4), ("b", 4), ("c", 5)))
    assert tree_hash(a) == tree_hash(b) != tree_hash(c)
    f = "train/train_img/frame0.png"  # another seed differs from its first frame on
    assert (a / f).read_bytes() == (b / f).read_bytes() != (c / f).read_bytes()


def test_a_longer_lab_video_starts_with_the_shorter_one() -> None:
    from cvae import synthetic_lab

    short, _ = synthetic_lab.video(0, synthetic.VAL_TAG, 16, 32, 20)
    long, _ = synthetic_lab.video(0, synthetic.VAL_TAG, 16, 32, 40)
    assert np.array_equal(short, long[:20])


@pytest.mark.slow
@pytest.mark.parametrize("tag", [0, 1, 2, 3, synthetic.VAL_TAG, synthetic.TEST_TAG + 4])
def test_the_lab_person_stays_in_the_frame_and_in_its_pose_image(tag: int) -> None:
    from cvae import synthetic_lab

    frames, labels = synthetic_lab.video(0, tag, 32, 64, 630)
    pts = synthetic_lab.joints(0, tag, 32, 64, 630)  # (T, 18, 2)
    assert pts[..., 0].min() >= 0.5 and pts[..., 0].max() <= 63.5 and pts[..., 1].min() >= 0.5 and pts[..., 1].max() <= 31.5
    studio = np.array(synthetic_lab.WALL) * synthetic_lab.light(32, 64)[..., None]  # (H, W, 3) the empty studio
    person = np.abs(frames - studio).max(-1) > 12  # (T, H, W); the camera noise is ~1.5 levels
    ink = labels.min(-1) < 250
    assert (labels[~ink] >= 250).all()  # a white page
    for t in range(0, 630, 45):
        assert _iou(_bbox(person[t]), _bbox(ink[t])) > 0.5, (tag, t)
        for x, y in pts[t].astype(int):  # every joint on or beside the person
            assert person[t, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), (tag, t, x, y)


def test_the_lab_person_is_one_person_in_one_studio() -> None:
    from cvae import synthetic_lab

    # every video: the same wall where the person is not (up to the camera noise), the same clothes
    a, _ = synthetic_lab.video(3, 0, 32, 64, 40)
    b, _ = synthetic_lab.video(3, synthetic.VAL_TAG, 32, 64, 40)
    corner = (slice(0, 4), slice(0, 4))
    assert np.abs(a[:, corner[0], corner[1]].mean((0, 1, 2)) - b[:, corner[0], corner[1]].mean((0, 1, 2))).max() < 1.0
    homes = {float(np.median(synthetic_lab.joints(0, v, 32, 64, 2)[0, :, 0])) for v in range(4)}
    assert max(homes) - min(homes) > 8  # ... standing at different places across the width


@pytest.mark.slow
def test_datasets_of_other_sizes_share_one_test_split(tmp_path: Path) -> None:
    a = synthetic.ensure_dataset(small_cfg(tmp_path, synthetic_test_sequences=1))
    b = synthetic.ensure_dataset(small_cfg(tmp_path, synthetic_test_sequences=1, frame_H=16, frame_W=32))
    f = Path("test/test_label/0/frame629.png")
    assert a != b and (a / f).read_bytes() == (b / f).read_bytes()
    assert os.path.samefile(a / f, b / f)  # linked from the cache's one copy, not written twice
    assert len(list((b / "test" / "test_gt" / "0").iterdir())) == 630
