"""The GPU-facing benchmarks run as a user types them, and say so plainly where there is no GPU."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from study_helpers import PYTHON, ROOT, scaled


def _run(args: list[str], cache: Path, tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {"CVAE_CACHE": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp)}
    return subprocess.run([PYTHON, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=scaled(timeout))


@pytest.mark.slow
def test_gpu_packing_says_there_is_no_gpu_and_exits_0(tmp_path: Path, cache_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _run([str(ROOT / "benchmarks/gpu_packing.py")], cache_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert json.loads(line) == {"benchmark": "gpu_packing", "skipped": "no CUDA device on this machine"}


@pytest.mark.ray
def test_gpu_packing_logic_with_ray_fractional_gpus_on_the_cpu(tmp_path: Path, cache_dir: Path) -> None:
    done = _run([str(ROOT / "benchmarks/gpu_packing.py"), "--cpu", "--ks", "1,2", "--steps", "2", "--dims", "16,4,4,16"],
                cache_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    k1, k2, summary = rows
    assert (k1["k"], k1["gpus_per_trial"], k2["k"], k2["gpus_per_trial"]) == (1, 1.0, 2, 0.5)
    assert k2["frames"] == 2 * k1["frames"] == 2 * 2 * 2 * 15  # 2 trials x 2 steps x batch 2 x 15 frames
    assert len(k2["per_trial_frames_per_s"]) == 2 and k2["aggregate_frames_per_s"] > 0
    assert summary["summary"]["1"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_throughput_prints_device_and_precision(tmp_path: Path, cache_dir: Path, precision: str) -> None:
    done = _run([str(ROOT / "benchmarks/throughput.py"), "--dims", "16,4,4,16", "--steps", "1", "--repeats", "1",
                 "--rollout-frames", "4", "--video-len", "4", "--threads", "1", "--device", "cpu",
                 "--precision", precision, "--no-flops"], cache_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert {(r["case"], r["impl"]) for r in rows} >= {("train", "fast"), ("train", "reference"), ("rollout", "fast")}
    assert all(r["device"] == "cpu" and r["precision"] == precision and r["compile"] is False for r in rows)
