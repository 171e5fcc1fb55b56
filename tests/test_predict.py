"""The lab's test phase: predict a hand-made test split with a real tiny checkpoint, refuse what the
leaderboard would not take, and write nothing when the split is broken."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from skimage.metrics import peak_signal_noise_ratio
from torch import Tensor

from cvae import predict
from cvae.checkpoint import load_config_of, save_checkpoint
from cvae.model import CVAE
from cvae.score import main as score_main
from cvae.submission import COLUMNS, HEADER, SEQ_FRAMES, read_submission
from split_helpers import poses, true_frames, write_checkpoint, write_split
from study_helpers import PYTHON, ROOT

TINIER = {"F_dim": 8, "L_dim": 4, "N_dim": 4, "D_out_dim": 8}  # the cheapest valid dims: ~5 ms a rollout step


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-sequence test split with its ground truth."""
    return write_split(tmp_path_factory.mktemp("split2"), n=2)


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-sequence test split: sequence 0 of `data`."""
    return write_split(tmp_path_factory.mktemp("split1"), n=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "epoch_0000", model=TINIER)


@pytest.fixture(scope="module")
def predicted(data: Path, ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "out"
    assert predict.main(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    return out


@pytest.mark.slow
def test_submission_has_the_lab_format(predicted: Path, data: Path) -> None:
    lines = (predicted / "submission.csv").read_text().splitlines()
    assert lines[0] == HEADER and HEADER.startswith("id,0,1,2,") and HEADER.endswith(",6143")
    assert len(lines) == 1 + 2 * SEQ_FRAMES
    assert all(line.count(",") == COLUMNS - 1 for line in lines)
    table = np.array([line.split(",") for line in lines[1:]], dtype=np.int64)  # the slow, obvious reading
    assert table.shape == (2 * SEQ_FRAMES, 1 + 3 * 32 * 64)
    assert table[:, 0].tolist() == list(range(2 * SEQ_FRAMES))
    assert table[:, 1:].min() >= 0 and table[:, 1:].max() <= 255
    for i in range(2):
        # row 0 of each sequence: the given first frame, (C, H, W) order flattened
        first = np.asarray(Image.open(data / "test" / "test_img" / str(i) / "frame0.png"))
        assert table[i * SEQ_FRAMES, 1:].tolist() == np.moveaxis(first, -1, 0).reshape(-1).tolist()
    assert (read_submission(predicted / "submission.csv") == table[:, 1:]).all()


def test_gifs_and_strips(predicted: Path) -> None:
    for i in range(2):
        with Image.open(predicted / f"pred_seq{i}.gif") as gif:
            assert gif.n_frames == SEQ_FRAMES and gif.size == (64, 32) and gif.info["duration"] == 20
        with Image.open(predicted / f"pred_seq{i}.png") as strip:
            assert strip.size == (8 * 64 + 7 * 2, 32)
    assert not list(predicted.glob(".*tmp"))


@pytest.mark.slow
def test_score_json_beside_it_is_what_score_says(predicted: Path, data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    saved = json.loads((predicted / "score.json").read_text())
    assert score_main([str(predicted / "submission.csv"), "--truth-dir", str(data), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for key in ("public", "private", "overall", "sequences", "rows", "capped", "cap_db"):
        assert saved[key] == scored[key], key
    assert saved["private"] is None and saved["rows"] == 2 * 600 and saved["cap_db"] == 100.0


@pytest.mark.slow  # one more 630-frame rollout
def test_same_seed_same_submission(predicted: Path, ckpt: Path, tmp_path: Path) -> None:
    """Sequence 0 alone, same seed: the very bytes of the 2-sequence run's first 630 rows (the noise is
    drawn sequence after sequence from one CPU generator), and no score.json without test_gt."""
    one = write_split(tmp_path / "one", n=1, truth=False)
    out = tmp_path / "again"
    assert predict.main(["--checkpoint", str(ckpt), "--data", str(one), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    again = (out / "submission.csv").read_bytes().splitlines()
    assert again == (predicted / "submission.csv").read_bytes().splitlines()[:1 + SEQ_FRAMES]
    assert not (out / "score.json").exists()
    assert torch.get_num_threads() == 1  # predict gives the caller's thread count back


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a model trained at 16x32 frames, half the test split's."""
    return write_checkpoint(tmp_path_factory.mktemp("small") / "epoch_0000", frame_H=16, frame_W=32, model=TINIER)


def _small_args(small: Path, one: Path, out: Path) -> list[str]:
    return ["--checkpoint", str(small), "--data", str(one), "--out", str(out), "--device", "cpu", "--threads", "1"]


