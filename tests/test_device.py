"""cvae.device's thread choice for a single run: never more threads than the CPUs other work leaves
free, and a resumed run keeps the count it started with (cvae.cli.with_threads)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from cvae.checkpoint import save_checkpoint
from cvae.cli import with_threads
from cvae.config import Config
from cvae.device import available_cpus, busy_cpus, choose_threads
from study_helpers import PYTHON

# in a bare interpreter: no torch to import
SPIN = "import time\nend = time.time() + 20\nwhile time.time() < end:\n    pass\n"


@pytest.mark.slow
def test_busy_cores_leave_fewer_threads() -> None:
    cpus = available_cpus()
    spinners = [subprocess.Popen([PYTHON, "-c", SPIN]) for _ in range(2)]
    try:
        time.sleep(1.0)  # the interpreters start, then spin
        busy = busy_cpus()
        choice = choose_threads()
    finally:
        for p in spinners:
            p.terminate()
            p.wait()
    assert busy is not None and busy >= 2
    assert 1 <= choice.threads <= max(1, cpus - 2) and choice.cpus == cpus
    assert f"{choice.threads} free" in choice.why


def test_threads_set_in_the_config_win_and_a_resume_keeps_its_start(tmp_path: Path) -> None:
    cfg, line = with_threads(Config().replace(train={"threads": 3}))
    assert cfg.train.threads == 3 and line == "threads: 3 ([train] threads)"
    unset = Config()
    cfg, line = with_threads(unset)
    assert 1 <= cfg.train.threads <= available_cpus() and line.startswith(f"threads: {cfg.train.threads} (")
    ckpt = save_checkpoint(tmp_path / "epoch_0000", {"epoch": 0}, unset.replace(train={"threads": 7}), None)
    cfg, line = with_threads(unset, ckpt)
    assert cfg.train.threads == 7 and line == "threads: 7 (as the run started with)"


@pytest.mark.slow
def test_a_run_at_the_studies_size_takes_one_thread() -> None:
    from cvae.device import SMALL_WORK

    small = choose_threads(32 * 16 * 32)
    assert small.threads == 1 and small.small and "one thread" in small.why and 32 * 16 * 32 <= SMALL_WORK
    lab = choose_threads(128 * 32 * 64)  # the lab's size is compute-bound: the free CPUs
    assert not lab.small and 1 <= lab.threads <= available_cpus()
    cfg, line = with_threads(Config().replace(model={"F_dim": 32, "L_dim": 8, "N_dim": 4, "D_out_dim": 48},
                                              data={"frame_H": 16, "frame_W": 32}))
    assert cfg.train.threads == 1 and "trains fastest on one thread" in line
