"""Where a study lives and what state it is in: the one home of the results folder's file names.

A study lives in `<storage>/<name>/`: a local folder, or a URI pyarrow understands (study.storage),
which the driver mirrors into a local folder. From the names in that folder its state is

    new         nothing there yet
    unfinished  a restorable Ray Tune experiment (Tuner.can_restore) without finished.json
    finished    finished.json: every trial has ended
    stale       only study.toml / optuna.db: a start that died before the Tune experiment existed
    foreign     files this tool did not write

and `Place.move_aside()` renames it to `<name>.old-<timestamp>` (never deletes: for a local folder
cvae.checkpoint.move_aside, which the single-run CLI's --fresh uses too).
"""
from __future__ import annotations

import contextlib
import enum
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae.checkpoint import RESULTS_DIR, move_aside
from study.storage import RemoteStorage, StorageError, is_uri, open_storage, open_study_uri

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The results folder's own files (Ray Tune writes the trial folders and its experiment state beside them).
STUDY_COPY = "study.toml"  # the study file's text, as first started
OPTUNA_DB = "optuna.db"  # Optuna's RDB storage (sqlite): optuna.load_study(study_name=<name>, storage=...)
FINISHED = "finished.json"  # written when every trial has ended: the study is complete
BEST = "best.toml"  # the best configuration as a single-run config for `python -m cvae.train`
REPORT = "report.html"  # study.report's page
SUBMISSION_SCORE = "submission_score.json"  # `cvae-study predict`'s score of the best run's submission (cvae.predict's score.json)
MANIFEST = "manifest.json"  # one record per run (start, resumes): code, packages, machine, data (study.manifest)
DRIVER = "driver.json"  # the running driver's pid, host and heartbeat (study.driver; removed when it exits)
TABLES_DIR = "tables"  # study.analyze's parquet tables (and the report's cached rollouts)
# Ray Tune's files in each trial folder (<name>/<trial>/), beside its checkpoint_NNNNNN/ folders.
TRIAL_PARAMS = "params.json"  # the sampled configuration
TRIAL_RESULTS = "result.json"  # one JSON object per reported epoch
TRIAL_ERROR = "error.txt"  # the trial's failures
MIN_FREE_BYTES = 64 * 2**20  # free space a local storage must have before a study starts
MIRROR_ROOT = Path(RESULTS_DIR)  # where the local mirrors of URI studies go (results/<scheme>/<path>/<name>)


class PlaceError(RuntimeError):
    """Results cannot go (or be found) there: exit code 2, the message says what to do."""


class State(str, enum.Enum):
    """A study's state: the one list (study.driver tells an unfinished study's two apart)."""

    NEW = "new"  # nothing there yet
    UNFINISHED = "unfinished"  # restorable, not finished: RUNNING or INTERRUPTED once its driver is judged
    RUNNING = "running"  # unfinished, and its driver is alive
    INTERRUPTED = "interrupted"  # unfinished, and no driver: rerun to resume
    FINISHED = "finished"  # finished.json: every trial has ended
    STALE = "stale"  # only study.toml / optuna.db / manifest.json: a start that died before Tune's experiment
    FOREIGN = "foreign"  # files this tool did not write

    __str__ = str.__str__  # prints (and formats) as its value
    __format__ = str.__format__


def state_of(names: set[str] | None, restorable: bool) -> State:
    """A study folder's state from its entry names (None: no such folder) and whether Ray Tune can
    restore the experiment in it (see the module docstring)."""
    names = (names or set()) - {DRIVER}  # who drives a study is not part of its results
    if not names:
        return State.NEW
    if FINISHED in names:
        return State.FINISHED
    if restorable:
        return State.UNFINISHED
    if names <= {STUDY_COPY, OPTUNA_DB, MANIFEST}:  # all three are written before Ray Tune starts
        return State.STALE
    return State.FOREIGN


def storage_problem(storage: Path) -> str | None:
    """Why results cannot be written under `storage` (creating it if needed), or None."""
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    free = shutil.disk_usage(storage).free
    if free < MIN_FREE_BYTES:
        # Checkpoints land there every epoch: a full disk mid-study fails trials one by one.
        return (f"only {free / 2**20:.1f} MB free on {storage} (a study needs at least "
                f"{MIN_FREE_BYTES / 2**20:.0f} MB for its checkpoints); free some space or choose another --storage")
    return None


def same_study(copy_text: str | None, raw_text: str) -> bool:
    """Whether a results folder's study.toml is the study file `raw_text` (parsed TOML is compared,
    so edited comments or layout do not count as a change; no readable copy: trust the user)."""
    try:
        old = tomllib.loads(copy_text) if copy_text is not None else None
    except tomllib.TOMLDecodeError:
        old = None
    return old is None or old == tomllib.loads(raw_text)


