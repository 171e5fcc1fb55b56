"""THE best configuration (study.best and the one ranking it reads): best.toml, the console line, the
report's summary and frame strip and Optuna's best trial name the same winner; and (marked ray) a
real study's best.toml reruns its trial to the last bit."""
from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from cvae.checkpoint import verify_checkpoint
from cvae.config import load_config
from fake_results import OBJECTIVE_WINNER, write_objective_study
from study.analyze import read_study
from study.best import conclude
from study.report import build_report, frames
from study.results import read_results
from study.space import SeedRepeater, optuna_search
from study.spec import load_spec
from study.tables import analyze, ranking, setting_label, winner
from study_helpers import PYTHON, StudyRun, result_rows, run_cli


# -- one ranking: best.toml, the report, the console and Optuna agree --------------------------------
def _optuna_best(exp: Path) -> str:
    """The setting Optuna's best trial names when the SeedRepeater replays the study's results."""
    spec = load_spec(exp / "study.toml")
    storage = optuna.storages.InMemoryStorage()
    rep = SeedRepeater(optuna_search(spec, storage), spec.seeds, spec.objective)
    rows = {}
    for d in sorted(p for p in exp.iterdir() if (p / "params.json").is_file()):
        params = json.loads((d / "params.json").read_text())
        rows[tuple(sorted(params.items()))] = read_results(d / "result.json").to_dicts()
    for n in range(spec.num_trials):
        config = rep.suggest(f"t{n}")
        for row in rows[tuple(sorted(config.items()))]:
            rep.on_trial_result(f"t{n}", row)
        rep.on_trial_complete(f"t{n}", row)
    best = optuna.load_study(study_name=spec.name, storage=storage).best_trial
    assert best.intermediate_values  # Optuna's intermediate-value plot has curves
    return setting_label(best.params, read_study(exp).searched)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["best", "last"])
def test_one_ranking_everywhere(objective: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Best-epoch and last-epoch rankings differ here: best.toml, the console, the report's best
    configuration, its frame strip and Optuna's best trial all name the objective's winner."""
    exp = write_objective_study(tmp_path, objective)
    want = OBJECTIVE_WINNER[objective]
    top = winner(ranking(analyze(exp), read_study(exp)))
    assert top["setting"] == want and top["complete"]
    ckpt = exp / top["best_checkpoint"]
    assert ckpt.is_dir() and json.loads((ckpt / "manifest.json").read_text())["epoch"] == top["best_epoch"]
    assert top["best_epoch"] == (1 if objective == "best" else 5)  # the epoch the objective picked

    assert conclude(exp)["setting"] == want
    out = capsys.readouterr().out
    assert f"best configuration (val/psnr (max) at each trial's {objective} epoch): kl_anneal_type = " \
           f"{want.split('=')[1]}" in out and f"checkpoint: {ckpt}" in out
    best_toml = (exp / "best.toml").read_text()
    assert f"# Best checkpoint: {ckpt}\n" in best_toml
    assert load_config(exp / "best.toml").train.kl_anneal_type == want.split("=")[1]

    drawn: list[Path] = []

    def rollout(path: Path) -> dict:
        drawn.append(path)
        raise FileNotFoundError("no weights in the fake")

    monkeypatch.setattr(frames, "rollout", rollout)
    summary = build_report(exp).read_text().split('<section id="summary">')[1].split("</section>")[0]
    assert f"Best configuration</b>: {want}," in summary
    assert drawn == [ckpt]  # the frame strip draws the ranked checkpoint
    assert _optuna_best(exp) == want


@pytest.mark.ray
@pytest.mark.slow
def test_best_toml_reruns_the_trial_exactly(smoke_study: StudyRun, tmp_path: Path, cache_dir: Path) -> None:
    best = smoke_study.exp / "best.toml"
    text = best.read_text()
    ckpt = re.search(r"^# Best checkpoint: (.+)$", text, re.M)
    assert ckpt and Path(ckpt.group(1)).is_dir()
    verify_checkpoint(ckpt.group(1))
    cfg = load_config(best)
    assert cfg.model.F_dim == 16 and cfg.train.threads == 1  # the trial's cpus_per_trial
    assert cfg.train.device == "auto" and "device =" not in text  # where the trial ran is not a setting
    rerun = tmp_path / "rerun"  # beside the session's study, never in it
    r = run_cli([PYTHON, "-m", "cvae.train", "--config", str(best), "--out", str(rerun)], smoke_study.cwd, cache_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == "threads: 1 ([train] threads)"
    trial = Path(ckpt.group(1)).parent
    want = [(row["epoch"], row["train/loss"], row["val/psnr"]) for row in result_rows(trial)]
    rows = [json.loads(line) for line in (rerun / "metrics.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["train/loss"], row["val/psnr"]) for row in rows] == want  # to the last bit
