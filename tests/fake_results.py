"""A hand-made study results dir in Ray Tune's layout, written without Ray (milliseconds).

`write_fake_study(root)` writes `root/<name>/` holding a grid over kl_anneal_type (Cyclical, None)
with kl_anneal_cycle (2, 4) only when Cyclical, three seeds each, 6 planned epochs, and these fates:

    Cyclical/2 seed 2   errored after 3 epochs (error.txt)
    Cyclical/4 seed 2   stopped early by ASHA after 2 epochs
    None seed 1         diverged at epoch 3 (NaN losses, no val/* in its last row)
    everything else     completed

`partial=True` is a study caught mid-run: None seed 2 is running (2 epochs, no checkpoint yet),
one more trial is pending (params.json only), and there is no finished.json. `fast_train=True` adds
fast_train_epoch (0, 3) to the grid. Checkpoints hold config.json, psnr_per_frame.json and a
manifest naming a state.pt that is missing, so loading the model fails as for a lost checkpoint.

`write_objective_study(root, objective)` writes a study whose best-epoch and last-epoch rankings
differ: Monotonic peaks early then falls (wins by its best epoch), None climbs (wins by its last);
OBJECTIVE_WINNER says which setting each objective must pick.

`write_scores_study(root, scores, ...)` writes a finished kl study whose trials end on the given
val/psnr per setting and seed (a known answer for the learning sentence and Welch's verdicts), with,
optionally, the one-step metrics (val/psnr_step, val/psnr_step_hold) and the GPU fraction Ray
reserved (resources/gpu) in every result row; `write_race_study(root, per_seed, ...)` a finished seed
race ([study] seeds = { min, max }) holding the trials study.race would have run on those scores.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

from cvae import schedules
from study.compare import ALPHA, MARGIN_DB
from study.race import RaceRule, replay
from study.spec import load_spec

EPOCHS = 6
VAL_FRAMES = 12  # val_video_len: 11 predicted frames
HOLD = 19.0  # val/psnr_hold, the floor
BASE = {("Cyclical", 2): 21.5, ("Cyclical", 4): 22.0, ("None", None): 20.8}
SEED_OFFSET = {0: 0.0, 1: 0.2, 2: -0.15}

# The tiny model and data both fake studies claim to have run.
TINY = """\
[model]
F_dim = 16
L_dim = 4
N_dim = 4
D_out_dim = 16

[data]
video_len = 4
val_video_len = {val}
synthetic_train_videos = 2
synthetic_train_frames = 16
synthetic_test_sequences = 0
"""
STUDY = """\
# fake: a hand-made kl study for the analysis and report tests
[study]
name = "{name}"
description = "Fake KL study: Cyclical (2 periods) vs None, 3 seeds, with every trial fate."
metric = "val/psnr"
mode = "max"
seeds = [0, 1, 2]
max_concurrent = 2

[search]
sampler = "grid"

{tiny}
[train]
epochs = {epochs}
tfr = 0.8
tfr_sde = 2
tfr_d_step = 0.2
kl_anneal_cycle = 4

[space.kl_anneal_type]
choices = ["Cyclical", "None"]

