"""cvae.files: a file is replaced whole or left as it was, and no temp file stays behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvae.files import atomic_write, atomic_write_text, temp_path


def test_a_file_is_replaced_whole_through_a_hidden_temp_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("new, half")
        assert path.read_text() == "old"  # a reader meanwhile still sees the whole old file
        tmp.write_text("new")

    atomic_write(path, write)
    assert path.read_text() == "new"
    assert seen == [tmp_path / f".report.html.{os.getpid()}.tmp"] == [temp_path(path)]
    assert temp_path(path, 123) == tmp_path / ".report.html.123.tmp"  # another process's, to clean up after it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    atomic_write_text(path, "{}\n")

    def fails(tmp: Path) -> None:
        tmp.write_text('{"runs": [')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails)
    assert path.read_text(encoding="utf-8") == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
