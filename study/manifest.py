"""A study's manifest: `results/<study>/manifest.json`, one record per run of the study (its start
and each resume), so every result can be traced to its code, packages, machine, data and study file.

Each record (a JSON object in the file's list, oldest first):

    started, resumed   when this run began, and whether it resumed the study
    code               git commit, whether tracked files differed from it, sha256 of `git diff HEAD`
                       (commit null outside a git checkout, with the reason in `note`)
    versions           python, torch, ray, optuna, polars (null: not installed)
    machine            hostname, CPU model and count, GPU names ([] without CUDA)
    dataset            root, frame files per folder, sha256 of their names, sizes and mtimes, and
                       for the embedded synthetic data its generator's parameters
    study_sha256       of the study file's text (the bytes of results/<study>/study.toml)

`record_run(place, spec, resumed)` appends this run's record and returns one warning line naming
what changed since the previous run (commit, uncommitted diff, dataset), or None.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae.config import DataConfig
from cvae.files import atomic_write_text
from study.place import MANIFEST, Place
from study.spec import StudySpec

log = logging.getLogger(__name__)

PACKAGES = ("torch", "ray", "optuna", "polars")  # python's own version comes from platform
CODE_DIR = Path(__file__).resolve().parents[1]  # the checkout holding cvae/ and study/ (or site-packages)
_GIT_TIMEOUT_S = 20
_SHORT = 12  # hex digits shown for a commit or a hash in warnings and the report


@dataclass(frozen=True)
class Code:
    """The code's version, from git."""

    commit: str | None  # HEAD's sha; None when not a git checkout (see note)
    dirty: bool | None  # tracked files differ from HEAD (untracked files do not count)
    diff_sha256: str | None  # sha256 of `git diff HEAD` when dirty, else None
    note: str = ""  # why commit is None

    def shown(self) -> str:
        if self.commit is None:
            return f"none ({self.note})"
        return self.commit[:_SHORT] + (f" + uncommitted changes {self.diff_sha256[:_SHORT]}"
                                       if self.dirty and self.diff_sha256 else "")


@dataclass(frozen=True)
class Machine:
    hostname: str
    cpu_model: str | None  # /proc/cpuinfo's "model name" (else platform.processor())
    cpu_count: int | None  # logical CPUs of the machine (os.cpu_count)
    gpus: list[str]  # torch.cuda's device names; [] without CUDA


@dataclass(frozen=True)
class DatasetPrint:
    """Which dataset the study's base config reads, and a fingerprint that changes when its files do."""

    root: str  # the resolved dataset folder (for the embedded data: its cache folder)
    synthetic: bool  # the embedded synthetic dancer (cvae.synthetic), not a user's folder
    frames: dict[str, int]  # PNG files per <split>/<split>_<kind> folder, e.g. {"train/train_img": 1024}
    files_sha256: str  # sha256 over every PNG's relative path, size (bytes) and mtime (ns), in path order
    generator: dict[str, Any] | None  # the embedded data's DataConfig synthetic_* fields and format; None otherwise
    # the validation video's statistics at the study's frame size and validation length, beside the lab's
    # figures (cvae.stats.Row.to_json rows): whether the data resembles the lab's, measured once per run
    statistics: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class RunRecord:
    started: str  # local time, ISO 8601
    resumed: bool
    code: Code
    versions: dict[str, str | None]
    machine: Machine
    dataset: DatasetPrint
    study_sha256: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRecord:
        return cls(started=d["started"], resumed=d["resumed"], code=Code(**d["code"]), versions=d["versions"],
                   machine=Machine(**d["machine"]), dataset=DatasetPrint(**d["dataset"]),
                   study_sha256=d["study_sha256"])


# -- what a record holds ----------------------------------------------------------------------------
def _git(code_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(code_dir), *args], capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)


def code_version(code_dir: Path = CODE_DIR) -> Code:
    """The git commit of `code_dir`'s checkout, whether tracked files differ, and the diff's sha256."""
    try:
        head = _git(code_dir, "rev-parse", "--verify", "HEAD")
    except FileNotFoundError:
        return Code(None, None, None, "git is not installed")
    except subprocess.TimeoutExpired:
        return Code(None, None, None, f"git did not answer in {_GIT_TIMEOUT_S} s")
    if head.returncode != 0:
        err = head.stderr.decode(errors="replace").strip().splitlines()
        why = "not a git checkout" if not err or "not a git repository" in err[0] else f"git: {err[0]}"
        return Code(None, None, None, f"{why} ({code_dir})")
    # no colour, no external diff tool: the bytes hashed must not depend on the user's git config
    diff = _git(code_dir, "diff", "HEAD", "--no-color", "--no-ext-diff").stdout
    return Code(head.stdout.decode().strip(), bool(diff), hashlib.sha256(diff).hexdigest() if diff else None)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or None


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine() -> Machine:
    return Machine(socket.gethostname(), _cpu_model(), os.cpu_count(), _gpus())


