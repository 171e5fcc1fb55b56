"""A study's place (study.place): the state its folder is in, decided from the files there, and --fresh's move aside."""
from __future__ import annotations

from pathlib import Path

from study.place import Place


def test_study_state_and_move_aside(tmp_path: Path) -> None:
    place = Place(tmp_path / "s")
    exp = place.exp_dir
    assert place.state() == "new"
    exp.mkdir()
    (exp / "study.toml").write_text("")
    assert place.state() == "stale"
    (exp / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    assert place.state() == "unfinished"
    (exp / "finished.json").write_text("{}")
    assert place.state() == "finished"
    aside = Path(place.move_aside())
    assert not exp.exists() and aside.name.startswith("s.old-") and (aside / "finished.json").exists()
    exp.write_text("a file")
    assert place.state() == "foreign"
