"""study.driver_state and study.callbacks.StateCopies: Tune's driver state kept whole across a kill
mid-write (the real kill and resume: test_run.py's killed-study test)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from study.callbacks import StateCopies
from study.driver_state import COPIES_DIR, keep_copies, reads_whole, repair
from study.place import PlaceError

STATE = "experiment_state-2026-12-06_10-00-00.json"
GEN = "search_gen_state-2026-12-06_10-00-00.json"
SEARCHER = "searcher-state-2026-12-06_10-00-00.pkl"


def _study(tmp_path: Path) -> Path:
    exp = tmp_path / "s"
    exp.mkdir()
    (exp / STATE).write_text(json.dumps({"trial_data": [["a", "b"]]}))
    (exp / GEN).write_bytes(pickle.dumps({"counter": 3}))  # Tune's search_gen_state-*.json is a pickle
    (exp / SEARCHER).write_bytes(pickle.dumps({"trials": [1, 2, 3]}))
    return exp


def test_a_file_cut_short_does_not_read_whole() -> None:
    whole = json.dumps({"trial_data": [1, 2, 3]}).encode()
    assert reads_whole(whole) and reads_whole(pickle.dumps([1, 2]))
    for cut in (b"", whole[:-1], whole[: len(whole) // 2], pickle.dumps(list(range(100)))[:-3]):
        assert not reads_whole(cut)


def test_copies_are_kept_of_whole_files_only_and_only_when_they_change(tmp_path: Path) -> None:
    exp = _study(tmp_path)
    seen: dict[str, tuple[int, int]] = {}
    assert sorted(keep_copies(exp, seen)) == sorted([STATE, GEN, SEARCHER])
    assert (exp / COPIES_DIR / STATE).read_bytes() == (exp / STATE).read_bytes()
    assert keep_copies(exp, seen) == []  # nothing changed
    (exp / STATE).write_text('{"trial_data": [')  # caught mid-write: the copy stays the last whole one
    assert keep_copies(exp, seen) == []
    assert json.loads((exp / COPIES_DIR / STATE).read_text()) == {"trial_data": [["a", "b"]]}
    (exp / STATE).write_text(json.dumps({"trial_data": []}))  # written whole at last
    assert keep_copies(exp, seen) == [STATE]
    assert json.loads((exp / COPIES_DIR / STATE).read_text()) == {"trial_data": []}
    assert not [p for p in (exp / COPIES_DIR).iterdir() if p.name.startswith(".")]  # no temp file left


def test_repair_puts_back_the_whole_copy_of_a_file_cut_short(tmp_path: Path) -> None:
    exp = _study(tmp_path)
    keep_copies(exp, {})
    assert repair(exp) == []  # all whole: nothing to do
    whole = (exp / STATE).read_bytes()
    (exp / STATE).write_bytes(b"")  # as a kill during Tune's copy leaves it
    (exp / SEARCHER).write_bytes((exp / SEARCHER).read_bytes()[:5])
    lines = repair(exp)
    assert len(lines) == 2 and f"{STATE} was cut short (0 bytes) when its driver was killed" in lines[0]
    assert (exp / STATE).read_bytes() == whole and pickle.loads((exp / SEARCHER).read_bytes()) == {"trials": [1, 2, 3]}


def test_repair_reads_only_the_newest_file_and_refuses_one_without_a_copy(tmp_path: Path) -> None:
    exp = _study(tmp_path)
    (exp / "experiment_state-2026-12-01_10-00-00.json").write_bytes(b"")  # an older session's: Tune never reads it
    assert repair(exp) == []
    (exp / STATE).write_bytes(b'{"tri')
    with pytest.raises(PlaceError) as e:
        repair(exp)
    assert str(exp / STATE) in str(e.value) and "no whole copy" in str(e.value) and "--fresh" in str(e.value)
    assert (exp / STATE).read_bytes() == b'{"tri'  # nothing changed, nothing lost


class _Trial:
    def __init__(self, path: Path) -> None:
        self.path = str(path)


def test_the_callback_keeps_copies_and_follows_a_moved_study(tmp_path: Path) -> None:
    exp = _study(tmp_path)
    cb = pickle.loads(pickle.dumps(StateCopies(tmp_path / "where-it-was", every_s=0.0)))  # as Tune saves it
    (exp / "trial_1").mkdir()
    cb.on_step_end(trials=[_Trial(exp / "trial_1")])
    assert cb.study_dir == str(exp.resolve()) and (exp / COPIES_DIR / GEN).is_file()
    assert not (tmp_path / "where-it-was").exists()