def _folder_key(rel: Path) -> str:
    # <split>/<split>_img/...: the test split's per-sequence subfolders count under their split's folder
    return "/".join(rel.parts[:2]) if len(rel.parts) > 2 else rel.parent.as_posix()


def fingerprint(cfg: DataConfig, root: Path | None = None) -> DatasetPrint:
    """The dataset's fingerprint: PNG files per folder and a sha256 of their paths, sizes and mtimes.

    The PNGs are those cvae.data reads (hidden files and other clutter are not frames). Names, sizes
    and mtimes, not contents: cheap on the lab's ~25k frames, and a copy without preserved mtimes
    counts as a change, which is the safe side."""
    if root is None:
        from cvae.data import DatasetError, dataset_root  # here: `cvae-study status` imports this module, not torch

        try:
            root = dataset_root(cfg)
        except DatasetError:  # a folder that has gone fingerprints as empty, under the path it had
            root = Path(str(cfg.root)).expanduser().resolve()
    h = hashlib.sha256()
    frames: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(".png"):
                continue
            path = Path(dirpath) / name
            st = path.stat()
            rel = path.relative_to(root)
            h.update(f"{rel.as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            key = _folder_key(rel)
            frames[key] = frames.get(key, 0) + 1
    generator = None
    if cfg.synthetic:
        from cvae.synthetic import FORMAT_VERSION

        generator = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name.startswith("synthetic_")}
        generator["format_version"] = FORMAT_VERSION
    return DatasetPrint(str(root), cfg.synthetic, dict(sorted(frames.items())), h.hexdigest(), generator)


def data_statistics(cfg: DataConfig) -> list[dict[str, Any]]:
    """cvae.stats' rows of the validation video the study validates on (as loaded: its frame size and
    validation length); [] when it cannot be loaded (the fingerprint still says which data it was)."""
    from cvae.data import DatasetError, load_dataset
    from cvae.stats import video_rows

    try:
        val = load_dataset(cfg).val  # memoised: the driver has just loaded it
    except (DatasetError, OSError) as e:
        log.warning("no dataset statistics for the manifest: %s", e)
        return []
    return [row.to_json() for row in video_rows(val.img, val.label, (cfg.frame_H, cfg.frame_W), [len(val)])]


def dataset_record(cfg: DataConfig, previous: DatasetPrint | None = None) -> DatasetPrint:
    """The fingerprint of the data a study reads, with its validation video's statistics: those of
    `previous` (the last run's record) when its files are the same and its statistics were measured
    at this frame size and length, else measured again (seconds at the lab's size)."""
    now = fingerprint(cfg)
    size, length = f"{cfg.frame_H}x{cfg.frame_W}", cfg.val_video_len
    same = (previous is not None and previous.statistics and (previous.root, previous.files_sha256, previous.generator)
            == (now.root, now.files_sha256, now.generator)
            and all(r.get("frame_size") == size and r.get("val_frames") <= length for r in previous.statistics))
    return dataclasses.replace(now, statistics=previous.statistics if same else data_statistics(cfg))  # type: ignore[union-attr]


def make_record(spec: StudySpec, resumed: bool, code_dir: Path = CODE_DIR, previous: RunRecord | None = None) -> RunRecord:
    """This run's record; the dataset is the study's base config's ([space] may vary [data] per trial),
    its statistics reused from `previous` while the data is unchanged (dataset_record)."""
    data = dataset_record(spec.base_config().data, previous.dataset if previous is not None else None)
    return RunRecord(started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed=resumed, code=code_version(code_dir),
                     versions=package_versions(), machine=machine(), dataset=data,
                     study_sha256=hashlib.sha256(spec.raw_text.encode("utf-8")).hexdigest())


