"""The lab-layout loader: order, shapes, resizing, batches, caching, and clear errors on bad layouts."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from cvae.config import DataConfig
from cvae.data import (DatasetError, Frames, clear_cache, load_dataset, load_split, sequence_batch,
                       to_tensor)

H, W = 8, 12  # tiny frames keep these tests in milliseconds


def _frame(n: int, h: int = H, w: int = W, kind: str = "img") -> np.ndarray:
    # The frame number is readable back from the pixels: channel 0 = n, channel 1 marks img/label.
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = n
    arr[..., 1] = 10 if kind == "img" else 200
    arr[..., 2] = np.arange(w, dtype=np.uint8)[None, :] * 5
    return arr


def write_layout(root: Path, n_train: int = 8, n_val: int = 6, h: int = H, w: int = W) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ("img", "label"):
            d = root / split / f"{split}_{kind}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_frame(i, h, w, kind)).save(d / f"frame{i}.png")
    return root


def cfg_for(root: Path, **kw: int) -> DataConfig:
    return DataConfig(root=str(root), frame_H=kw.pop("frame_H", H), frame_W=kw.pop("frame_W", W),
                      video_len=kw.pop("video_len", 4), val_video_len=kw.pop("val_video_len", 5), **kw)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_loads_shapes_dtype_and_numeric_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=12, n_val=6)
    split = load_split(root, "train", H, W)
    assert split.img.shape == (12, H, W, 3) and split.img.dtype == np.uint8
    assert split.label.shape == (12, H, W, 3) and split.label.dtype == np.uint8
    assert split.root == root / "train"
    # frame2 before frame10: numeric, not lexicographic, order
    assert split.img[:, 0, 0, 0].tolist() == list(range(12))
    assert split.label[:, 0, 0, 0].tolist() == list(range(12))
    assert (split.img[..., 1] == 10).all() and (split.label[..., 1] == 200).all()


def test_load_dataset_cuts_val_and_counts_sequences(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=10, n_val=7)
    ds = load_dataset(cfg_for(root, video_len=4, val_video_len=5))
    assert len(ds.train) == 10 and ds.num_sequences(4) == 2  # trailing 2 frames unused
    assert len(ds.val) == 5 and ds.val.img[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert ds.root == root.resolve()


def test_sequence_batch_values_and_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=12)
    frames = load_split(root, "train", H, W)
    img, label = sequence_batch(frames, np.array([2, 0]), video_len=4)
    assert img.shape == (2, 4, 3, H, W) and label.shape == (2, 4, 3, H, W)
    assert img.dtype == torch.float32 and label.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    # sequence 2 = frames 8..11, sequence 0 = frames 0..3
    got = (img[:, :, 0, 0, 0] * 255).round().to(torch.int64).tolist()
    assert got == [[8, 9, 10, 11], [0, 1, 2, 3]]
    assert torch.allclose(label[:, :, 1], torch.full_like(label[:, :, 1], 200 / 255))
    # the list form works too, and out-of-range sequences are refused
    assert torch.equal(sequence_batch(frames, [2, 0], 4)[0], img)
    with pytest.raises(IndexError):
        sequence_batch(frames, [3], 4)


def test_to_tensor_layout_and_range() -> None:
    arr = np.zeros((2, 3, 4, 3), dtype=np.uint8)  # (N, H, W, 3)
    arr[..., 0], arr[..., 1], arr[..., 2] = 0, 255, 51
    arr.flags.writeable = False  # the loader's arrays are read-only
    t = to_tensor(arr)
    assert t.shape == (2, 3, 3, 4) and t.dtype == torch.float32 and t.is_contiguous()
    assert float(t[:, 0].max()) == 0.0 and float(t[:, 1].min()) == 1.0
    assert torch.allclose(t[:, 2], torch.full((2, 3, 4), 0.2))
    with pytest.raises(ValueError):
        to_tensor(arr.astype(np.float32))


def test_resizes_to_configured_size(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=4, n_val=5, h=2 * H, w=2 * W)
    ds = load_dataset(cfg_for(root))
    assert ds.train.img.shape == (4, H, W, 3) and ds.val.label.shape == (5, H, W, 3)
    assert ds.train.img[:, 0, 0, 0].tolist() == [0, 1, 2, 3]  # flat channels survive resizing


def test_ignores_non_png_clutter_and_accepts_opaque_rgba(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=4, n_val=5)
    d = root / "train" / "train_img"
    (d / ".DS_Store").write_bytes(b"\x00\x01")
    (d / "Thumbs.db").write_bytes(b"junk")
    (d / "notes.txt").write_text("hello")
    Image.fromarray(_frame(1)).convert("RGBA").save(d / "frame1.png")  # alpha all 255
    frames = load_split(root, "train", H, W)
    assert len(frames) == 4 and frames.img[1, 0, 0, 0] == 1


def test_load_dataset_is_memoised(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds")
    a = load_dataset(cfg_for(root))
    b = load_dataset(cfg_for(root))
    assert a is b
    assert not a.train.img.flags.writeable  # shared, so read-only
    assert load_dataset(cfg_for(root, frame_H=2 * H)) is not a  # other sizes, other entry


def test_many_frames_keep_numeric_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_train=100, n_val=5)
    frames = load_split(root, "train", H, W)
    assert frames.img[:, 0, 0, 0].tolist() == list(range(100))


def test_dataset_error_pickles() -> None:
    e = pickle.loads(pickle.dumps(DatasetError(Path("/x/y"), "broken")))
    assert isinstance(e, DatasetError) and str(e) == "/x/y: broken" and e.path == Path("/x/y")


# Each bad layout: (mutation of a good layout, path the message must name relative to the root,
# words the message must contain). Good layout: 8 train frames, 6 val frames; video_len 4, val 5.
def _rm(rel: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / rel
        if p.is_dir():
            for q in sorted(p.rglob("*"), reverse=True):
                q.unlink() if q.is_file() else q.rmdir()
            p.rmdir()
        else:
            p.unlink()
    return f


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        (root / rel).write_bytes(data)
    return f


def _image(rel: str, mode: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        im = Image.fromarray(_frame(3)).convert(mode)
        if mode == "RGBA":
            im.putalpha(128)
        im.save(root / rel)
    return f


def _truncate(rel: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / rel
        noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(noise).save(p)  # incompressible, so most of the file is pixel data
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    return f


def _replace_by_file(rel: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        _rm(rel)(root)
        (root / rel).write_text("not a folder")
    return f


def _keep_frames(split: str, n: int) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        for kind in ("img", "label"):
            for p in (root / split / f"{split}_{kind}").glob("frame*.png"):
                if int(p.stem[5:]) >= n:
                    p.unlink()
    return f


BAD_LAYOUTS = {
    "missing train": (_rm("train"), "train", "missing"),
    "missing val": (_rm("val"), "val", "missing"),
    "missing train_img": (_rm("train/train_img"), "train/train_img", "missing"),
    "missing train_label": (_rm("train/train_label"), "train/train_label", "missing"),
    "missing val_img": (_rm("val/val_img"), "val/val_img", "missing"),
    "missing val_label": (_rm("val/val_label"), "val/val_label", "missing"),
    "image without label": (_rm("train/train_label/frame5.png"), "train/train_img/frame5.png", "no matching label"),
    "label without image": (_rm("val/val_img/frame2.png"), "val/val_label/frame2.png", "no matching image"),
    "bad name": (_write("train/train_img/img3.png", b""), "train/train_img/img3.png", "frame<integer>.png"),
    "non-integer name": (_write("val/val_label/frame_a.png", b""), "val/val_label/frame_a.png", "frame<integer>.png"),
    "duplicate number": (_image("train/train_img/frame03.png", "RGB"), "train/train_img/frame", "same frame number 3"),
    "corrupt png": (_write("train/train_img/frame2.png", b"not a png at all"), "train/train_img/frame2.png", "cannot decode"),
    "truncated png": (_truncate("val/val_label/frame4.png"), "val/val_label/frame4.png", "cannot decode"),
    "grayscale": (_image("train/train_label/frame3.png", "L"), "train/train_label/frame3.png", "expected 3 channels (RGB)"),
    "transparent rgba": (_image("val/val_img/frame3.png", "RGBA"), "val/val_img/frame3.png", "expected 3 channels (RGB)"),
    "too few train frames": (_keep_frames("train", 3), "train/train_img", "fewer than one training sequence"),
    "too few val frames": (_keep_frames("val", 4), "val/val_img", "has 4 frames"),
    "empty train": (_keep_frames("train", 0), "train/train_img", "no frame<N>.png"),
    "train is a file": (_replace_by_file("train"), "train", "is not a folder"),
    "val_label is a file": (_replace_by_file("val/val_label"), "val/val_label", "is not a folder"),
}


@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_bad_layout_names_the_path(tmp_path: Path, case: str) -> None:
    mutate, rel, words = BAD_LAYOUTS[case]
    root = write_layout(tmp_path / "ds")
    mutate(root)
    with pytest.raises(DatasetError) as info:
        load_dataset(cfg_for(root))
    msg = str(info.value)
    assert str(root.resolve() / rel) in msg, msg
    assert words in msg, msg


def test_too_few_val_frames_says_how_many_are_needed(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "ds", n_val=4)
    with pytest.raises(DatasetError, match=r"has 4 frames.*val_video_len=5"):
        load_dataset(cfg_for(root, val_video_len=5))


@pytest.mark.parametrize("missing", ["does-not-exist", "a-file"])
def test_missing_root(tmp_path: Path, missing: str) -> None:
    root = tmp_path / missing
    if missing == "a-file":
        root.write_text("x")
    with pytest.raises(DatasetError, match="dataset root") as info:
        load_dataset(cfg_for(root))
    assert str(root) in str(info.value)
    with pytest.raises(DatasetError, match="dataset root"):
        load_split(root, "train", H, W)


def test_frames_len(tmp_path: Path) -> None:
    f = Frames(img=np.zeros((3, H, W, 3), np.uint8), label=np.zeros((3, H, W, 3), np.uint8), root=tmp_path)
    assert len(f) == 3
