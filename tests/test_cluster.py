"""Scale-out on a real 2-node Ray cluster on loopback (marked cluster): the study submitted as a Ray
Job joins it with `--address`, runs to SUCCEEDED (the job API wants the token), its trials spread
over both nodes and the results are complete.

Both nodes are `ray start --block` processes in their own sessions, started here and killed here
by process group (never `ray stop`, which would end every Ray on the machine).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from cvae.checkpoint import verify_checkpoint
from study.spec import load_spec
from study_helpers import (ROOT, SMOKE, alive_ray_nodes, checkpoints, dashboard_get, node_ports, result_rows,
                           start_ray_head, start_ray_node, stop_sessions, tail, trial_dirs, trial_statuses)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
RAY_BIN = VENV_BIN / "ray"
START_TIMEOUT_S = 120


@dataclass
class Cluster:
    """A running 2-node loopback cluster started by this module."""

    address: str  # GCS address for `--address` / ray.init
    dashboard: str  # http://127.0.0.1:<port>
    token: str
    env: dict[str, str]  # environment for CLI calls against it (token auth on)
    root: Path  # scratch folder of this module (temp dirs, logs, results)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p, 2000)}" for p in self.logs)


def _ray_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["RAY_AUTH_MODE"] = "token"
    env["CVAE_CACHE"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Jobs run their entrypoint with the nodes' PATH: the venv's python (and ray) come first.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def cluster(cache_dir: Path) -> Iterator[Cluster]:
    # A short root: Ray's unix sockets live under the temp dir and their paths must stay < 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    env = _ray_env(cache_dir)
    subprocess.run([str(RAY_BIN), "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=60)
    token = subprocess.run([str(RAY_BIN), "get-auth-token"], env=env, capture_output=True, text=True, check=True,
                           timeout=60).stdout.strip()
    c = Cluster(address="", dashboard="", token=token, env=env, root=root)
    try:
        head, c.address, c.dashboard, head_log = start_ray_head(root, env, "--num-cpus=1", timeout_s=START_TIMEOUT_S)
        worker_log = root / "worker.log"
        c.procs.append(head)
        c.logs += [head_log, worker_log]
        deadline = time.monotonic() + START_TIMEOUT_S
        c.procs.append(start_ray_node(
            [f"--address={c.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={root / 'w'}",
             "--object-store-memory=100000000", *node_ports()], env, worker_log))
        while alive_ray_nodes(c.address, env) < 2:
            assert time.monotonic() < deadline and c.procs[1].poll() is None, f"2nd node did not join\n{c.log_tails()}"
            time.sleep(1)
        yield c
    finally:
        left = stop_sessions(c.procs)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test cluster survived the teardown: {left}"


def test_study_as_a_ray_job_spreads_over_both_nodes_and_completes(cluster: Cluster) -> None:
    """The smoke study submitted with `ray job submit` and `--address` (as the README's cluster section
    types it): the job API wants the token, the job runs to SUCCEEDED, the driver says it joined the
    2-node cluster, the trials ran on both nodes and the results are complete. (One study for what
    were two tests: this one and the study run with --address from the shell; `--address` from the
    shell is test_run.py's fake-GPU study, on a one-node cluster.)"""
    storage = cluster.root / "job-results"
    python = VENV_BIN / "python"
    runtime_env = {"excludes": [".venv", "results", ".git", ".pytest_cache", "*.egg-info"],
                   "env_vars": {"CVAE_CACHE": cluster.env["CVAE_CACHE"]}}
    r = subprocess.run(
        [str(RAY_BIN), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT),
         "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--",
         str(python), "-m", "study.run", "search_spaces/smoke.toml", "--address", cluster.address,
         "--storage", str(storage)],
        env=cluster.env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    m = re.search(r"'(raysubmit_\w+)'", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    job_url = f"{cluster.dashboard}/api/jobs/{m.group(1)}"
    assert dashboard_get(job_url, None)[0] == 401
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        code, body = dashboard_get(job_url, cluster.token)
        assert code == 200, code
        status = body["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = str((dashboard_get(f"{job_url}/logs", cluster.token)[1] or {}).get("logs", ""))
    assert status == "SUCCEEDED", f"job {status}\n{logs[-4000:]}\n{cluster.log_tails()}"
    assert f"joined the Ray cluster at {cluster.address} (2 CPUs)" in logs and "best configuration" in logs, logs[-4000:]
    spec = load_spec(SMOKE)
    exp = storage / spec.name
    trials = trial_dirs(exp)
    assert len(trials) == spec.num_trials
    epochs = spec.base_config().train.epochs
    nodes = set()
    for trial in trials:
        rows = result_rows(trial)
        assert [row["epoch"] for row in rows] == list(range(epochs)), trial.name
        nodes |= {row["node_id"] for row in rows}
        kept = checkpoints(trial)
        assert kept, trial.name
        for ckpt in kept:
            verify_checkpoint(ckpt)
    assert len(nodes) == 2, f"all trials ran on one node: {nodes}"
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    assert (exp / "finished.json").exists() and (exp / "best.toml").exists()
