"""Helpers for the study CLI tests: run `python -m study.run` as a user types it, in its own
session so a SIGKILL of the driver can take down the Ray it started (and only that one); start Ray
nodes on loopback (`ray start --block`, each in its own session) and stop exactly those."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import tomli_w

from cvae.metrics import CONTRACT  # noqa: F401 - docs/ARCHITECTURE.md, contract 1, for the tests that read Tune's rows
from study._compat import EXPERIMENT_STATE_GLOB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]  # the repository
PYTHON = sys.executable
RAY_BIN = Path(sys.executable).parent / "ray"
SMOKE = ROOT / "search_spaces" / "smoke.toml"
TIMEOUT_S = 300  # per CLI run: the machine's 2 cores are shared with other tests


def benchmark(name: str) -> Any:
    """benchmarks/<name>.py as a module (benchmarks/ is no package), for checks that need no subprocess."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CVAE_CACHE"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray, never someone else's cluster
    return env


def study_cmd(study: Path | str, *flags: str, dashboard: bool = False) -> list[str]:
    """`python -m study.run STUDY FLAGS`, with --no-dashboard for a local Ray unless `dashboard`: the
    studies whose dashboard a test looks at (the smoke study, the killed study's first run) start it as a
    user does; the others save its ~6 CPU-s per Ray start."""
    off = [] if dashboard or "--address" in flags else ["--no-dashboard"]
    return [sys.executable, "-m", "study.run", str(study), *flags, *off]


def scaled(seconds: float) -> float:
    """A time limit stretched by how busy the machine is now (its 1-minute load per CPU, at least 1):
    limits are safety nets against a hang, and a loaded machine must not trip them."""
    cpus = len(os.sched_getaffinity(0))
    return seconds * max(1.0, os.getloadavg()[0] / cpus)


