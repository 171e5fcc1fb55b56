"""One driver per study (docs/ARCHITECTURE.md, "one driver per study"): the lock a driver holds and
the mark it leaves, and the liveness test that `status`, `list` and a second driver all use.

- The lock is `<storage>/.<name>.lock`, an flock held for the driver's whole life. The kernel drops
  it when the process dies, so a SIGKILLed driver never blocks its rerun, and two drivers started at
  the same instant cannot both win. It sits beside the study folder, not in it: `--fresh` renames the
  folder while the lock is held. The lock file's text names its holder (pid, host, since), for the
  refusal message.
- The mark is `<study>/driver.json` (study.place.DRIVER): the same identity plus a heartbeat, written
  again every HEARTBEAT_S seconds while the driver runs and removed when it exits. A reader on another
  machine, which cannot test a pid or an flock there, calls a driver alive while its heartbeat is
  younger than STALE_S.
- A URI study's mark is also uploaded to the URI: that object is the lock between machines (object
  stores have no flock). A driver refuses a URI study whose mark is another live driver's, unless
  `--steal-lock` (for a driver that died on another machine without removing its mark).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvae.files import atomic_write_text
from study.place import DRIVER, PlaceError, State

if TYPE_CHECKING:
    from study.place import Place

HEARTBEAT_S = 30.0  # how often a running driver rewrites its mark
STALE_S = 120.0  # a mark whose heartbeat is older than this names a dead driver (4 missed beats)
LOCK_WAIT_S = 5.0  # a second driver waits this long for the lock (a status probe holds it for microseconds)
READBACK_S = 2.0  # a URI driver reads its mark back after this long: a driver that wrote at once loses


class DriverBusy(PlaceError):
    """The study has a live driver: exit code 2, the message names it and how to watch it."""


@dataclass(frozen=True)
class Mark:
    """Who drives a study."""

    pid: int
    host: str
    started: float  # unix time the driver took the study
    heartbeat: float  # unix time of its last sign of life
    command: str = ""  # how it was started (argv), for the refusal message

    @classmethod
    def mine(cls, command: str = "") -> Mark:
        now = time.time()
        return cls(os.getpid(), socket.gethostname(), now, now, command)

    @classmethod
    def parse(cls, text: str) -> Mark | None:
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), float(d["started"]), float(d.get("heartbeat", d["started"])),
                       str(d.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def text(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def is_mine(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, since {since}"


def lock_path(exp_dir: Path) -> Path:
    """The lock file of the study folder exp_dir (beside it: see the module docstring)."""
    exp_dir = Path(exp_dir).expanduser().absolute()
    return exp_dir.parent / f".{exp_dir.name}.lock"


def read_mark(exp_dir: str | Path) -> Mark | None:
    """The mark in a study folder (None: none, or unreadable)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return Mark.parse((Path(exp_dir) / DRIVER).read_text(encoding="utf-8"))
    return None


def _pid_alive(pid: int) -> bool | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return None
    return True


def lock_held(exp_dir: str | Path) -> bool | None:
    """Whether a live process holds the study's lock (None: no lock file, or it cannot be probed)."""
    path = lock_path(Path(exp_dir))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def driver_alive(exp_dir: str | Path) -> bool | None:
    """Whether the study has a live driver: its lock is held, or (another host's driver) its mark's
    heartbeat is fresh. None: nothing tells (no lock file and no mark)."""
    held = lock_held(exp_dir)
    if held:
        return True
    mark = read_mark(exp_dir)
    if mark is None:
        return False if held is False else None
    if mark.host == socket.gethostname():
        if held is False:  # its lock file is there and nobody holds it: that driver is gone
            return False
        alive = _pid_alive(mark.pid)  # no lock file to probe (a folder moved aside, an older driver)
        if alive is not None:
            return alive
    return time.time() - mark.heartbeat < STALE_S


def tune_heartbeat(exp_dir: Path) -> float | None:
    """When a driver last saved Tune's experiment state (every second while it runs)."""
    from study._compat import EXPERIMENT_STATE_GLOB

    stamps = [f.stat().st_mtime for f in Path(exp_dir).glob(EXPERIMENT_STATE_GLOB)]
    return max(stamps) if stamps else None


def study_state(exp_dir: str | Path) -> State:
    """study.place's state of a study folder, with an unfinished one told apart: "running" (a live
    driver: driver_alive; with no trace of one, Tune's state saved in the last STALE_S seconds) or
    "interrupted" (rerun to resume)."""
    from study.place import Place

    exp_dir = Path(exp_dir)
    state = Place(exp_dir).state()
    if state != State.UNFINISHED:
        return state
    alive = driver_alive(exp_dir)
    if alive is None:
        beat = tune_heartbeat(exp_dir)
        alive = beat is not None and time.time() - beat < STALE_S
    return State.RUNNING if alive else State.INTERRUPTED


