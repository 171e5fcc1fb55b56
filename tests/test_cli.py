"""`cvae-study` (study.cli) on a study in every state, named as a user's shell names it: relative to
the current folder, absolute from elsewhere, and by its URI (file://, the storage pyarrow opens
without a server). States: new (nothing there), running (a live driver holds it), interrupted (its
driver is gone), finished, and moved aside (`--fresh`'s <name>.old-<timestamp>)."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from fake_results import write_fake_study
from study._compat import EXPERIMENT_STATE_GLOB
from study.best import conclude
from study.cli import main as cli
from study.driver import STALE_S, Mark, read_mark
from study.place import DRIVER, REPORT
from study_helpers import driver_holding

# state -> the folder name its study has, and the state `status` and `list` report for it
STATES = {"new": ("nothing", None), "running": ("live", "running"), "interrupted": ("stopped", "interrupted"),
          "finished": ("done", "finished"), "aside": ("gone.old-20261202-050000", "finished")}


def _make(results: Path) -> None:
    done = write_fake_study(results, "done")
    conclude(done)  # best.toml, as a finished study has
    for name in ("live", "stopped"):
        exp = write_fake_study(results, name, partial=True)
        (exp / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
        old = time.time() - 2 * STALE_S  # Tune's state saved long ago: only a driver can say "running"
        for f in exp.glob(EXPERIMENT_STATE_GLOB):
            os.utime(f, (old, old))
    conclude(write_fake_study(results, "gone"))  # finished, then moved aside
    (results / "gone").rename(results / STATES["aside"][0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<world>/home/results/<the studies>, <world>/elsewhere (another cwd), <world>/bucket (a file:// storage)."""
    world = tmp_path_factory.mktemp("cli-world")
    _make(world / "home" / "results")
    (world / "elsewhere").mkdir()
    shutil.copytree(world / "home" / "results", world / "bucket")
    # the URI study's driver runs on another machine: its mark on the URI beats
    (world / "bucket" / "live" / DRIVER).write_text(Mark(4242, "other-machine", time.time() - 60, time.time()).text())
    return world


@pytest.fixture(scope="module")
def live(world: Path) -> Iterator[None]:
    with driver_holding(world / "home" / "results" / "live"):
        yield


FORMS = ("relative", "absolute", "uri")


def _where(world: Path, form: str, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if form == "relative":
        monkeypatch.chdir(world / "home")
        return f"results/{name}"
    monkeypatch.chdir(world / "elsewhere")
    return f"file://{world / 'bucket' / name}" if form == "uri" else str(world / "home" / "results" / name)


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("state", list(STATES))
def test_status_best_and_report_in_every_state(state: str, form: str, world: Path, live: None,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    name, shown_state = STATES[state]
    where = _where(world, form, name, monkeypatch)
    code = cli(["status", where])
    out, err = capsys.readouterr()
    if shown_state is None:
        assert code == 2 and "no such" in err and "Traceback" not in err
        assert cli(["best", where]) == 2 and cli(["report", where]) == 2
        return
    assert code == 0, err
    assert f": {shown_state} (" in out.splitlines()[0] and "trials:" in out
    code = cli(["best", where])
    out, err = capsys.readouterr()
    if shown_state == "finished":
        assert code == 0 and "python -m cvae.train --config" in out
    else:
        assert code == 1 and "no best.toml yet" in err and "so far" in err
    if form == "relative":  # the path form that broke; the report of a URI study is test_storage's
        assert cli(["report", where]) == 0
        assert (world / "home" / where / REPORT).is_file()


@pytest.mark.parametrize("form", FORMS)
def test_list_names_every_study_with_its_state(form: str, world: Path, live: None, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    where = _where(world, form, "", monkeypatch).rstrip("/")
    assert cli(["list", where]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert sorted(rows) == sorted([n, s] for n, s in STATES.values() if s is not None)


@pytest.mark.slow
@pytest.mark.parametrize("form", ("relative", "absolute"))
def test_run_refuses_a_running_and_a_finished_study_touching_nothing(form: str, world: Path, live: None,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("study.driver.LOCK_WAIT_S", 0.2)  # how long it waits for the holder does not matter here
    results = world / "home" / "results"

    def files(exp: Path) -> list[tuple[str, int | None]]:
        # every file and its mtime; the live holder rewrites its own mark every HEARTBEAT_S, so that one's
        # mtime is not the refused run's doing (the mark's holder is checked below)
        return sorted((p.name, None if p.name == DRIVER else p.stat().st_mtime_ns) for p in exp.iterdir())

    for name, reason in (("live", "is being run by pid "), ("done", "--fresh")):
        before = files(results / name)
        study = _where(world, form, name, monkeypatch) + "/study.toml"
        storage = "results" if form == "relative" else str(results)
        assert cli(["run", study, "--storage", storage]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err, err
        assert files(results / name) == before
        if name == "live":
            assert f"on {socket.gethostname()}, since" in err and "cvae-study status" in err
            assert read_mark(results / name).command == "holder"  # its mark is still the holder's