def run_cli(cmd: list[str], cwd: Path, cache: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in its own session; kill the whole session on timeout (scaled)."""
    timeout = scaled(timeout)
    proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class StudyRun(NamedTuple):
    """A study run as a user types it: the folder it ran in, its results (cwd/results/<name>), the command's end."""

    cwd: Path
    exp: Path
    proc: subprocess.CompletedProcess[str]


def copy_of(run: StudyRun, dest: Path) -> StudyRun:
    """The same study in a copy of the whole folder it ran in, for a test that changes it."""
    shutil.copytree(run.cwd, dest, symlinks=True)
    return StudyRun(dest, dest / run.exp.relative_to(run.cwd), run.proc)


def start_cli(cmd: list[str], cwd: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a command in its own session, stdout and stderr into `log`."""
    f = log.open("wb")
    return subprocess.Popen(cmd, cwd=cwd, env=cli_env(cache), stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid` (a zombie is dead already: only its parent's wait is missing)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def session_titles(sid: int) -> dict[int, str]:
    """pid -> process title (argv[0], which Ray's workers set to `ray::IDLE`, `ray::ImplicitFunc...`)
    of the live processes of session `sid`."""
    titles = {}
    for pid in session_pids(sid):
        with contextlib.suppress(OSError):
            titles[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    return titles


def kill_trial_workers(sid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` (as os.kill) to the Ray Tune trial actors (processes titled `ray::ImplicitFunc...`)
    of session `sid`: SIGKILL is a trial crash as an out-of-memory kill would cause it."""
    done = []
    for pid, title in session_titles(sid).items():
        if title.startswith("ray::ImplicitFunc"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                done.append(pid)
    return done


def kill_session(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGKILL the driver's process group and every process left in its session (the Ray it
    started), then wait until they are gone. Other sessions' Ray instances are untouched."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        left = session_pids(proc.pid)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[Any] | None = None,
             log: Path | None = None) -> Any:
    """Poll `condition` until it returns something truthy; fail with the log on timeout (scaled) or early exit."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study exited ({proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{tail(log)}")


def wait_for_first_checkpoint(exp_dir: Path, proc: subprocess.Popen[Any], log: Path, timeout: float = 240) -> None:
    """Wait (as wait_for) until a trial of the study running in `proc` has written its first checkpoint."""
    wait_for(lambda: exp_dir.is_dir() and any(checkpoints(t) for t in trial_dirs(exp_dir)), timeout,
             "a first trial checkpoint", proc, log)


def tail(log: Path | None, n: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_bytes()[-n:].decode(errors="replace")


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from study.driver import DriverLock
from study.place import Place
lock = DriverLock(Place(Path({exp!r})), command="holder")
lock.acquire(); lock.mark()
print("held", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def driver_holding(exp_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that takes the study at exp_dir as its driver (study.driver) and keeps it until
    the block ends, when it is SIGKILLed (its mark stays behind, as a killed driver's does)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), exp=str(exp_dir))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


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


def make_dataset(root: Path, frames: int = 2) -> Path:
    """A folder in the lab's layout (train/ and val/, img and label), `frames` files each, not decodable:
    enough for the checks that look at the layout only (the study file's data.root, the manifest)."""
    for sub in ("train/train_img", "train/train_label", "val/val_img", "val/val_label"):
        (root / sub).mkdir(parents=True)
        for i in range(frames):
            (root / sub / f"frame{i}.png").write_bytes(b"not decoded here")
    return root


def trial_statuses(exp_dir: Path) -> dict[str, str]:
    """trial id -> Tune status, from the newest experiment state Tune saved on disk."""
    # Newest by the start time in the name: a restored run re-syncs the older files at its end, so
    # their mtimes say nothing.
    states = sorted(exp_dir.glob(EXPERIMENT_STATE_GLOB))
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


def trial_span(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """When a trial ran, from its result rows: the start of its first epoch and the end of its last (s)."""
    return rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]


def overlap(spans: list[tuple[float, float]]) -> bool:
    """Whether two trials' spans (trial_span) overlap in time."""
    (a0, a1), (b0, b1) = spans
    return a0 < b1 and b0 < a1


def checkpoints(trial: Path) -> list[Path]:
    return sorted(p for p in trial.glob("checkpoint_*") if p.is_dir())


# -- Ray nodes started by a test (never `ray stop`: it would end every Ray on the machine) ------------
def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_ports() -> list[str]:
    # Every fixed-default port Ray would otherwise take, so this cluster never collides with another
    # Ray on the machine (another test's, or a user's).
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    return [f"{name}={port}" for name, port in zip(names, free_ports(len(names)))]


def start_ray_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    f = log.open("wb")
    return subprocess.Popen([str(RAY_BIN), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def alive_ray_nodes(address: str, env: dict[str, str]) -> int:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print('NODES', sum(n['Alive'] for n in ray.nodes()))")
    r = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True, timeout=90)
    m = re.search(r"NODES (\d+)", r.stdout)
    return int(m.group(1)) if m else 0


def stop_sessions(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM then SIGKILL every process of the sessions we started; the pids still alive after that."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 15.0)):
        for p in procs:
            for pid in [p.pid, *session_pids(p.pid)]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(session_pids(p.pid) for p in procs):
            for p in procs:
                p.poll()  # reap the ones that ended
            time.sleep(0.3)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
    return [pid for p in procs for pid in session_pids(p.pid)]


def start_ray_head(root: Path, env: dict[str, str], *args: str,
                   timeout_s: float = 120) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    """`ray start --head --block` on loopback with `args` (e.g. "--num-cpus=1"); waits until its node is
    alive and returns (process, GCS address, dashboard URL, log). Ray gives the head's raylet a fixed
    30 s to register with the GCS, which a loaded 2-core machine missed once in CI ("The current node
    timed out during startup"): a head that exits while starting gets one more try, on fresh ports."""
    for attempt in (1, 2):
        gcs, dash, client = free_ports(3)
        address, log = f"127.0.0.1:{gcs}", root / f"ray-head-{attempt}.log"
        node = start_ray_node(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                               f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                               f"--temp-dir={root / f'h{attempt}'}", "--object-store-memory=100000000",
                               *node_ports(), *args], env, log)
        deadline = time.monotonic() + timeout_s
        while node.poll() is None and alive_ray_nodes(address, env) < 1:
            if time.monotonic() > deadline:
                stop_sessions([node])
                raise AssertionError(f"the Ray head did not start:\n{tail(log)}")
            time.sleep(1)
        if node.poll() is None:
            return node, address, f"http://127.0.0.1:{dash}", log
        assert attempt == 1, f"the Ray head did not start:\n{tail(log)}"
        stop_sessions([node])
    raise AssertionError("unreachable")


@contextlib.contextmanager
def ray_head(root: Path, cache: Path, *resources: str, start_timeout_s: float = 120) -> Iterator[str]:
    """A one-node Ray on loopback without a dashboard, `ray start --head --block` with `resources` (e.g. "--num-cpus=2",
    "--num-gpus=1": Ray schedules GPUs it is told of, whether or not they exist); yields its address
    for `study.run --address` (run it with RAY_AUTH_MODE=token: the node wants ~/.ray/auth_token, which
    is created here if missing), then stops that node's processes, and only those."""
    env = cli_env(cache)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    subprocess.run([str(RAY_BIN), "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=60)
    node, address, _, _ = start_ray_head(root, env, "--include-dashboard=false", *resources, timeout_s=start_timeout_s)
    try:
        yield address
    finally:
        left = stop_sessions([node])
        assert not left, f"processes of the test's Ray head survived the teardown: {left}"


def dashboard_get(url: str, token: str | None) -> tuple[int, Any]:
    """GET a Ray dashboard URL with a bearer token (or none): (HTTP status, its JSON body or None);
    status 0 when nothing answers."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None