def place_state(place: Place) -> State:
    """study_state of a study wherever it lives; a URI study is judged by its mark on the URI (read
    without copying the study) and by the lock of its local mirror."""
    if place.remote is None:
        return study_state(place.exp_dir)
    state = place.state()
    if state != State.UNFINISHED:
        return state
    if lock_held(place.exp_dir):
        return State.RUNNING
    mark = None
    with contextlib.suppress(Exception):  # missing or unreadable: no live driver named
        mark = Mark.parse(place.remote.read_text(place.name, DRIVER))
    alive = mark is not None and time.time() - mark.heartbeat < STALE_S
    if alive and mark is not None and mark.host == socket.gethostname():
        alive = _pid_alive(mark.pid) is not False
    return State.RUNNING if alive else State.INTERRUPTED


class DriverLock:
    """The driver's hold on a study (see the module docstring): `acquire()` before deciding anything
    about the study, `mark()` once its folder is ready, `release()` at the end (also as a context
    manager). DriverBusy when another driver holds it."""

    def __init__(self, place: Place, command: str = "", steal: bool = False) -> None:
        self.place = place
        self.steal = steal
        self.me = Mark.mine(command)
        self._fd: int | None = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    # -- taking the study
    def acquire(self) -> None:
        path = lock_path(self.place.exp_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's identity is in it
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = Mark.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                    os.close(fd)
                    raise DriverBusy(self._busy(holder, f"another driver holds {path}")) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.me.text().encode("utf-8"), 0)
        self._fd = fd
        if self.place.remote is not None:
            try:
                self._claim_remote()
            except BaseException:
                self.release()
                raise

    def _remote_mark(self) -> Mark | None:
        assert self.place.remote is not None
        with contextlib.suppress(Exception):  # missing, or unreadable: no claim
            return Mark.parse(self.place.remote.read_text(self.place.name, DRIVER))
        return None

    def _claim_remote(self) -> None:
        """Take a URI study: refuse another live driver's mark (unless steal), upload ours, read it back."""
        other = self._remote_mark()
        # A mark from this host is a dead driver's: a live one here would hold the flock we now hold.
        elsewhere = other is not None and other.host != socket.gethostname()
        if other is not None and elsewhere and time.time() - other.heartbeat < STALE_S and not self.steal:
            raise DriverBusy(self._busy(other, "") + f"; if that driver is dead (its heartbeat stops: "
                             f"{time.time() - other.heartbeat:.0f} s ago now, stale after {STALE_S:.0f} s), "
                             f"rerun with --steal-lock")
        if self.place.names() is None:
            return  # a new study: its folder (and the mark in it) appears with mark()
        self._upload_mark()
        time.sleep(READBACK_S)
        now = self._remote_mark()
        if now is not None and not now.is_mine():
            raise DriverBusy(self._busy(now, "") + " (it took the study at the same time)")

    def _busy(self, holder: Mark | None, fallback: str) -> str:
        shown = self.place.shown()
        who = f"{shown} is being run by {holder.describe()}" if holder else f"{shown} is being run: {fallback}"
        return f"{who}; watch it with `cvae-study status {shown}` (one driver per study)"

    # -- while running
    def mark(self) -> None:
        """Write the mark into the (prepared) study folder and keep its heartbeat going."""
        self._write_mark()
        self._beat = threading.Thread(target=self._heartbeats, name="driver-heartbeat", daemon=True)
        self._beat.start()

    def _write_mark(self) -> None:
        self.me = Mark(self.me.pid, self.me.host, self.me.started, time.time(), self.me.command)
        with contextlib.suppress(OSError):
            atomic_write_text(self.place.exp_dir / DRIVER, self.me.text())
        if self.place.remote is not None:
            self._upload_mark()

    def _upload_mark(self) -> None:
        local = self.place.exp_dir / DRIVER
        try:
            if not local.is_file():
                self.place.exp_dir.mkdir(parents=True, exist_ok=True)
                local.write_text(self.me.text(), encoding="utf-8")
            self.place.push(DRIVER)
        except Exception:  # noqa: BLE001 - a missed beat is not a failed study; the next one retries
            pass

    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write_mark()

    # -- letting go
    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        mine = read_mark(self.place.exp_dir)
        if mine is not None and mine.is_mine():
            with contextlib.suppress(OSError):
                (self.place.exp_dir / DRIVER).unlink()
        if self.place.remote is not None:
            other = self._remote_mark()
            if other is not None and other.is_mine():
                self.place.remote.delete(self.place.name, DRIVER)
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking it would race a waiter)
            self._fd = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["HEARTBEAT_S", "STALE_S", "DriverBusy", "DriverLock", "Mark", "driver_alive", "lock_held", "lock_path",
           "place_state", "read_mark", "study_state", "tune_heartbeat"]
