"""A study's results on a URI that pyarrow understands (s3://, gs://, hdfs://, abfs://, file://...).

`python -m study.run STUDY.toml --storage s3://bucket/studies` puts Ray Tune's experiment (every
trial's params, results and checkpoints, written by whichever node ran the trial) at
`s3://bucket/studies/<name>/`. The driver keeps a local working copy of the study's own files,
the mirror `results/<scheme>/<bucket/path>/<name>/`, because Optuna's sqlite file, the report and
best.toml need a real folder: the mirror is filled from the URI after the study, and the study's
own files go back up (study.toml at the start; optuna.db, exported from Tune's saved searcher
state, finished.json, best.toml and report.html at the end). The URI is always the record (a
resume reads only the URI); the mirror can be deleted at any time.

Query parameters of the URI are pyarrow's (e.g. `?endpoint_override=127.0.0.1:9000&scheme=http`
for an S3-compatible server); credentials come from the usual environment (AWS_ACCESS_KEY_ID, ...)
on every node. Printed locations leave the query out, as it may hold secrets.
"""
from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^?#]*)(?P<query>\?[^#]*)?$")


class StorageError(RuntimeError):
    """The --storage URI cannot be used (exit code 2); the message says why."""


def is_uri(text: str) -> bool:
    """True for `scheme://...` (a remote or pyarrow-filesystem location), False for a plain path."""
    return _URI.match(text) is not None


@dataclass(frozen=True)
class RemoteStorage:
    """A pyarrow filesystem and the folder (`root`, without scheme or query) the studies go under."""

    uri: str  # as the user gave it
    scheme: str
    fs: Any  # pyarrow.fs.FileSystem
    root: str  # the filesystem's path of the storage folder, e.g. "bucket/studies"

    # -- naming ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root else "/".join(parts)

    def show(self, *parts: str) -> str:
        """A printable location (no query string)."""
        return f"{self.scheme}://{self.path(*parts)}"

    def mirror(self, results: Path) -> Path:
        """The local working-copy folder of this storage under `results`."""
        return results / self.scheme / Path(*[p for p in self.root.split("/") if p not in ("", ".", "..")])

    # -- reading ----------------------------------------------------------------------------------
    def names(self, *parts: str) -> set[str] | None:
        """Entry names directly under the folder, None if it does not exist."""
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.Directory:
            return {"(a file)"}  # not a folder: `study.run` calls that foreign
        return {Path(i.path).name for i in self.fs.get_file_info(pafs.FileSelector(self.path(*parts)))}

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read().decode("utf-8")

    def download(self, name: str, dest: Path) -> None:
        """Copy the folder `name` (everything under it) into the local folder `dest`."""
        from pyarrow import fs as pafs

        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(name), str(dest), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem(), use_threads=True)

    # -- writing ----------------------------------------------------------------------------------
    def upload(self, local: Path, *parts: str) -> None:
        """Copy one local file to the folder `parts`, under its own name."""
        from pyarrow import fs as pafs

        pafs.copy_files(str(local), self.path(*parts, local.name), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def delete(self, *parts: str) -> None:
        """Delete one file (nothing if it is not there)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(*parts))

    def move_aside(self, name: str) -> str:
        """Copy the folder `name` to `<name>.old-<timestamp>`, then delete the original (object stores
        cannot rename a folder). Returns the printable new location."""
        from pyarrow import fs as pafs

        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside, n = f"{name}.old-{stamp}", 1
        while self.names(aside) is not None:
            aside, n = f"{name}.old-{stamp}-{n}", n + 1
        pafs.copy_files(self.path(name), self.path(aside), source_filesystem=self.fs, destination_filesystem=self.fs)
        self.fs.delete_dir(self.path(name))
        return self.show(aside)

    def problem(self) -> str | None:
        """Why studies cannot be written here (a test object is written and deleted), or None."""
        probe = self.path(f".write-test-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ... per backend
            return f"cannot write there ({type(e).__name__}: {e})"
        return None


def open_storage(uri: str) -> RemoteStorage:
    """Resolve a --storage URI with pyarrow; StorageError when pyarrow cannot."""
    m = _URI.match(uri)
    if m is None:
        raise StorageError(f"{uri!r} is not a URI (scheme://...)")
    from pyarrow import fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid for unknown schemes, OSError for bad options
        raise StorageError(f"pyarrow cannot open {m['scheme']}://{m['rest']} ({type(e).__name__}: {e})") from e
    return RemoteStorage(uri=uri, scheme=m["scheme"].lower(), fs=fs, root=root.rstrip("/"))


def open_study_uri(uri: str) -> tuple[RemoteStorage, str]:
    """A study's own URI (`<storage>/<name>`, query kept) -> (its storage, its name)."""
    m = _URI.match(uri)
    if m is None:
        raise StorageError(f"{uri!r} is not a URI (scheme://...)")
    parent, _, name = m["rest"].rstrip("/").rpartition("/")
    if not parent or not name:
        raise StorageError(f"{m['scheme']}://{m['rest']} names no study folder (expected <storage>/<name>)")
    return open_storage(f"{m['scheme']}://{parent}{m['query'] or ''}"), name


__all__ = ["RemoteStorage", "StorageError", "is_uri", "open_storage", "open_study_uri"]
