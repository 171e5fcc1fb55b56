"""The benchmarks run as a user types them; the GPU-facing ones say so plainly where there is no GPU."""
from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fake_results import write_scores_study
from study.race import RaceRule, replay
from study.spec import load_spec
from study_helpers import PYTHON, ROOT, benchmark, scaled


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


# --- benchmarks/racing.py: a finished fixed-seed study replayed as a seed race ---------------------

def _racing() -> ModuleType:
    return benchmark("racing")


# A clear leader, one close behind it and one far worse: 8 fixed seeds each.
RACE_SCORES = {"Monotonic": [31.6, 31.9, 31.4, 31.8, 31.5, 31.7, 31.6, 31.9],
               "Cyclical": [31.2, 31.7, 31.0, 31.5, 31.4, 31.1, 31.6, 31.3],
               "None": [27.0, 27.5, 26.8, 27.2, 27.1, 26.9, 27.3, 27.4]}


@pytest.mark.slow
def test_racing_replays_a_fixed_seed_study_and_simulates(tmp_path: Path) -> None:
    study = write_scores_study(tmp_path / "results", RACE_SCORES, name="fixed8")
    done = _run([str(ROOT / "benchmarks/racing.py"), "--study", str(study), "--reps", "20"], tmp_path, tmp_path)
    assert done.returncode == 0, done.stderr
    replayed, *simulated = [json.loads(x) for x in done.stdout.splitlines()]
    # the race on the same scores, replayed here (the fake study's alpha, margin and pairing are the defaults)
    per_seed = {f"kl_anneal_type={k}": v for k, v in RACE_SCORES.items()}
    counts, table, _ = replay(per_seed, RaceRule(2, 8))
    best = max(per_seed, key=lambda s: statistics.mean(per_seed[s]))
    assert replayed["run"] == "replay" and replayed["study"] == str(study)
    assert (replayed["configurations"], replayed["seeds"], replayed["fixed_trials"]) == (3, 8, 3 * 8)
    assert replayed["race_seeds"] == counts and replayed["race_trials"] == sum(counts.values())
    assert replayed["trials_ratio"] == pytest.approx(sum(counts.values()) / 24, abs=1e-4)
    assert replayed["fixed_leader"] == replayed["race_leader"] == best and replayed["same_leader"]
    verdicts = {v["setting"]: v for v in replayed["verdicts"]}
    assert set(verdicts) == {st.setting for st in table if st.settled}
    far = verdicts["kl_anneal_type=None"]
    assert far["state"] == "clearly worse" and far["seeds"] < 8 and not far["contradicted"]
    gap = statistics.mean(per_seed["kl_anneal_type=None"]) - statistics.mean(per_seed[best])
    assert far["fixed_diff"] == pytest.approx(gap, abs=1e-4)
    assert replayed["targets"]["same leader"] and replayed["targets"]["no contradicted settled verdict"]
    assert replayed["targets"]["race trials <= 50% of the fixed study's"] == (sum(counts.values()) <= 12)
    assert replayed["targets_met"] == all(replayed["targets"].values())
    # one line per simulated population, rates that are rates
    assert [s["run"] for s in simulated] == ["simulate"] * 3
    for s in simulated:
        k = len(s["means"])
        assert s["reps"] == 20 and s["comparisons"] == 20 * (k - 1) and 0 < s["trials_fraction"] <= 1
        assert s["settled_per_rep"] == pytest.approx(s["settled"] / 20, abs=1e-3)
        assert s["wrong_clearly_worse"] + s["wrong_equivalent"] <= s["settled"] <= s["comparisons"]
        wrong = s["wrong_clearly_worse"] + s["wrong_equivalent"]
        assert s["wrong_per_comparison"] == pytest.approx(wrong / s["comparisons"], abs=1e-4)
        assert s["target_met"] == (s["wrong_per_comparison"] <= s["rule"]["alpha"])
        low, high = s["wrong_per_comparison_ci95"]
        assert 0 <= low <= s["wrong_per_comparison"] <= high <= 1