[space.kl_anneal_cycle]
choices = [2, 4]
when = {{ kl_anneal_type = "Cyclical" }}
"""
FAST = """
[space.fast_train_epoch]
choices = [0, 3]
"""


def _fate(kl: str, cycle: int | None, seed: int, partial: bool) -> tuple[str, int]:
    """(fate, epochs reported) of one trial."""
    if (kl, cycle, seed) == ("Cyclical", 2, 2):
        return "errored", 3
    if (kl, cycle, seed) == ("Cyclical", 4, 2):
        return "stopped_early", 2
    if (kl, seed) == ("None", 1):
        return "diverged", 4
    if partial and (kl, seed) == ("None", 2):
        return "running", 2
    return "completed", EPOCHS


def _psnr(kl: str, cycle: int | None, seed: int, fast: int, epoch: int) -> float:
    return BASE[(kl, cycle)] + SEED_OFFSET[seed] + 0.3 * epoch - 0.02 * epoch**2 + (0.1 if fast else 0.0)


def _curves(mean: float) -> tuple[list[float], list[float]]:
    n = VAL_FRAMES - 1
    psnr = [mean + 2.0 - 4.0 * t / (n - 1) for t in range(n)]  # mean over frames == mean
    hold = [HOLD + 6.0 - 12.0 * t / (n - 1) for t in range(n)]
    return psnr, hold


def _write_checkpoint(d: Path, config: dict[str, Any], epoch: int, curve: dict[str, Any]) -> None:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config, indent=2))
    (d / "psnr_per_frame.json").write_text(json.dumps(curve))
    sums = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in ("config.json", "psnr_per_frame.json")}
    sums["state.pt"] = "0" * 64  # listed but missing: the model cannot be loaded
    (d / "manifest.json").write_text(json.dumps({"epoch": epoch, "sha256": sums}))


def write_fake_study(root: str | Path, name: str = "fake", *, partial: bool = False, fast_train: bool = False,
                     state: bool = True) -> Path:
    """Write the fake study under root/name and return its dir (see the module docstring)."""
    out = Path(root) / name
    out.mkdir(parents=True)
    text = STUDY.format(name=name, tiny=TINY.format(val=VAL_FRAMES), epochs=EPOCHS)
    (out / "study.toml").write_text(text + (FAST if fast_train else ""))
    spec = load_spec(out / "study.toml")
    settings = [("Cyclical", 2), ("Cyclical", 4), ("None", None)]
    fasts = (0, 3) if fast_train else (0,)
    statuses: list[tuple[str, str, str]] = []
    n = 0
    for kl, cycle in settings:
        for fast in fasts:
            for seed in (0, 1, 2):
                n += 1
                params: dict[str, Any] = {"kl_anneal_type": kl}
                if cycle is not None:
                    params["kl_anneal_cycle"] = cycle
                if fast_train:
                    params["fast_train_epoch"] = fast
                params["seed"] = seed
                fate, epochs = _fate(kl, cycle, seed, partial)
                if fast:  # the fates above belong to the fast-train-off half
                    fate, epochs = "completed", EPOCHS
                tid = hashlib.sha1(f"{name}-{n}".encode()).hexdigest()[:8]
                tag = ",".join(f"{k}={v}" for k, v in params.items())
                d = out / f"train_cvae_{tid}_{n}_{tag}_2026-01-01_00-00-00"
                d.mkdir()
                extra = {"__trial_index__": n, "milestones": [2, 5]} if n == 1 else {}  # ignored by analyze
                (d / "params.json").write_text(json.dumps({**params, **extra}, indent=2))
                _write_trial(d, spec.config_for(params).to_dict(), params, tid, n, seed, fate, epochs,
                             lambda e, kl=kl, cycle=cycle, seed=seed, fast=fast: _psnr(kl, cycle, seed, fast, e))
                statuses.append((tid, d.name, {"errored": "ERROR", "running": "RUNNING"}.get(fate, "TERMINATED")))
    if partial:
        n += 1
        tid = hashlib.sha1(f"{name}-{n}".encode()).hexdigest()[:8]
        d = out / f"train_cvae_{tid}_{n}_kl_anneal_type=None,seed=0_2026-01-01_00-00-00"
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"kl_anneal_type": "None", "seed": 0}))
        statuses.append((tid, d.name, "PENDING"))
    if state:
        trial_data = [[json.dumps({"trial_id": tid, "relative_logdir": dname, "status": status}),
                       json.dumps({"num_failures": int(status == "ERROR")})] for tid, dname, status in statuses]
        (out / "experiment_state-2026-01-01_00-00-00.json").write_text(
            json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {}}))
    if not partial:
        (out / "finished.json").write_text(json.dumps({"finished": True}))
    return out


def _write_trial(d: Path, config: dict[str, Any], params: dict[str, Any], tid: str, n: int, seed: int, fate: str,
                 epochs: int, psnr_at: Callable[[int], float], keep: str = "newest", floor: float = HOLD,
                 extra: Callable[[float], dict[str, Any]] | None = None) -> None:
    """One trial's files; Ray keeps two checkpoints: the newest two, or (keep="best") the best two by
    val/psnr and the newest, as Tune's CheckpointConfig does for each [study] objective. `extra(psnr)`
    adds keys to every validated row."""
    t = config["train"]
    fast = params.get("fast_train_epoch", 0)
    rows: list[dict[str, Any]] = []
    best, best_epoch, best_curve = -math.inf, -1, None
    total = 0.0
    for e in range(epochs):
        diverged = fate == "diverged" and e == epochs - 1
        total += 10.0 + n
        psnr = psnr_at(e)
        loss = 0.05 / (1 + e) + 0.001 * seed
        row: dict[str, Any] = {
            "epoch": e, "train/loss": math.nan if diverged else loss, "train/mse": math.nan if diverged else loss * 0.8,
            "train/kl": math.nan if diverged else 2.0 / (1 + e),
            "beta": schedules.beta(e, t["kl_anneal_type"], t["kl_anneal_cycle"], t["kl_anneal_ratio"]),
            "tfr": schedules.tfr(e, t["tfr"], t["tfr_sde"], t["tfr_d_step"]),
            "teacher_forcing": float((e + seed) % 2), "fast_train": e < fast, "train/sequences": 8, "lr": 1e-3,
            "train/frames_per_s": 20.0 + seed, "threads": 1, "diverged": diverged,
        }
        if not diverged:
            row.update({"val/psnr": psnr, "val/psnr_hold": floor, "val/psnr_min": psnr - 2.0, "val/ssim": 0.5 + 0.01 * e,
                        "val/frames_per_s": 50.0, "time/val_s": 0.2, **(extra(psnr) if extra else {})})
            if psnr > best:
                best, best_epoch, best_curve = psnr, e, _curves(psnr)[0]
        row.update({"val/best_psnr": best, "time/epoch_s": 10.0 + n, "time/cpu_s": 0.9 * total})
        ckpt = None if diverged else f"checkpoint_{e:06d}"
        # trial n starts 1000 s after trial n - 1
        row.update({"timestamp": 1_767_225_600 + 1000 * n + int(total), "checkpoint_dir_name": ckpt,
                    "should_checkpoint": ckpt is not None,
                    "done": False, "training_iteration": e + 1, "trial_id": tid, "date": "2026-01-01_00-00-00",
                    "time_this_iter_s": 10.0 + n, "time_total_s": total, "pid": 1000 + n,
                    "hostname": f"node{n % 2}", "node_ip": f"10.0.0.{n % 2 + 1}", "config": params,
                    "time_since_restore": total, "iterations_since_restore": e + 1})
        rows.append(row)
        if ckpt is not None and not (fate == "running"):
            curve, hold = _curves(psnr)
            _write_checkpoint(d / ckpt, config, e, {"epoch": e, "psnr": curve, "psnr_hold": hold,
                                                    "best_epoch": best_epoch, "best_psnr": best_curve})
    ckpts = sorted(d.glob("checkpoint_*"))
    if keep == "best":
        score = {f"checkpoint_{r['epoch']:06d}": r.get("val/psnr", -math.inf) for r in rows}
        kept = set(sorted(ckpts, key=lambda c: -score[c.name])[:2]) | set(ckpts[-1:])
    else:
        kept = set(ckpts[-2:])
    for old in set(ckpts) - kept:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    # json.dumps writes NaN as a bare token, as Ray's result.json does
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if fate == "errored":
        (d / "error.txt").write_text("Failure # 1 (occurred at 2026-01-01_00-00-30)\nTraceback (most recent call last):\n"
                                     '  File "trainable.py", line 1, in train_cvae\nRuntimeError: simulated crash\n')


KL_STUDY = """\
# fake: {what}
[study]
name = "{name}"
metric = "val/psnr"
mode = "max"
objective = "{objective}"
seeds = {seeds}
{keys}
[search]
sampler = "grid"

