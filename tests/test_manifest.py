"""study.manifest: a study's manifest.json records every run's code, packages, machine and data, and a
resume on other code or data says what changed (unit level: no Ray)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from cvae.config import DataConfig
from study.manifest import code_version, dataset_record, fingerprint, read_manifest, record_run
from study.place import MANIFEST, Place, state_of
from study.spec import StudySpec, load_spec
from study_helpers import make_dataset  # a lab-layout folder of 2 (undecodable) frames per split

SPLITS = ("train/train_img", "train/train_label", "val/val_img", "val/val_label")


def make_spec(tmp_path: Path) -> StudySpec:
    data = make_dataset(tmp_path / "data")
    path = tmp_path / "s.toml"
    path.write_text(f'[study]\nname = "t"\nnum_samples = 2\n\n[data]\nroot = "{data}"\n', encoding="utf-8")
    return load_spec(path)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


def test_record_has_every_field(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    assert record_run(place, spec, resumed=False) is None
    body = json.loads((place.exp_dir / MANIFEST).read_text())
    (run,) = body["runs"]
    assert set(run) == {"started", "resumed", "code", "versions", "machine", "dataset", "study_sha256"}
    assert run["resumed"] is False
    assert set(run["code"]) == {"commit", "dirty", "diff_sha256", "note"}
    assert set(run["versions"]) == {"python", "torch", "ray", "optuna", "polars"}
    assert all(isinstance(v, str) for v in run["versions"].values())
    m = run["machine"]
    assert m["hostname"] and m["cpu_count"] >= 1 and isinstance(m["gpus"], list)
    assert m["cpu_model"] is None or isinstance(m["cpu_model"], str)
    d = run["dataset"]
    assert d["root"] == str((tmp_path / "data").resolve()) and d["synthetic"] is False and d["generator"] is None
    assert d["frames"] == {sub: 2 for sub in SPLITS}
    assert len(d["files_sha256"]) == 64
    assert run["study_sha256"] == hashlib.sha256(spec.raw_text.encode()).hexdigest()
    assert read_manifest(place.exp_dir)[0].dataset.frames == d["frames"]


def test_resume_after_a_dataset_change_appends_and_warns(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    record_run(place, spec, resumed=False)
    assert record_run(place, spec, resumed=True) is None  # same code, same data: nothing to say
    (tmp_path / "data/train/train_img/frame2.png").write_bytes(b"one more")
    warning = record_run(place, spec, resumed=True)
    runs = read_manifest(place.exp_dir)
    assert [r.resumed for r in runs] == [False, True, True]
    assert warning is not None and "\n" not in warning
    old, new = runs[1].dataset.files_sha256[:12], runs[2].dataset.files_sha256[:12]
    assert f"dataset fingerprint {old} -> {new} (train/train_img 2 -> 3 frames)" in warning, warning
    assert str(place.exp_dir) in warning and "commit" not in warning


def test_a_resume_measures_the_data_statistics_again_only_when_the_files_changed(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from study import manifest

    spec = make_spec(tmp_path)
    cfg = spec.base_config().data
    row = {"statistic": "floor", "frame_size": f"{cfg.frame_H}x{cfg.frame_W}", "val_frames": cfg.val_video_len, "value": 1.0}
    measured: list[object] = []
    monkeypatch.setattr(manifest, "data_statistics", lambda c: measured.append(c) or [dict(row)])
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    record_run(place, spec, resumed=False)
    record_run(place, spec, resumed=True)  # the same files: the last run's statistics stand
    assert len(measured) == 1 and read_manifest(place.exp_dir)[1].dataset.statistics == [row]
    (tmp_path / "data/train/train_img/frame2.png").write_bytes(b"one more")
    record_run(place, spec, resumed=True)
    assert len(measured) == 2
    record_run(place, spec, resumed=False)  # a new start measures
    assert len(measured) == 3


def test_touching_a_frame_changes_the_fingerprint(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    cfg = DataConfig(root=str(data))
    before = fingerprint(cfg)
    frame = data / "val/val_img/frame1.png"
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = fingerprint(cfg)
    assert after.frames == before.frames and after.files_sha256 != before.files_sha256
    (data / "val/val_img/.frame9.png").write_bytes(b"a resource fork, not a frame")
    (data / "val/val_img/notes.txt").write_text("clutter")
    assert fingerprint(cfg) == after


def test_embedded_data_records_its_generator(tmp_path: Path) -> None:
    cfg = DataConfig(synthetic_seed=3, synthetic_train_videos=2)
    root = make_dataset(tmp_path / "cache")
    root.joinpath("test/test_label/0").mkdir(parents=True)
    root.joinpath("test/test_label/0/frame0.png").write_bytes(b"x")
    root.joinpath("test/test_label/1").mkdir(parents=True)
    root.joinpath("test/test_label/1/frame0.png").write_bytes(b"x")
    p = fingerprint(cfg, root)
    assert p.synthetic and p.generator is not None
    assert p.generator["synthetic_seed"] == 3 and p.generator["synthetic_train_videos"] == 2
    assert {"synthetic_train_frames", "synthetic_dancers", "format_version"} <= set(p.generator)
    assert p.frames["test/test_label"] == 2  # per-sequence folders count under their split's folder


def test_outside_a_git_checkout_the_commit_is_null(tmp_path: Path) -> None:
    code = code_version(tmp_path)
    assert code.commit is None and code.dirty is None and code.diff_sha256 is None
    assert "not a git checkout" in code.note
    spec = make_spec(tmp_path)
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    record_run(place, spec, resumed=False, code_dir=tmp_path)
    run = json.loads((place.exp_dir / MANIFEST).read_text())["runs"][0]
    assert run["code"]["commit"] is None and "not a git checkout" in run["code"]["note"]


def test_commit_dirty_and_diff_hash(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD").strip()
    clean = code_version(repo)
    assert (clean.commit, clean.dirty, clean.diff_sha256) == (head, False, None)
    (repo / "untracked.py").write_text("not part of the diff\n")
    assert code_version(repo).dirty is False
    (repo / "a.py").write_text("x = 2\n")
    dirty = code_version(repo)
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD"], capture_output=True, check=True).stdout
    assert dirty.commit == head and dirty.dirty is True and dirty.diff_sha256 == hashlib.sha256(diff).hexdigest()


def test_a_resume_on_another_commit_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    spec = make_spec(tmp_path)
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    record_run(place, spec, resumed=False, code_dir=repo)
    first = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "commit", "-q", "--allow-empty", "-m", "two")
    second = git(repo, "rev-parse", "HEAD").strip()
    warning = record_run(place, spec, resumed=True, code_dir=repo)
    assert warning is not None and f"commit {first[:12]} -> {second[:12]}" in warning
    assert "dataset" not in warning


def test_unreadable_manifest_is_kept(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    place = Place(tmp_path / "results" / "t")
    place.prepare()
    (place.exp_dir / MANIFEST).write_text("{not json")
    warning = record_run(place, spec, resumed=True)
    assert warning is not None and "not a manifest of this tool" in warning
    assert (place.exp_dir / f"{MANIFEST}.unreadable").read_text() == "{not json"
    assert len(read_manifest(place.exp_dir)) == 1


def test_a_start_that_died_before_tune_is_still_stale() -> None:
    assert state_of({"study.toml", MANIFEST}, False) == "stale"


@pytest.mark.parametrize("bad", ['{"runs": [{"started": 1}]}', "[]"])
def test_read_manifest_names_the_file(tmp_path: Path, bad: str) -> None:
    (tmp_path / MANIFEST).write_text(bad)
    with pytest.raises(ValueError, match=MANIFEST):
        read_manifest(tmp_path)


@pytest.mark.slow
def test_the_report_shows_the_manifest_and_status_prints_the_commit(tmp_path: Path) -> None:
    from fake_results import write_fake_study

    from study.manifest import code_line
    from study.report import build_report

    study = write_fake_study(tmp_path)
    assert "no manifest.json" in code_line(study)
    assert "No manifest.json" in build_report(study).read_text()
    record_run(Place(study), make_spec(tmp_path), resumed=False)
    run = read_manifest(study)[0]
    text = build_report(study).read_text()
    table = text.split('id="manifest"')[1].split("</table>")[0]
    assert run.dataset.files_sha256[:12] in table and run.machine.hostname in table
    assert (run.code.commit or "none")[:12] in table
    assert code_line(study) == f"commit: {run.code.shown()}"


def test_the_record_says_how_the_data_compares_with_the_labs(tmp_path: Path) -> None:
    cfg = DataConfig(frame_H=16, frame_W=32, val_video_len=40, synthetic_train_videos=1, synthetic_train_frames=16,
                     synthetic_test_sequences=0, cache_dir=str(tmp_path / "cache"))
    rows = {r["statistic"]: r for r in dataset_record(cfg).statistics}
    floor = rows["hold_floor"]
    assert floor["frame_size"] == "16x32" and floor["val_frames"] == 40 and floor["value"] > 0
    assert rows["pose_ink"]["lab"] == 0.011 and rows["pose_ink"]["in_band"] in (True, False)  # the lab's figure beside it
    assert dataset_record(DataConfig(root=str(tmp_path / "gone"))).statistics == []  # unreadable data: no rows, no error


@pytest.mark.slow
def test_the_report_shows_the_data_beside_the_labs(tmp_path: Path) -> None:
    from fake_results import write_fake_study
    from study.report import build_report

    exp = write_fake_study(tmp_path)
    record_run(Place(exp), load_spec(exp / "study.toml"), resumed=False)
    html = Path(build_report(exp)).read_text(encoding="utf-8")
    assert '<table class="data statistics">' in html and "floor: repeat frame 0" in html
    assert "validated on" in html and "as measured at the same size and length" in html
