"""--storage as a URI (study/storage.py): a real S3-compatible server on loopback (moto's server,
spoken to over HTTP by pyarrow's S3 client, as a user's S3/MinIO would be), the unit pieces against
it, and a whole study stored on it, killed, resumed and rerun --fresh (marked ray)."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from study.place import state_of
from study.run import main
from study.storage import StorageError, is_uri, open_storage
from study_helpers import SMOKE, kill_session, run_cli, start_cli, study_cmd, tail, wait_for, write_study

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true",
          "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 (moto_server, its own process) and the query string that points
    pyarrow at it; the process is killed in teardown whatever happened."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start (exit {proc.poll()}); see {log.name}")
            time.sleep(0.2)
        yield f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    return S3_ENV


def make_bucket(query: str, bucket: str) -> None:
    from pyarrow import fs

    s3, _ = fs.FileSystem.from_uri(f"s3://{bucket}?{query}&allow_bucket_creation=true")
    s3.create_dir(bucket)


def complete_optuna_trials(store: Any, name: str, tmp: Path) -> list[Any]:
    """Completed trials of the optuna.db on the bucket (downloaded, opened with optuna.load_study)."""
    import optuna

    db = tmp / f"{name}-optuna.db"
    with store.fs.open_input_stream(store.path(name, "optuna.db")) as f:
        db.write_bytes(f.read())
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_is_uri() -> None:
    assert is_uri("s3://bucket/prefix") and is_uri("file:///tmp/x") and is_uri("gs://b?x=1")
    assert not is_uri("results") and not is_uri("/tmp/results") and not is_uri("./s3:/x")


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="pyarrow cannot open nope://bucket/x"):
        open_storage("nope://bucket/x")


def test_state_of_names() -> None:
    assert state_of(None, False) == "new" and state_of(set(), False) == "new"
    assert state_of({"study.toml", "optuna.db"}, False) == "stale"
    assert state_of({"study.toml", "tuner.pkl", "trial_1"}, True) == "unfinished"  # Tuner.can_restore says
    assert state_of({"study.toml", "tuner.pkl", "finished.json"}, True) == "finished"
    assert state_of({"notes.txt"}, False) == "foreign"


@pytest.mark.slow  # an S3 server in its own process
def test_remote_storage_round_trip(s3_server: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    make_bucket(s3_server, "unit")
    store = open_storage(f"s3://unit/studies/?{s3_server}")
    assert store.root == "unit/studies" and store.show("kl") == "s3://unit/studies/kl"  # no query printed
    assert store.problem() is None
    assert store.mirror(tmp_path) == tmp_path / "s3" / "unit" / "studies"
    assert store.names("kl") is None
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "study.toml").write_text("[study]\n")
    (src / "sub" / "result.json").write_text('{"epoch": 1}\n')
    store.upload(src / "study.toml", "kl")
    store.upload(src / "sub" / "result.json", "kl", "trial_0")
    assert store.names("kl") == {"study.toml", "trial_0"}
    assert store.read_text("kl", "study.toml") == "[study]\n"
    store.download("kl", tmp_path / "down")
    assert (tmp_path / "down" / "trial_0" / "result.json").read_text() == '{"epoch": 1}\n'
    aside = store.move_aside("kl")
    assert aside.startswith("s3://unit/studies/kl.old-")
    assert store.names("kl") is None
    assert store.names(aside.rsplit("/", 1)[1]) == {"study.toml", "trial_0"}  # copied before the delete


@pytest.mark.slow  # an S3 server in its own process
def test_missing_bucket_is_refused_before_ray(s3_server: str, s3_env: dict[str, str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(SMOKE), "--storage", f"s3://no-such-bucket/studies?{s3_server}"]) == 2
    err = capsys.readouterr().err
    assert "--storage s3://no-such-bucket/studies" in err and "cannot write there" in err, err
    assert "endpoint_override" not in err  # the query (where secrets may live) is never printed
    assert not (tmp_path / "results").exists()
    assert main([str(SMOKE), "--storage", "nope://x/y"]) == 2
    assert "pyarrow cannot open nope://x/y" in capsys.readouterr().err


@pytest.mark.slow  # an S3 server in its own process
def test_report_of_a_study_on_s3(s3_server: str, s3_env: dict[str, str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m study.report s3://.../<name>` copies the study down, builds, and uploads report.html."""
    from pyarrow import fs

    from fake_results import write_fake_study
    from study.report import main as report_main

    make_bucket(s3_server, "reports")
    local = write_fake_study(tmp_path / "made")
    store = open_storage(f"s3://reports/lab4?{s3_server}")
    fs.copy_files(str(local), store.path("fake"), source_filesystem=fs.LocalFileSystem(), destination_filesystem=store.fs)
    assert "report.html" not in store.names("fake")
    monkeypatch.chdir(tmp_path)
    assert report_main([f"s3://reports/lab4/fake?{s3_server}"]) == 0
    out = capsys.readouterr().out
    assert "uploaded to s3://reports/lab4/fake/report.html" in out
    mirror = tmp_path / "results" / "s3" / "reports" / "lab4" / "fake" / "report.html"
    assert mirror.is_file() and store.read_text("fake", "report.html") == mirror.read_text(encoding="utf-8")
    assert report_main([f"s3://reports/lab4/nothing?{s3_server}"]) == 2
    assert "s3://reports/lab4/nothing: no such study folder" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_study_on_s3_killed_resumed_refused_and_fresh(s3_server: str, tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A study with --storage s3://...: trials write their results and checkpoints to the bucket.
    SIGKILL the driver once a checkpoint is there; the same command resumes it from the bucket (a
    new, empty mirror) and every trial ends with all its epochs; the driver mirrors the results for
    best.toml and the report and uploads those; a rerun is refused, --fresh moves the old study aside
    on the bucket and starts anew. The study is one setting run with 2 seeds, through the seed repeater:
    each trial gets its seed and Optuna the mean of their scores. (One study for what were three tests:
    `test_study_on_s3`, `test_killed_study_on_s3_resumes` and test_space's seed repeater in a Tune run.)"""
    make_bucket(s3_server, "studies")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    epochs = 3  # 1 setting x 2 seeds = 2 trials, one at a time: one trial process per run
    study = write_study(tmp_path / "s3.toml", study={"name": "s3", "num_samples": 1, "seeds": [0, 1],
                                                     "max_concurrent": 1}, train={"epochs": epochs})
    uri = f"s3://studies/lab4?{s3_server}"
    store = open_storage(uri)

    def a_checkpoint_uploaded() -> bool:
        names = store.names("s3") or set()
        return any(any(n.startswith("checkpoint_") for n in (store.names("s3", t) or ()))
                   for t in names if t.startswith("train_cvae_"))

    log = tmp_path / "first.log"
    proc = start_cli(study_cmd(study, "--storage", uri), tmp_path, cache_dir, log)
    try:
        wait_for(a_checkpoint_uploaded, 240, "a checkpoint on the bucket", proc, log)
    finally:
        kill_session(proc)
    assert "results: s3://studies/lab4/s3" in log.read_text(errors="replace")
    assert "finished.json" not in (store.names("s3") or set()), "killed too late"
    shutil.rmtree(tmp_path / "results")  # the mirror is only a cache: the bucket is the record

    r = run_cli(study_cmd(study, "--storage", uri), tmp_path, cache_dir)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "resuming the unfinished study in s3://studies/lab4/s3" in r.stdout
    names = store.names("s3")
    assert {"study.toml", "optuna.db", "best.toml", "report.html", "finished.json", "tuner.pkl"} <= names, names
    trials = [t for t in names if t.startswith("train_cvae_")]
    assert len(trials) == 2 and all((store.names("s3", t) or set()) >= {"params.json", "result.json"} for t in trials)
    runs = {}
    for t in trials:
        rows = [json.loads(x) for x in store.read_text("s3", t, "result.json").splitlines() if x.strip()]
        assert sorted({row["epoch"] for row in rows}) == list(range(epochs)), t  # nothing lost, 0-based
        assert any(n.startswith("checkpoint_") for n in store.names("s3", t))
        params = json.loads(store.read_text("s3", t, "params.json"))
        runs[params.pop("seed")] = (params, max(row["val/psnr"] for row in rows), rows[0]["train/loss"])
    assert json.loads(store.read_text("s3", "finished.json"))["trials"] == 2
    # the seed repeater: one sampled setting, each trial its seed (which trains differently), and
    # Optuna (exported from the resumed search) one trial valued the mean of the seeds' scores
    assert sorted(runs) == [0, 1] and runs[0][0] == runs[1][0] and runs[0][2] != runs[1][2], runs
    (setting,) = complete_optuna_trials(store, "s3", tmp_path)
    assert setting.params == runs[0][0] and setting.value == pytest.approx((runs[0][1] + runs[1][1]) / 2)
    assert "# Best checkpoint: s3://studies/lab4/s3/" in store.read_text("s3", "best.toml")
    mirror = tmp_path / "results" / "s3" / "studies" / "lab4" / "s3"
    assert (mirror / "report.html").stat().st_size > 10_000
    assert (mirror / "best.toml").read_text() == store.read_text("s3", "best.toml")

    again = run_cli(study_cmd(study, "--storage", uri), tmp_path, cache_dir)
    assert again.returncode == 2 and "s3://studies/lab4/s3 already holds a finished study" in again.stderr

    # --fresh moves it aside on the bucket and starts anew there (killed once begun: the rest is the run above)
    log = tmp_path / "fresh.log"
    proc = start_cli(study_cmd(study, "--storage", uri, "--fresh"), tmp_path, cache_dir, log)
    try:
        wait_for(lambda: "plan: " in tail(log, 10**6), 120, "the fresh study's plan", proc, log)
    finally:
        kill_session(proc)
    old = [n for n in store.names() if n.startswith("s3.old-")]
    assert len(old) == 1 and {"finished.json", *trials} <= store.names(old[0])
    assert not (store.names("s3") or set()) & {"finished.json", *trials}  # none of the old study left in place