@pytest.mark.slow
def test_a_model_trained_at_another_size_needs_resize(small: Path, one: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict.main(_small_args(small, one, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {small / 'config.json'}: ")
    assert "16x32" in err and "32x64" in err and "--resize" in err
    assert not out.exists()


@pytest.mark.slow  # two 630-frame rollouts
def test_resize_predicts_at_the_models_size_and_back(small: Path, one: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = _small_args(small, one, out)
    assert predict.main([*args, "--resize"]) == 0
    said = capsys.readouterr().out
    assert "resize: inputs 32x64 -> 16x32, predictions back to 32x64 (bilinear)" in said
    rows = read_submission(out / "submission.csv")
    assert rows.shape == (SEQ_FRAMES, 3 * 32 * 64)
    assert rows[0].tolist() == np.moveaxis(true_frames(0)[0], -1, 0).reshape(-1).tolist()  # not resized there and back
    assert predict.main([*args, "--resize", "--seed", "1", "--out", str(tmp_path / "seed1")]) == 0
    assert (read_submission(tmp_path / "seed1" / "submission.csv") != rows).any()  # another seed, another z


class Copycat(CVAE):
    """A stand-in model that repeats the first frame: its submission scores the floor of repeating frame 0."""

    def rollout(self, first: Tensor, label: Tensor, z: Tensor | None = None, chunk: int = 128) -> Tensor:
        return first[:, None].expand(-1, label.shape[1] - 1, -1, -1, -1).clone()


@pytest.mark.slow
def test_a_model_that_copies_its_input_scores_the_hold_floor(data: Path, ckpt: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config_of(ckpt)
    monkeypatch.setattr(predict, "load_model", lambda _: (Copycat(cfg.model).eval(), cfg))
    out = tmp_path / "copy"
    assert predict.main(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    capsys.readouterr()
    per_seq = []
    for i in range(2):
        gt = true_frames(i)  # what write_split wrote as test_gt
        per_seq.append(np.mean([peak_signal_noise_ratio(gt[t], gt[0], data_range=255) for t in range(1, 601)]))
    saved = json.loads((out / "score.json").read_text())
    assert saved["sequences"] == pytest.approx(per_seq, abs=1e-9)
    assert saved["public"] == pytest.approx(np.mean(per_seq), abs=1e-9) and saved["capped"] == 0
    with Image.open(out / "pred_seq0.gif") as gif:  # Pillow merges identical frames into one: the play time stays
        assert sum(f.info["duration"] for f in ImageSequence.Iterator(gif)) == SEQ_FRAMES * 20


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _rmtree(path: Path, named: Path | None = None) -> Path:
    shutil.rmtree(path)
    return named or path


def _631_poses(root: Path) -> Path:
    shutil.copy(root / "test/test_label/0/frame0.png", root / "test/test_label/0/frame630.png")
    return root / "test/test_label/0/frame630.png"


def _gap(root: Path) -> Path:
    for kind in ("img", "label", "gt"):
        (root / f"test/test_{kind}/1").rename(root / f"test/test_{kind}/2")
    return root / "test/test_label/1"


def _rewrite(path: Path, pixels: np.ndarray) -> Path:
    path.unlink()  # a hard link to the shared split: replace it, never write through it
    Image.fromarray(pixels).save(path)
    return path


# case -> the edit of a copy of the split, returning the file the error must name
BROKEN: dict[str, Callable[[Path], Path]] = {
    "no first frame": lambda r: _unlink(r / "test/test_img/1/frame0.png"),
    "poses without an img dir": lambda r: _rmtree(r / "test/test_img/1", r / "test/test_img/1/frame0.png"),
    "img dir without poses": lambda r: _rmtree(r / "test/test_label/1"),
    "629 poses": lambda r: _unlink(r / "test/test_label/0/frame417.png"),
    "631 poses": _631_poses,
    "a gap in the sequence numbers": _gap,
    "a pose of the wrong size": lambda r: _rewrite(r / "test/test_label/1/frame5.png", poses(1)[5][:16, :32]),
    "a first frame of the wrong size": lambda r: _rewrite(r / "test/test_img/0/frame0.png", np.zeros((64, 128, 3), np.uint8)),
    "a grey truth frame": lambda r: _rewrite(r / "test/test_gt/0/frame9.png", np.zeros((32, 64), np.uint8)),
    "truth without its last frame": lambda r: _unlink(r / "test/test_gt/1/frame629.png"),
    "no test split": lambda r: _rmtree(r / "test"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_test_split_is_refused_and_nothing_is_written(case: str, data: Path, ckpt: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "broken"
    shutil.copytree(data, root, copy_function=os.link)  # hard links: milliseconds, not a copy of 3800 PNGs
    bad = BROKEN[case](root)
    out = tmp_path / "out"
    assert predict.main(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: "), err
    assert not out.exists()


def test_a_missing_or_corrupt_checkpoint_is_refused(data: Path, ckpt: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict.main(["--checkpoint", str(tmp_path / "nope"), "--data", str(data), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such checkpoint folder\n"
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    with (bad / "state.pt").open("ab") as f:
        f.write(b"x")
    assert predict.main(["--checkpoint", str(bad), "--data", str(data), "--out", str(out)]) == 2
    assert "sha256 does not match" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow  # a 630-frame rollout and two report builds
def test_cvae_study_predict_takes_the_ranked_best_checkpoint(one: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A fake study whose winner's checkpoint is made real (tiny weights): `cvae-study predict RESULTS_DIR`
    predicts with that one, the checkpoint the ranking, best.toml and the report name."""
    from fake_results import write_objective_study
    from study.analyze import read_study
    from study.tables import analyze, ranking, winner
    from study.cli import main

    exp = write_objective_study(tmp_path, "best")
    best = exp / winner(ranking(analyze(exp), read_study(exp)))["best_checkpoint"]
    cfg = load_config_of(best).replace(model=TINIER)
    frames = json.loads((best / "psnr_per_frame.json").read_text())
    torch.manual_seed(0)
    save_checkpoint(best, {"epoch": json.loads((best / "manifest.json").read_text())["epoch"],
                           "model": CVAE(cfg.model).state_dict()}, cfg, frames)
    out = tmp_path / "out"
    assert main(["predict", str(exp), "--data", str(one), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("best run: trial ") and f"checkpoint {best} (epoch " in said
    assert "public  (sequence 0):" in said and "the checkpoint's val/psnr:" in said
    assert read_submission(out / "submission.csv").shape == (SEQ_FRAMES, 3 * 32 * 64)
    assert json.loads((out / "score.json").read_text())["checkpoint"] == str(best)
    # the study keeps the score of its best run's submission, and its report shows it beside val/psnr
    assert json.loads((exp / "submission_score.json").read_text()) == json.loads((out / "score.json").read_text())
    from study.report import build_report

    html = Path(build_report(exp)).read_text(encoding="utf-8")
    public = json.loads((out / "score.json").read_text())["public"]
    assert 'id="test-score"' in html and f"public {public:.2f} dB" in html and "beside its val/psnr" in html
    record = json.loads((exp / "submission_score.json").read_text())
    (exp / "submission_score.json").write_text(json.dumps({**record, "checkpoint": str(tmp_path / "other")}))
    assert 'id="test-score"' not in Path(build_report(exp)).read_text(encoding="utf-8")  # another run's score


def test_cvae_study_predict_needs_a_study_with_a_best_checkpoint(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from study.cli import main

    one = tmp_path / "split"  # never read: both are refused before the data is looked at
    out = tmp_path / "out"
    assert main(["predict", "--data", str(one), "--out", str(out)]) == 2  # neither RESULTS_DIR nor --checkpoint
    assert "one of them" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--data", str(one), "--out", str(tmp_path / "o2")]) == 2
    assert "no best checkpoint" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.slow  # two interpreters
def test_the_commands_as_a_user_types_them(data: Path, tmp_path: Path) -> None:
    """`python -m cvae.predict` and `cvae-study predict` exist as typed, and refuse before any work."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for cmd in ([PYTHON, "-m", "cvae.predict"], [str(Path(PYTHON).parent / "cvae-study"), "predict"]):
        done = subprocess.run([*cmd, "--checkpoint", str(tmp_path / "nope"), "--data", str(data), "--out",
                               str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'nope'}: no such checkpoint folder\n"
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_embedded_test_split_predicts_and_scores(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded data's own test split (cvae.synthetic), read by the same reader: a model that repeats
    frame 0 scores the PSNR of repeating frame 0, computed here from its test_gt PNGs with scikit-image."""
    from cvae.config import DataConfig
    from cvae.synthetic import ensure_dataset

    if "synthetic_test_sequences" not in DataConfig.__dataclass_fields__:
        pytest.skip("the embedded data has no test split yet")
    root = ensure_dataset(DataConfig(synthetic_train_videos=1, synthetic_train_frames=16, video_len=4,
                                     val_video_len=12, synthetic_test_sequences=1))
    cfg = load_config_of(ckpt)
    monkeypatch.setattr(predict, "load_model", lambda _: (Copycat(cfg.model).eval(), cfg))
    out = tmp_path / "out"
    assert predict.main(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--device", "cpu",
                         "--threads", "1"]) == 0
    capsys.readouterr()
    rows = read_submission(out / "submission.csv")
    gt = root / "test" / "test_gt" / "0"
    first = np.asarray(Image.open(root / "test" / "test_img" / "0" / "frame0.png"))
    assert rows.shape == (SEQ_FRAMES, 3 * 32 * 64) and (rows == np.moveaxis(first, -1, 0).reshape(-1)).all()
    hold = np.mean([peak_signal_noise_ratio(np.asarray(Image.open(gt / f"frame{t}.png")), first, data_range=255)
                    for t in range(1, 601)])
    assert json.loads((out / "score.json").read_text())["public"] == pytest.approx(hold, abs=1e-9)