{tiny}
[train]
epochs = {epochs}

[space.kl_anneal_type]
choices = {choices}
"""
# Monotonic peaks at epoch 1 then falls; None climbs: by the best epoch Monotonic wins, by the last None.
CURVES = {"Monotonic": (22.0, 25.0, 23.0, 21.0, 20.0, 19.5), "None": (20.0, 21.0, 22.0, 22.5, 23.0, 23.5)}
OBJECTIVE_WINNER = {"best": "kl_anneal_type=Monotonic", "last": "kl_anneal_type=None"}


def _write_kl_study(root: str | Path, name: str, what: str, curves: dict[str, list[Callable[[int], float]]],
                    objective: str = "best", seeds: str | None = None, keys: dict[str, Any] | None = None,
                    **trial: Any) -> Path:
    """A finished study over kl_anneal_type: curves[kind][seed](epoch) is that trial's val/psnr;
    `seeds` the [study] seeds as TOML (default the list 0..n-1), `keys` more [study] keys; `trial`
    goes to _write_trial (keep, floor, extra)."""
    out = Path(root) / name
    out.mkdir(parents=True)
    seeds = seeds or json.dumps(list(range(max(len(v) for v in curves.values()))))
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (keys or {}).items())  # numbers and bools: TOML too
    (out / "study.toml").write_text(KL_STUDY.format(what=what, name=name, objective=objective, seeds=seeds, keys=lines,
                                                    choices=json.dumps(list(curves)), tiny=TINY.format(val=VAL_FRAMES),
                                                    epochs=EPOCHS))
    spec = load_spec(out / "study.toml")
    n = 0
    for kl, per_seed in curves.items():
        for seed, psnr_at in enumerate(per_seed):
            n += 1
            params = {"kl_anneal_type": kl, "seed": seed}
            tid = hashlib.sha1(f"{name}-{n}".encode()).hexdigest()[:8]
            d = out / f"train_cvae_{tid}_{n}_kl_anneal_type={kl},seed={seed}_2026-01-01_00-00-00"
            d.mkdir()
            (d / "params.json").write_text(json.dumps(params))
            _write_trial(d, spec.config_for(params).to_dict(), params, tid, n, seed, "completed", EPOCHS, psnr_at, **trial)
    (out / "finished.json").write_text(json.dumps({"finished": True}))
    return out


def write_objective_study(root: str | Path, objective: str, name: str = "objective") -> Path:
    """A finished study of 2 settings x 2 seeds whose rankings by best and by last epoch differ."""
    curves = {kl: [lambda e, c=c, seed=seed: c[e] + 0.1 * seed for seed in (0, 1)] for kl, c in CURVES.items()}
    return _write_kl_study(root, name, "best-epoch and last-epoch rankings disagree", curves, objective,
                           keep="best" if objective == "best" else "newest")


def write_scores_study(root: str | Path, scores: dict[str, list[float]], name: str = "scores", *, hold: float = HOLD,
                       step: tuple[float, float] | None = None, gpu: float | None = None,
                       keys: dict[str, Any] | None = None, race: tuple[int, int] | None = None) -> Path:
    """A finished study over kl_anneal_type whose trial of setting k, seed i climbs to scores[k][i] at its
    last epoch; the floor is `hold`. step=(above, copy): val/psnr_step = val/psnr + above and
    val/psnr_step_hold = copy in every row; gpu: resources/gpu in every row; keys: more [study] keys
    (alpha, margin_db, paired); race=(min, max): [study] seeds = { min, max } (a seed race), and each
    setting runs as many seeds as its list holds (write_race_study plays the race out)."""

    def extra(psnr: float) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if step is not None:
            row.update({"val/psnr_step": psnr + step[0], "val/psnr_step_hold": step[1]})
        if gpu is not None:
            row["resources/gpu"] = gpu
        return row

    curves = {kl: [lambda e, last=last: last - 0.5 * (EPOCHS - 1 - e) for last in v] for kl, v in scores.items()}
    seeds = f"{{ min = {race[0]}, max = {race[1]} }}" if race is not None else None
    return _write_kl_study(root, name, "every trial ends on a given val/psnr", curves, seeds=seeds, keys=keys,
                           floor=hold, extra=extra)


def write_race_study(root: str | Path, per_seed: dict[str, list[float]], name: str = "race", *, race: tuple[int, int] = (2, 4),
                     keys: dict[str, Any] | None = None) -> Path:
    """A finished seed race over kl_anneal_type: per_seed[setting][k] is what seed k would score, and
    the study holds the trials the race (study.race.replay, at the study's alpha / margin_db / paired
    in `keys`) would have run: the leader and the open ones more seeds, the settled ones fewer."""
    k = keys or {}
    rule = RaceRule(race[0], race[1], "max", k.get("alpha", ALPHA), k.get("margin_db", MARGIN_DB), k.get("paired", False))
    counts, _, _ = replay(per_seed, rule)
    return write_scores_study(root, {s: v[:counts[s]] for s, v in per_seed.items()}, name, keys=keys, race=race)
