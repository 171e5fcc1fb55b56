"""Security defaults: the dashboard listens on loopback only, checkpoints load as weights only,
and a study file is data that never runs.

The dashboard's token (401 without it, 200 with) is tested on a real study in
test_study_run.py::test_dashboard_answers_only_with_the_token and on a `ray start` cluster's job
API in test_cluster.py::test_study_as_a_ray_job; not repeated here.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from cvae.config import Config
from cvae.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from study import run as study_run
from study.spec import StudyError, load_spec
from study_helpers import write_study


def test_local_ray_dashboard_binds_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[dict[str, Any]] = []

    def fake_init(**kwargs: Any) -> object:
        calls.append(kwargs)
        return type("Ctx", (), {"dashboard_url": "127.0.0.1:8265"})()

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    study_run.start_ray(None, 1)
    study_run.start_ray(None, 1, dashboard=False)  # --no-dashboard
    default, without = calls
    assert default["address"] == without["address"] == "local"  # never someone else's cluster by accident
    assert default["include_dashboard"] is True and default["dashboard_host"] == "127.0.0.1"
    assert without["include_dashboard"] is False


class _Payload:
    """Unpickling this runs `open(marker, "w")`: arbitrary code, as a malicious checkpoint would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # save_checkpoint writes a correct manifest, so only weights_only can stop the payload.
    ckpt = save_checkpoint(tmp_path / "epoch_0000", {"epoch": 0, "model": _Payload(marker)}, Config.from_dict({}), None)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    # The payload is real: an unrestricted load would have run it.
    torch.load(ckpt / STATE_FILE, weights_only=False)
    assert marker.exists()


CODE = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("table,key", [("study", "description"), ("study", "name"), ("train", "lr"),
                                       ("train", "kl_anneal_type"), ("data", "root")])
def test_a_study_file_never_runs_code(table: str, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = CODE.format(marker=marker)
    study = write_study(tmp_path / "evil.toml", **{table: {key: value}})
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative `touch` would land here
    try:
        spec = load_spec(study)
        cfg = spec.base_config()
    except StudyError as e:  # rejected: it is the wrong type, not a name, not a dataset, ...
        assert f"{table}.{key}" in str(e)
    else:  # accepted as what it is: a string
        stored = spec.description if key == "description" else getattr(getattr(cfg, table), key)
        # a dataset path is resolved against the study file (study.run then finds no dataset there)
        assert stored == (str((study.parent / value).resolve()) if key == "root" else value)
    finally:
        os.chdir(cwd)
    assert not marker.exists() and not (tmp_path / "pwned").exists()
