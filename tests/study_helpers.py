"""Helpers for the study CLI tests: run `python -m study.run` as a user types it, in its own
session so a SIGKILL of the driver can take down the Ray it started (and only that one)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.toml"
TIMEOUT_S = 300  # per CLI run: the machine's 2 cores are shared with other tests
CONTRACT = ["epoch", "train/loss", "train/mse", "train/kl", "beta", "tfr", "val/psnr", "val/ssim",
            "val/psnr_hold", "time/epoch_s", "train/frames_per_s"]


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CVAE_CACHE"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray, never someone else's cluster
    return env


def study_cmd(study: Path | str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "study.run", str(study), *flags]


def run_cli(cmd: list[str], cwd: Path, cache: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in its own session; kill the whole session on timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def start_cli(cmd: list[str], cwd: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a command in its own session, stdout and stderr into `log`."""
    f = log.open("wb")
    return subprocess.Popen(cmd, cwd=cwd, env=cli_env(cache), stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def kill_trial_workers(sid: int) -> list[int]:
    """SIGKILL the Ray Tune trial actors (processes titled `ray::ImplicitFunc...`) of session `sid`:
    a trial crash as an out-of-memory kill would cause it."""
    killed = []
    for pid in _session_pids(sid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::ImplicitFunc"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def kill_session(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGKILL the driver's process group and every process left in its session (the Ray it
    started), then wait until they are gone. Other sessions' Ray instances are untouched."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        left = _session_pids(proc.pid)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[Any] | None = None,
             log: Path | None = None) -> Any:
    """Poll `condition` until it returns something truthy; fail with the log on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study exited ({proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{tail(log)}")


def tail(log: Path | None, n: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_bytes()[-n:].decode(errors="replace")


def write_study(path: Path, base: Path = SMOKE, space: dict[str, Any] | None = None,
                **tables: dict[str, Any]) -> Path:
    """A copy of `base` with some keys changed: write_study(p, study={"name": "x"}, train={"epochs": 4}).
    `space`, if given, replaces the whole [space] table."""
    raw = tomllib.loads(base.read_text(encoding="utf-8"))
    for table, changes in tables.items():
        raw.setdefault(table, {}).update(changes)
    if space is not None:
        raw["space"] = space
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def trial_statuses(exp_dir: Path) -> dict[str, str]:
    """trial id -> Tune status, from the newest experiment state Tune saved on disk."""
    # Newest by the start time in the name: a restored run re-syncs the older files at its end, so
    # their mtimes say nothing.
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    data = json.loads(states[-1].read_text())
    out = {}
    for entry in data["trial_data"]:
        trial = json.loads(entry[0])
        out[trial["trial_id"]] = trial["status"]
    return out


def trial_dirs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.iterdir() if (p / "params.json").is_file())


def result_rows(trial: Path) -> list[dict[str, Any]]:
    path = trial / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoints(trial: Path) -> list[Path]:
    return sorted(p for p in trial.glob("checkpoint_*") if p.is_dir())