@dataclass
class Place:
    """Where one study's results live: a local folder, or a URI with a local mirror (study.storage).

    exp_dir is the folder the driver reads and writes (the study folder itself, or the mirror)."""

    exp_dir: Path
    remote: RemoteStorage | None = None

    @property
    def name(self) -> str:
        return self.exp_dir.name

    def shown(self) -> str:
        return self.remote.show(self.name) if self.remote else str(self.exp_dir)

    def names(self) -> set[str] | None:
        """The entry names of the study folder (None: it does not exist)."""
        if self.remote is not None:
            return self.remote.names(self.name)
        if not self.exp_dir.exists():
            return None
        return {p.name for p in self.exp_dir.iterdir()} if self.exp_dir.is_dir() else {"(a file)"}

    def state(self) -> State:
        names = self.names()
        return state_of(names, bool(names) and FINISHED not in names and self.restorable())

    def restorable(self) -> bool:
        """Whether Ray Tune can restore the experiment here (Tuner.can_restore's answer, without Ray)."""
        from study._compat import restorable

        return restorable(self.tune_path(), self.remote.fs if self.remote else None)

    def move_aside(self) -> str:
        """Rename the study folder to `<name>.old-<timestamp>` (never deletes); returns where it went."""
        if self.remote is None:
            return str(move_aside(self.exp_dir))
        aside = self.remote.move_aside(self.name)
        shutil.rmtree(self.exp_dir, ignore_errors=True)  # the mirror is only a cache of the URI
        return aside

    def study_copy(self) -> str | None:
        """The text of the study file the results were started with, if any."""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if self.remote:
                return self.remote.read_text(self.name, STUDY_COPY)
            return (self.exp_dir / STUDY_COPY).read_text(encoding="utf-8")
        return None

    def prepare(self) -> None:
        """Make exp_dir ready: for a URI, a fresh (empty) mirror."""
        if self.remote is not None:
            shutil.rmtree(self.exp_dir, ignore_errors=True)  # the mirror is only a cache of the URI
        self.exp_dir.mkdir(parents=True, exist_ok=True)

    def push(self, *files: str) -> None:
        """Upload these files of exp_dir to the URI (nothing for a local study)."""
        if self.remote is None:
            return
        for f in files:
            path = self.exp_dir / f
            if path.is_file():
                self.remote.upload(path, self.name)

    def pull(self) -> None:
        """Copy the whole study from the URI into the mirror (nothing for a local study)."""
        if self.remote is not None:
            self.remote.download(self.name, self.exp_dir)

    def location(self, local: Path) -> str:
        """A path inside exp_dir as the user should look for it (on the URI for a remote study)."""
        if self.remote is None:
            return str(local)
        with contextlib.suppress(ValueError):
            return self.remote.show(self.name, *local.relative_to(self.exp_dir).parts)
        return str(local)

    def tune_storage(self) -> dict[str, Any]:
        """RunConfig's storage arguments."""
        if self.remote is None:
            return {"storage_path": str(self.exp_dir.absolute().parent)}
        return {"storage_path": self.remote.root, "storage_filesystem": self.remote.fs}

    def tune_path(self) -> str:
        # absolute: pyarrow takes a relative path for a URI without a scheme (`status results/kl`)
        return self.remote.path(self.name) if self.remote else str(self.exp_dir.absolute())


def study_place(storage: str, name: str) -> Place:
    """Where a new or resumed study `name` goes under `storage` (a folder or a URI), checked:
    PlaceError if results cannot be written there."""
    if is_uri(storage):
        try:
            remote = open_storage(storage)
        except StorageError as e:
            raise PlaceError(f"--storage {storage}: {e}") from e
        problem = remote.problem()
        if problem:
            raise PlaceError(f"--storage {remote.show()}: {problem}")
        return Place(remote.mirror(MIRROR_ROOT.resolve()) / name, remote)
    folder = Path(storage).expanduser().resolve()
    problem = storage_problem(folder)
    if problem:
        raise PlaceError(f"--storage {storage}: {problem}")
    return Place(folder / name)


def existing_place(where: str) -> Place:
    """An existing study's place from its folder or its own URI (`<storage>/<name>`); a URI study is
    copied into its mirror. PlaceError if there is no such folder."""
    if not is_uri(where):
        path = Path(where)
        if not path.is_dir():
            raise PlaceError(f"{path}: no such results dir (run the study first: python -m study.run STUDY.toml)")
        return Place(path)
    try:
        remote, name = open_study_uri(where)
        if remote.names(name) is None:
            raise StorageError(f"{remote.show(name)}: no such study folder")
        place = Place(remote.mirror(MIRROR_ROOT.resolve()) / name, remote)
        place.pull()
    except (StorageError, OSError) as e:
        raise PlaceError(str(e)) from e
    return place


__all__ = ["BEST", "DRIVER", "FINISHED", "MANIFEST", "OPTUNA_DB", "REPORT", "RESULTS_DIR", "STUDY_COPY", "SUBMISSION_SCORE", "TABLES_DIR", "TRIAL_ERROR",
           "TRIAL_PARAMS", "TRIAL_RESULTS", "Place", "PlaceError", "State", "existing_place", "same_study", "state_of",
           "storage_problem", "study_place"]