# -- what changed -----------------------------------------------------------------------------------
def changes(old: RunRecord, new: RunRecord) -> list[str]:
    """What differs between two runs' code and data, each as `what old -> new`."""
    out: list[str] = []
    if old.code.commit != new.code.commit:
        out.append(f"commit {old.code.shown()} -> {new.code.shown()}")
    elif old.code.diff_sha256 != new.code.diff_sha256:
        out.append(f"uncommitted changes {(old.code.diff_sha256 or 'none')[:_SHORT]} -> "
                   f"{(new.code.diff_sha256 or 'none')[:_SHORT]}")
    a, b = old.dataset, new.dataset
    if a.root != b.root:
        out.append(f"dataset root {a.root} -> {b.root}")
    if a.files_sha256 != b.files_sha256:
        counts = [f"{k} {a.frames.get(k, 0)} -> {b.frames.get(k, 0)} frames"
                  for k in sorted(set(a.frames) | set(b.frames)) if a.frames.get(k, 0) != b.frames.get(k, 0)]
        out.append(f"dataset fingerprint {a.files_sha256[:_SHORT]} -> {b.files_sha256[:_SHORT]}"
                   + (f" ({', '.join(counts)})" if counts else " (same frame counts; names, sizes or mtimes differ)"))
    if a.generator != b.generator:
        ga, gb = a.generator or {}, b.generator or {}
        out.append("synthetic generator " + ", ".join(f"{k} {ga.get(k)} -> {gb.get(k)}"
                                                      for k in sorted(set(ga) | set(gb)) if ga.get(k) != gb.get(k)))
    return out


# -- the file ---------------------------------------------------------------------------------------
def _runs_from(text: str, source: str) -> list[RunRecord]:
    try:
        data = json.loads(text)
        return [RunRecord.from_json(d) for d in data["runs"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{source}: not a manifest of this tool ({type(e).__name__}: {e})") from None


def read_manifest(exp_dir: str | Path) -> list[RunRecord]:
    """The study's run records, oldest first ([] when it has no manifest). ValueError for an unreadable one."""
    path = Path(exp_dir) / MANIFEST
    if not path.is_file():
        return []
    return _runs_from(path.read_text(encoding="utf-8"), str(path))


def code_line(exp_dir: str | Path) -> str:
    """One line for `cvae-study status`: the commit the study last ran on (and whether its runs differ)."""
    try:
        runs = read_manifest(exp_dir)
    except (OSError, ValueError) as e:
        return f"commit: unknown ({e})"
    if not runs:
        return f"commit: not recorded (no {MANIFEST}: the study started before manifests were kept)"
    commits = {r.code.commit for r in runs}
    spread = f"; its {len(runs)} runs span {len(commits)} commits ({MANIFEST})" if len(commits) > 1 else ""
    return f"commit: {runs[-1].code.shown()}{spread}"


def _previous(place: Place) -> str | None:
    # A URI study's mirror is emptied before a run (Place.prepare): its manifest is read from the URI.
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if place.remote is not None:
            return place.remote.read_text(place.name, MANIFEST)
        return (place.exp_dir / MANIFEST).read_text(encoding="utf-8")
    return None


def record_run(place: Place, spec: StudySpec, resumed: bool, code_dir: Path = CODE_DIR) -> str | None:
    """Append this run's record to the study's manifest.json (a new list for a new study folder) and
    return one warning line naming what changed since the previous run on a resume, else None."""
    path = place.exp_dir / MANIFEST
    text = _previous(place)
    runs: list[RunRecord] = []
    warning = None
    if text is not None:
        try:
            runs = _runs_from(text, place.location(path))
        except ValueError as e:
            kept = path.with_name(f"{MANIFEST}.unreadable")
            kept.write_text(text, encoding="utf-8")  # kept, not lost: the new list starts over
            warning = f"{e}; kept as {kept.name}, a new manifest starts here"
    new = make_record(spec, resumed, code_dir, runs[-1] if resumed and runs else None)
    if resumed and runs and (what := changes(runs[-1], new)):
        warning = (f"{place.shown()} resumes on other code or data than its last run ({runs[-1].started}): "
                   f"{'; '.join(what)}. Trials before and after may not compare.")
    body = {"runs": [dataclasses.asdict(r) for r in [*runs, new]]}
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")  # a reader (status, the report) never sees half a file
    place.push(MANIFEST)
    log.info("manifest %s: run %d recorded", path, len(runs) + 1)
    return warning


__all__ = ["Code", "DatasetPrint", "Machine", "RunRecord", "changes", "code_line", "code_version",
           "fingerprint", "make_record", "package_versions", "read_manifest", "record_run"]
