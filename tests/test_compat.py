"""study._compat: the only reads past Ray Tune's public API. These fail loudly when Ray or Optuna moves
what they read (a version outside pyproject's pins, say), instead of a report quietly losing statuses."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import optuna
import pytest

from study import _compat
from study.space import optuna_search
from study.spec import load_spec
from study_helpers import SMOKE, StudyRun, checkpoints, copy_of, result_rows, trial_dirs

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_optuna_search_keeps_its_study_where_compat_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text('[space.tfr]\nchoices = [0.0, 1.0]\n[study]\nnum_samples = 1\n', encoding="utf-8")
    search = optuna_search(load_spec(path))
    assert isinstance(search._ot_study, optuna.Study), "OptunaSearch no longer keeps its study in _ot_study"
    search.suggest("a")
    search.save(str(tmp_path / "searcher-state-x.pkl"))
    study = _compat.searcher_study(tmp_path)
    assert isinstance(study, optuna.Study) and len(study.trials) == 1


def test_nothing_to_read(tmp_path: Path) -> None:
    from ray.tune import Tuner

    assert _compat.trial_states(tmp_path) == {} and _compat.searcher_study(tmp_path) is None
    assert _compat.restorable(tmp_path) is False and Tuner.can_restore(str(tmp_path)) is False
    (tmp_path / "experiment_state-2026.json").write_text("{not json")
    assert _compat.trial_states(tmp_path) == {}


@pytest.mark.ray
@pytest.mark.slow
def test_compat_reads_a_real_tune_experiment(smoke_study: StudyRun) -> None:
    """Tune's own files, as Ray 2.60 writes them in a real study (the session's smoke study, run by
    study.run): every trial's id and status, the searcher's study, whether it can be restored, and
    the GPUs Ray's own detection counts."""
    from pyarrow import fs as pafs
    from ray import tune

    exp = smoke_study.exp
    assert _compat.restorable(exp) and tune.Tuner.can_restore(str(exp))  # the same answer, without Ray
    assert _compat.restorable(str(exp), pafs.LocalFileSystem())
    states = _compat.trial_states(exp)
    trials = trial_dirs(exp)
    assert sorted(states.values()) == sorted((result_rows(t)[-1]["trial_id"], "TERMINATED") for t in trials), states
    assert {t.name for t in trials} == set(states)
    study = _compat.searcher_study(exp)
    n = load_spec(SMOKE).num_trials
    assert isinstance(study, optuna.Study) and len(study.trials) == n
    scores = sorted(max(row["val/psnr"] for row in result_rows(t)) for t in trials)
    assert sorted(t.value for t in study.trials) == pytest.approx(scores)  # each trial's best epoch, as Optuna saw it
    # the GPUs a local Ray counts here, as Ray itself counted them when the smoke study started it
    m = re.search(r"started a local Ray \(\d+ CPUs?(?:, (\d+) GPUs?)?\)", smoke_study.proc.stdout)
    assert m, smoke_study.proc.stdout[-3000:]
    assert _compat.local_gpus() == float(m.group(1) or 0)



@pytest.mark.ray
@pytest.mark.slow
def test_a_lost_checkpoint_is_repointed_to_the_newest_left(smoke_study: StudyRun, tmp_path: Path) -> None:
    """A saved state older than a checkpoint deletion (Tune's num_to_keep) names a checkpoint that is
    gone: before a resume, that trial is pointed at its newest checkpoint left, or at none, and Tune's
    own decoding of the state finds it there. On a copy of the smoke study, two trials are set back to
    RUNNING in its state (as a state saved mid-run has them): one loses its latest checkpoint, the
    other all of them."""
    from ray.tune.experiment.trial import Trial

    exp = copy_of(smoke_study, tmp_path / "copy").exp
    state = sorted(exp.glob(_compat.EXPERIMENT_STATE_GLOB))[-1]
    raw = json.loads(state.read_text())
    by_folder = {Path(json.loads(e[0])["relative_logdir"]).name: e for e in raw["trial_data"]}
    one, other = [t for t in trial_dirs(exp) if t.name in by_folder][:2]
    kept = sorted(checkpoints(one), key=lambda c: c.name)
    assert len(kept) >= 2, kept  # num_to_keep=2, and more epochs than that
    lost_one, lost_other = kept[-1].name, max(c.name for c in checkpoints(other))
    for t in (one, other):
        entry = by_folder[t.name]
        entry[0] = json.dumps({**json.loads(entry[0]), "status": "RUNNING"})
    state.write_text(json.dumps(raw))
    shutil.rmtree(kept[-1])
    for c in checkpoints(other):
        shutil.rmtree(c)
    ids = {t.name: json.loads(by_folder[t.name][0])["trial_id"] for t in (one, other)}
    before = _compat.trial_states(exp)

    lines = _compat.repoint_lost_checkpoints(exp)
    assert sorted(lines) == sorted([
        f"trial {ids[one.name]}: its saved state names {lost_one}, which Ray Tune deleted after saving that state; "
        f"it resumes from {kept[-2].name} instead",
        f"trial {ids[other.name]}: its saved state names {lost_other}, which Ray Tune deleted after saving that state; "
        f"it resumes from its start (no checkpoint of it is left)"]), lines
    assert _compat.trial_states(exp) == before  # nothing else changed
    assert _compat.repoint_lost_checkpoints(exp) == []  # consistent now
    resumes_from = {}
    for entry in json.loads(state.read_text())["trial_data"]:
        trial = Trial.from_json_state(entry[0], stub=True)
        trial.restore_run_metadata(entry[1])
        name = Path(json.loads(entry[0])["relative_logdir"]).name
        resumes_from[name] = Path(trial.checkpoint.path).name if trial.checkpoint else None
    assert resumes_from[one.name] == kept[-2].name and resumes_from[other.name] is None
    for t in trial_dirs(exp):
        if t not in (one, other):  # the others untouched: each still names its newest checkpoint
            assert resumes_from[t.name] == max(c.name for c in checkpoints(t))