@pytest.mark.slow
def test_racing_refuses_a_study_whose_configurations_ran_different_seeds(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    study = write_scores_study(tmp_path / "results", {"Monotonic": RACE_SCORES["Monotonic"], "None": [27.0, 27.5, 26.8]},
                               name="ragged")
    assert _racing().main(["--study", str(study), "--no-simulate"]) == 2  # the script's exit code
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: {study}: configurations ran different seeds") and "[0, 1, 2]" in line


# Verdicts settled on seeds 0-1 that seeds 2-7 overturn. "clearly worse": Monotonic is 2 dB ahead on
# seeds 0-1, None 3 dB ahead on the rest; "equivalent": level on seeds 0-1, None 3 dB behind on the rest.
OVERTURNED = {
    "clearly worse": ({"Monotonic": [31.0, 31.1, 31.0, 30.0, 30.1, 30.0, 30.1, 30.0],
                       "None": [29.0, 29.1, 33.0, 33.1, 33.0, 33.1, 33.0, 33.1]}, "kl_anneal_type=None"),
    "equivalent": ({"Monotonic": [31.0, 31.01, 31.1, 30.9, 31.05, 30.95, 31.0, 31.1],
                    "None": [30.99, 31.0, 28.0, 28.2, 27.9, 28.1, 28.0, 28.2]}, "kl_anneal_type=Monotonic"),
}


@pytest.mark.slow
@pytest.mark.parametrize("state", OVERTURNED)
def test_racing_calls_a_verdict_that_all_seeds_overturn_contradicted(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      state: str) -> None:
    scores, fixed_leader = OVERTURNED[state]
    study = write_scores_study(tmp_path / "results", scores, name="overturned")
    assert _racing().main(["--study", str(study), "--no-simulate"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    out = json.loads(line)
    assert (out["race_leader"], out["fixed_leader"]) == ("kl_anneal_type=Monotonic", fixed_leader)
    assert out["race_seeds"] == {"kl_anneal_type=Monotonic": 2, "kl_anneal_type=None": 2}  # settled at once
    (v,) = out["verdicts"]
    assert (v["setting"], v["state"], v["seeds"], v["contradicted"]) == ("kl_anneal_type=None", state, 2, True)
    assert out["targets"] == {"same leader": state == "equivalent", "no contradicted settled verdict": False,
                              "race trials <= 50% of the fixed study's": True} and not out["targets_met"]


def test_racing_run_writes_the_fixed_kl_study_beside_its_results(tmp_path: Path) -> None:
    path = _racing().fixed_variant(tmp_path / "results" / "kl-fixed8", 8)
    assert path == tmp_path / "results" / "kl-fixed8.toml"
    fixed, kl = load_spec(path), load_spec(ROOT / "search_spaces/kl.toml")
    assert (fixed.name, fixed.seeds, fixed.race) == ("kl-fixed8", tuple(range(8)), None)
    assert fixed.fixed == kl.fixed and fixed.num_configs == kl.num_configs  # the kl study's tables, its base resolved


# --- benchmarks/study_margin.py: what a finished study bought ------------------------------------

@pytest.mark.slow
def test_study_margin_gives_each_settings_margin_over_the_floor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = {"None": [33.0, 34.0, 35.0], "Monotonic": [30.0, 30.5, 31.0]}
    exp = write_scores_study(tmp_path, scores, hold=32.0, gpu=0.25)
    study_margin = benchmark("study_margin")
    assert study_margin.main([str(exp), str(tmp_path / "missing")]) == 2  # the good one still prints
    out, err = capsys.readouterr()
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert "missing" in err
    assert [s["setting"] for s in line["settings"]] == ["kl_anneal_type=None", "kl_anneal_type=Monotonic"]
    best, worst = line["settings"]
    assert (best["n"], best["mean"], best["sd"], best["floor"]) == (3, 34.0, 1.0, 32.0)
    assert best["margin_db"] == line["best_margin_db"] == 2.0 and best["learned"]  # 2 dB over, spread 1 dB
    assert worst["margin_db"] == -1.5 and not worst["learned"]
    assert line["trials"] == 6 and line["cpu_s"] > 0 and line["gpu_s"] > 0
    assert line["db_per_gpu_min"] == pytest.approx(2.0 / (line["gpu_s"] / 60), rel=1e-2)
    assert line["db_per_cpu_min"] == pytest.approx(2.0 / (line["cpu_s"] / 60), rel=1e-2)


# --- benchmarks/frontier_plot.py: learning_budget's frontier as a figure --------------------------

def test_frontier_plot_draws_each_runs_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def line(epoch: int, budget: int | None, cpu: float, gain: float, sd: float | None = 0.5) -> str:
        x = {"epoch": epoch, "cpu_s": cpu, "gain_db_mean": gain, "gain_db_sd": sd, "seeds": [0, 1]}
        return json.dumps(x if budget is None else {**x, "budget": budget})

    frontier = tmp_path / "frontier.jsonl"  # learning_budget --epochs 10,20: each budget its own run
    frontier.write_text("\n".join([line(5, 10, 30, -3.0), line(10, 10, 60, 1.0), line(20, 20, 120, 4.0)]) + "\n")
    old = tmp_path / "old.jsonl"  # one run's points before "budget" was printed: its last epoch is its end
    old.write_text("\n".join([line(20, None, 100, -1.0), line(40, None, 200, 2.5, None)]) + "\n")
    out = tmp_path / "f.html"
    plot = benchmark("frontier_plot")
    assert plot.main(["--out", str(out), f"a={frontier}", f"b={old}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["curves"] == {"a": [[10, 1.0, 1.0], [20, 2.0, 4.0]], "b": [[40, 3.33, 2.5]]}
    html = out.read_text()
    assert "plotly" in html and "floor: repeat frame 0" in html and "CPU-minutes" in html
    assert plot.main(["--out", str(out), "no-files"]) == 2
    assert "LABEL=FILE" in capsys.readouterr().err
