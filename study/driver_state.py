"""Tune's driver state in a local study folder, kept whole across a kill of the driver.

Tune's driver writes its experiment state (`experiment_state-*.json`), its search generator's
(`search_gen_state-*.json`, a pickle despite its name) and its searcher's (`searcher-state-*.pkl`)
into a staging folder and copies them into the study folder every second or so, overwriting them
in place. A driver killed during a copy (SIGKILL, the out-of-memory killer, a power cut) leaves one
cut short, often empty; Tuner.restore then fails on it, and Tune's answer is to start the run over
beside the old trials.
So while a study runs, `study.callbacks.StateCopies` keeps the last whole version of each in
`<study>/.driver-state/` (`keep_copies`: copied when it changes and reads back whole, written
atomically), and before a resume `study.run` calls `repair`, which puts back the copy of any file
Tune would read that no longer reads back whole, then has each unfinished trial that the state
points at a checkpoint Tune has since deleted resume from its newest one left
(`study._compat.repoint_lost_checkpoints`). Local folders only: an object on a URI appears whole
or not at all.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import pickle
import time
from pathlib import Path

from cvae.files import atomic_write
from study._compat import EXPERIMENT_STATE_GLOB, SEARCH_GEN_STATE_GLOB, SEARCHER_STATE_GLOB, repoint_lost_checkpoints
from study.place import PlaceError

log = logging.getLogger(__name__)

STATE_GLOBS = (EXPERIMENT_STATE_GLOB, SEARCH_GEN_STATE_GLOB, SEARCHER_STATE_GLOB)
COPIES_DIR = ".driver-state"  # in the study folder: the last whole copy of each


def reads_whole(data: bytes) -> bool:
    """Whether `data` (a state file's bytes) is a whole file: a pickle that loads (what its first byte
    says; search_gen_state-*.json is one too), else JSON that parses. A copy cut short is neither."""
    try:
        if data[:1] == b"\x80":  # a pickle's PROTO opcode
            pickle.loads(data)  # noqa: S301 - the study's own searcher state, as Tune itself loads it
        else:
            json.loads(data)
    except Exception:  # noqa: BLE001 - whatever a cut-short file raises (an empty one is no JSON)
        return False
    return True


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def keep_copies(exp_dir: str | Path, seen: dict[str, tuple[int, int]]) -> list[str]:
    """Copy each state file of `exp_dir` that changed since `seen` (name -> (mtime_ns, size), updated
    here) and reads back whole into `<exp_dir>/.driver-state/`; a file caught mid-write is left for the
    next call. Returns the names copied."""
    exp_dir = Path(exp_dir)
    copied = []
    for path in exp_dir.iterdir():  # one listing for the three kinds: called ten times a second
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in STATE_GLOBS):
            continue
        try:
            st = path.stat()
            if seen.get(path.name) == (st.st_mtime_ns, st.st_size):
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if reads_whole(data):
            _write(exp_dir / COPIES_DIR / path.name, data)
            seen[path.name] = (st.st_mtime_ns, st.st_size)
            copied.append(path.name)
    return copied


def repair(exp_dir: str | Path) -> list[str]:
    """Before Tuner.restore of the study in `exp_dir`: put back the whole copy of each state file Tune
    would read (the newest of each kind) that does not read back whole, then repoint the trials whose
    checkpoint Tune deleted after saving that state. Returns one line per file put back and per trial
    repointed; raises PlaceError when a cut-short file has no whole copy (the study cannot be resumed)."""
    exp_dir = Path(exp_dir)
    done = []
    for pattern in STATE_GLOBS:
        files = sorted(exp_dir.glob(pattern))
        if not files:
            continue
        newest = files[-1]  # what Tune reads: the newest by name (its names carry the session's start)
        data = newest.read_bytes()
        if reads_whole(data):
            continue
        copy = exp_dir / COPIES_DIR / newest.name
        if not copy.is_file() or not reads_whole(copy.read_bytes()):
            raise PlaceError(f"{newest} is cut short ({len(data)} bytes: its driver was killed while Ray Tune "
                             f"was writing it) and no whole copy of it was kept in {copy.parent}, so the study "
                             f"cannot be resumed; --fresh moves it aside (deleting nothing) and starts over")
        _write(newest, copy.read_bytes())
        saved = time.strftime("%H:%M:%S", time.localtime(copy.stat().st_mtime))
        done.append(f"{newest.name} was cut short ({len(data)} bytes) when its driver was killed: "
                    f"put back its last whole copy (saved {saved})")
    try:
        done += repoint_lost_checkpoints(exp_dir)
    except Exception as e:  # noqa: BLE001 - Ray's private layout moved: Tune restores as it would have
        log.warning("could not check the saved state's checkpoints against %s (%s: %s)", exp_dir, type(e).__name__, e)
    return done
