"""Leaderboard scoring: known answers (the cap for identical rows, 20 log10(255/k) for a uniform error
of k levels, unscored rows ignored), and every malformed CSV refused with its file and line."""
from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cvae.score import CAP_DB, main
from cvae.submission import HEADER, SEQ_FRAMES, VALUES, read_submission, write_submission
from split_helpers import true_frames, write_split
from study_helpers import PYTHON, ROOT


def rows_of(n_seq: int, seed: int = 0, low: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, 256, (n_seq * SEQ_FRAMES, VALUES), dtype=np.uint8)


def score_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """4 sequences (3 public, 1 private) of values in 7..255, so any of them can be lowered by k <= 7."""
    rows = rows_of(4, low=7)
    return write_submission(tmp_path_factory.mktemp("truth") / "truth.csv", rows), rows


@pytest.mark.slow
def test_identical_rows_count_as_the_cap(truth: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = truth
    s = score_json(capsys, str(path), "--truth", str(path))
    assert s["public"] == s["private"] == s["overall"] == CAP_DB == 100.0
    assert s["capped"] == s["rows"] == 4 * 600 and s["sequences"] == [100.0] * 4


@pytest.mark.slow
def test_a_uniform_error_of_k_levels_scores_20_log10_255_over_k(truth: tuple[Path, np.ndarray], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, rows = truth
    sub = rows.astype(np.int16).reshape(4, SEQ_FRAMES, VALUES)
    sub[:3, 1:601] -= 3  # public sequences: 3 levels off on every scored value
    sub[3, 1:601] -= 7  # the private one: 7 levels off
    sub[:, 0] = 255 - sub[:, 0]  # rows 0 and 601..629 are not scored: wildly wrong changes nothing
    sub[:, 601:] = 0
    sub_path = write_submission(tmp_path / "sub.csv", sub.reshape(-1, VALUES).astype(np.uint8))
    s = score_json(capsys, str(sub_path), "--truth", str(path))
    assert s["public"] == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)
    assert s["private"] == pytest.approx(20 * math.log10(255 / 7), abs=1e-9)
    assert s["sequences"] == pytest.approx([20 * math.log10(255 / k) for k in (3, 3, 3, 7)], abs=1e-9)
    assert s["overall"] == pytest.approx(np.mean(s["sequences"]), abs=1e-9) and s["capped"] == 0
    assert s["frames"] == [1, 600] and s["data_range"] == 255


@pytest.mark.slow
def test_truth_dir_builds_the_truth_from_test_gt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_split(tmp_path / "data", n=1)
    gt = np.moveaxis(true_frames(0), -1, 1).reshape(SEQ_FRAMES, VALUES)  # (C, H, W) order
    sub = write_submission(tmp_path / "sub.csv", gt)
    s = score_json(capsys, str(sub), "--truth-dir", str(root))
    assert s["capped"] == 600 and s["private"] is None
    assert s["truth"] == str(root / "test" / "test_gt")
    no_gt = write_split(tmp_path / "no_gt", n=1, truth=False)
    assert main([str(sub), "--truth-dir", str(no_gt)]) == 2
    assert capsys.readouterr().err == (f"error: {no_gt / 'test' / 'test_gt'}: missing folder: this test split has "
                                       "no ground truth\n")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of a valid one-sequence submission (id, then 6144 values)."""
    path = write_submission(tmp_path_factory.mktemp("good") / "good.csv", rows_of(1, seed=1))
    return path.read_text().splitlines()


def _field(line: str, col: int, value: str) -> str:
    f = line.split(",")
    f[col] = value
    return ",".join(f)


# case -> (edit of the lines, the 1-based line named, words of the reason)
MALFORMED: dict[str, tuple[Callable[[list[str]], list[str]], int, str]] = {
    "a short row": (lambda ls: [*ls[:5], ls[5].rsplit(",", 1)[0], *ls[6:]], 6, "has 6144 columns, expected 6145"),
    "a long row": (lambda ls: [*ls[:9], ls[9] + ",0", *ls[10:]], 10, "has 6146 columns, expected 6145"),
    "a float": (lambda ls: [*ls[:7], _field(ls[7], 10, "1.5"), *ls[8:]], 8, "column 11: '1.5' is not a non-negative integer"),
    "a word": (lambda ls: [*ls[:3], _field(ls[3], 3, "abc"), *ls[4:]], 4, "column 4: 'abc' is not a non-negative integer"),
    "an empty field": (lambda ls: [*ls[:3], _field(ls[3], 6144, ""), *ls[4:]], 4, "column 6145: '' is not"),
    "a negative value": (lambda ls: [*ls[:2], _field(ls[2], 1, "-1"), *ls[3:]], 3, "column 2: '-1' is not a non-negative"),
    "256": (lambda ls: [*ls[:100], _field(ls[100], 20, "256"), *ls[101:]], 101, "column 21: 256 is outside 0..255"),
    "ids out of order": (lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]], 5, "id 4 out of order: expected 3"),
    "629 rows": (lambda ls: ls[:-1], 630, "629 rows is not a positive multiple of 630"),
    "no rows": (lambda ls: ls[:1], 1, "0 rows is not a positive multiple of 630"),
    "no header": (lambda ls: ls[1:], 1, "header must be id,0,1,2,3,"),
    "a blank line": (lambda ls: [*ls[:200], "", *ls[200:]], 201, "has 1 columns, expected 6145"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_csv_is_refused_with_its_line(case: str, good: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    edit, line, reason = MALFORMED[case]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(edit(list(good))) + "\n")
    ok = tmp_path / "ok.csv"
    ok.write_text("\n".join(good) + "\n")
    for argv in ([str(bad), "--truth", str(ok)], [str(ok), "--truth", str(bad)]):  # as submission and as truth
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}: line {line}: ") and reason in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_submission_and_truth_of_different_lengths(truth: tuple[Path, np.ndarray], good: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.csv"
    one.write_text("\n".join(good) + "\n")
    assert main([str(one), "--truth", str(truth[0])]) == 2
    assert capsys.readouterr().err == f"error: {one}: 630 rows (1 x 630), but the truth {truth[0]} has 2520 (4 x 630)\n"
    assert main([str(tmp_path / "nope.csv"), "--truth", str(one)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nope.csv'}: cannot read file: ")


@pytest.mark.slow
def test_crlf_lines_and_a_missing_final_newline_are_read(good: list[str], tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes("\r\n".join(good).encode())
    assert read_submission(path).shape == (SEQ_FRAMES, VALUES)


@pytest.mark.slow
def test_write_and_read_are_fast_and_exact(tmp_path: Path) -> None:
    """5 sequences x 630 rows x 6145 columns: the format the lab's pandas writes, byte for byte, in seconds."""
    rows = rows_of(5, seed=2)
    start = time.perf_counter()
    path = write_submission(tmp_path / "sub.csv", rows)
    wrote = time.perf_counter() - start
    with path.open() as f:
        assert f.readline() == HEADER + "\n"
        assert f.readline() == "0," + ",".join(map(str, rows[0])) + "\n"
    start = time.perf_counter()
    assert (read_submission(path) == rows).all()
    read = time.perf_counter() - start
    assert wrote < 10 and read < 20, (wrote, read)  # ~0.3 s and ~1.4 s on an idle 2-core machine


@pytest.mark.slow  # two interpreters
def test_the_commands_as_a_user_types_them(good: list[str], tmp_path: Path) -> None:
    sub = tmp_path / "submission.csv"
    sub.write_text("\n".join(good) + "\n")
    for cmd in ([PYTHON, "-m", "cvae.score"], [str(Path(PYTHON).parent / "cvae-study"), "score"]):
        done = subprocess.run([*cmd, str(sub), "--truth", str(sub)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        assert "public  (sequence 0): 100.000 dB" in done.stdout and "private" not in done.stdout
        assert "counts as 100 dB: 600 such rows" in done.stdout
