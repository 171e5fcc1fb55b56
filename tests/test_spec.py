"""study.spec: every shipped study loads; every kind of bad study file is rejected with file, key and reason."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cvae.config import Config, ConfigError, load_config
from study.analyze import read_study
from study.spec import StudyError, StudySpec, load_spec, main_error, parse_spec, smoke_spec
from study_helpers import ROOT, make_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LAB = ROOT / "search_spaces/lab"
LABLIKE = ROOT / "search_spaces/lablike"
STUDIES = sorted([*(ROOT / "search_spaces").glob("*.toml"), *LAB.glob("*.toml"), *LABLIKE.glob("*.toml")])
HEAD = '[study]\nname = "t"\nnum_samples = 2\n'


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_error(path: Path, key: str, contains: str = "") -> StudyError:
    with pytest.raises(StudyError) as info:
        load_spec(path)
    e = info.value
    text = str(e)
    assert "\n" not in text
    assert text.startswith(f"{path}: {key}: "), text
    assert e.key == key and e.path == str(path)
    assert contains in e.reason, text
    return e


# --- the shipped studies ---------------------------------------------------------------------------


def test_there_are_shipped_studies() -> None:
    assert {p.stem for p in STUDIES if p.parent.name == "search_spaces"} >= {"smoke", "kl", "tfr", "fast_train", "joint"}
    assert {p.stem for p in STUDIES if p.parent == LAB} == {"kl", "tfr", "fast_train", "gpu_check"}
    assert {p.stem for p in STUDIES if p.parent == LABLIKE} == {"tfr"}


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT / "search_spaces")))
def test_shipped_study_loads_and_builds(path: Path) -> None:
    spec = load_spec(path)
    # results/lab-kl and results/lablike-tfr beside results/kl
    assert spec.name == (f"{path.parent.name}-{path.stem}" if path.parent in (LAB, LABLIKE) else path.stem)
    text = path.read_text(encoding="utf-8")
    if "base" in tomllib.loads(text):  # the copy beside the results holds every value: it alone rebuilds the spec
        assert "base" not in tomllib.loads(spec.raw_text) and parse_spec(spec.raw_text, path) == spec
    else:
        assert spec.raw_text == text
    assert spec.path == path.resolve()
    assert isinstance(spec.base_config(), Config)
    assert spec.num_trials == spec.num_configs * len(spec.seeds) >= 1
    for point in spec.grid_points() or []:
        spec.config_for(point)


@pytest.mark.slow
def test_shipped_studies_answer_their_questions() -> None:
    kl = load_spec(ROOT / "search_spaces/kl.toml")
    assert kl.base_config().train.tfr == 0.0 and kl.race is not None and (kl.race.min, kl.race.max) == (2, 6)
    assert kl.param("kl_anneal_cycle").when == {"kl_anneal_type": ("Cyclical",)}
    assert set(kl.param("kl_anneal_type").choices) == {"Monotonic", "Cyclical", "None"}
    tfr = load_spec(ROOT / "search_spaces/tfr.toml")
    assert tfr.param("tfr").choices == (0.0, 1.0) and tfr.base_config().train.kl_anneal_type == "None"
    fast = load_spec(ROOT / "search_spaces/fast_train.toml")
    epochs = fast.base_config().train.epochs
    assert set(fast.param("fast_train_epoch").choices) >= {0, epochs}
    joint = load_spec(ROOT / "search_spaces/joint.toml")
    assert joint.scheduler == "asha" and joint.sampler == "tpe"
    assert {p.name for p in joint.space} == {"tfr", "tfr_sde", "tfr_d_step", "kl_anneal_type", "kl_anneal_cycle",
                                             "fast_train_epoch"}
    smoke = load_spec(ROOT / "search_spaces/smoke.toml")
    assert smoke.base_config().model.dims == (16, 4, 4, 16) and smoke.num_trials == 3
    for path in STUDIES:  # the CPU studies keep 2 at a time on 2 cores and ask for no GPU
        if path.parent != LAB:
            assert (load_spec(path).max_concurrent, load_spec(path).gpus_per_trial) == (2, 0.0), path.name


@pytest.mark.parametrize("name", ["kl", "tfr", "fast_train"])
def test_lab_studies_are_the_lab_on_a_gpu(name: str) -> None:
    lab, cpu = load_spec(LAB / f"{name}.toml"), load_spec(ROOT / f"search_spaces/{name}.toml")
    cfg = lab.base_config()
    assert cfg.model.dims == (128, 32, 12, 192) and (cfg.data.frame_H, cfg.data.frame_W) == (32, 64)
    assert (cfg.data.video_len, cfg.data.val_video_len, cfg.train.epochs) == (16, 630, 30)
    # no root: the embedded lab-style stand-in at the lab's size (issue 19's statistics); a user sets root
    assert cfg.data.root is None and cfg.data.synthetic_style == "lab"
    assert lab.gpus_per_trial == 0.25 and lab.max_concurrent is None  # 4 per GPU; the cluster sets how many
    assert [p.name for p in lab.space] == [p.name for p in cpu.space]  # the same question as the CPU study


def test_the_lablike_study_asks_the_tfr_question_on_the_lab_style_stand_in() -> None:
    lablike, cpu = load_spec(LABLIKE / "tfr.toml"), load_spec(ROOT / "search_spaces/tfr.toml")
    a, b = lablike.base_config(), cpu.base_config()
    assert a.data.synthetic_style == "lab" and a.data.root is None and b.data.synthetic_style == "bold"
    assert a.model == b.model and (a.data.frame_H, a.data.frame_W, a.data.val_video_len) == (16, 32, 150)
    assert lablike.space == cpu.space and lablike.seeds == (0, 1, 2)  # the same question, 3 seeds as measured
    assert (a.train.epochs, a.train.milestones) == (b.train.epochs, b.train.milestones) == (20, (16,))  # the CPU size


def test_the_gpu_check_study_is_the_lab_tfr_study_cut_short() -> None:
    short, lab = load_spec(LAB / "gpu_check.toml"), load_spec(LAB / "tfr.toml")
    a, b = short.base_config(), lab.base_config()
    assert a.model == b.model and a.data == b.data and short.space == lab.space
    assert a.train == b.train.__class__(**{**b.train.__dict__, "epochs": 5})
    assert short.seeds == (0,) and short.num_trials == 2 and short.gpus_per_trial == lab.gpus_per_trial > 0


@pytest.mark.parametrize("name", ["kl", "tfr", "fast_train"])
def test_a_lab_study_with_its_root_set_and_missing_is_refused(name: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from study.run import main

    text = (LAB / f"{name}.toml").read_text(encoding="utf-8").replace('# root = "../../LAB4_Dataset"', 'root = "../../LAB4_Dataset"')
    assert tomllib.loads(text)["data"]["root"] == "../../LAB4_Dataset"  # the line a user uncomments
    study = tmp_path / "search_spaces" / "lab" / f"{name}.toml"
    study.parent.mkdir(parents=True)
    study.write_text(text, encoding="utf-8")
    assert main([str(study), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: data.root: ") and str(tmp_path / "LAB4_Dataset") in err, err
    assert not (tmp_path / "results").exists()


# --- a valid study in detail -----------------------------------------------------------------------


def test_defaults_and_fields(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "[space.tfr]\nlow = 0.0\nhigh = 1.0\n"))
    assert (spec.metric, spec.mode, spec.objective, spec.seed, spec.seeds, spec.max_concurrent, spec.cpus_per_trial,
            spec.gpus_per_trial) == ("val/psnr", "max", "best", 0, (0,), None, 1.0, 0.0)  # None: what the cluster holds
    assert load_spec(write(tmp_path, HEAD + 'objective = "last"\n')).objective == "last"
    assert (spec.sampler, spec.scheduler, spec.max_failures, spec.description) == ("tpe", "none", 2, None)
    (p,) = spec.space
    assert (p.name, p.kind, p.section, p.low, p.high, p.log, p.step, p.when) == \
        ("tfr", "float", "train", 0.0, 1.0, False, None, None)
    assert spec.grid_size() is None and spec.num_trials == 2


@pytest.mark.parametrize("study, device", [("gpus_per_trial = 0.25", "auto"), ("gpus_per_trial = 0.5", "cuda"),
                                           ("gpus_per_trial = 1", "cuda:0"), ("gpus_per_trial = 2", "cuda:1"),
                                           ("gpus_per_trial = 0", "cpu"), ("gpus_per_trial = 0.5", "cpu")])
def test_gpus_per_trial_and_the_devices_a_trial_sees(tmp_path: Path, study: str, device: str) -> None:
    spec = load_spec(write(tmp_path, HEAD + f'{study}\nmax_concurrent = 3\n[train]\ndevice = "{device}"\n'))
    assert spec.gpus_per_trial == float(study.split("= ")[1]) and spec.max_concurrent == 3
    assert spec.base_config().train.device == device


def test_name_defaults_to_file_stem_and_grid_to_one_sample(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, '[search]\nsampler = "grid"\n[space.tfr]\nchoices = [0.0, 1.0]\n', "my-study.toml"))
    assert spec.name == "my-study" and spec.num_samples == 1 and spec.num_trials == 2


def test_int_range_type_inference(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "[space.tfr_sde]\nlow = 0\nhigh = 10\nstep = 2\n"
                                            "[space.tfr]\nlow = 0\nhigh = 1\ntype = \"float\"\n"))
    assert spec.param("tfr_sde").kind == "int" and spec.param("tfr_sde").grid_values() == (0, 2, 4, 6, 8, 10)
    assert spec.param("tfr").kind == "float" and spec.param("tfr").low == 0.0


def test_float_step_grid_values_are_exact(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "[space.tfr_d_step]\nlow = 0.0\nhigh = 0.5\nstep = 0.1\n"))
    assert spec.param("tfr_d_step").grid_values() == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def test_conditional_space_order_grid_and_fallback(tmp_path: Path) -> None:
    # the dependent parameter comes first in the file; it also has a [train] fallback value
    text = (HEAD + '[search]\nsampler = "grid"\n[train]\nkl_anneal_cycle = 4\n'
            '[space.kl_anneal_cycle]\nchoices = [2, 5]\nwhen = { kl_anneal_type = ["Cyclical"] }\n'
            '[space.kl_anneal_type]\nchoices = ["Monotonic", "Cyclical", "None"]\n')
    spec = load_spec(write(tmp_path, text))
    assert [p.name for p in spec.space] == ["kl_anneal_type", "kl_anneal_cycle"]
    points = spec.grid_points()
    assert points is not None and len(points) == spec.grid_size() == 4
    assert {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 5} in points
    assert {"kl_anneal_type": "Monotonic"} in points
    assert spec.num_trials == 2 * 4
    assert spec.config_for({"kl_anneal_type": "Monotonic"}).train.kl_anneal_cycle == 4


def test_fixed_space_value_and_when_list(tmp_path: Path) -> None:
    text = (HEAD + '[space.kl_anneal_type]\nchoices = ["Monotonic", "Cyclical", "None"]\n'
            '[space.kl_anneal_ratio]\nvalue = 0.5\nwhen = { kl_anneal_type = ["Cyclical", "Monotonic"] }\n'
            '[space.milestones]\nvalue = [3, 6]\n')
    spec = load_spec(write(tmp_path, text))
    assert spec.param("kl_anneal_ratio").kind == "fixed"
    assert spec.param("kl_anneal_ratio").when == {"kl_anneal_type": ("Cyclical", "Monotonic")}
    assert spec.grid_size() == 3
    cfg = spec.config_for({"kl_anneal_type": "Cyclical", "kl_anneal_ratio": 0.5, "milestones": [3, 6]})
    assert cfg.train.kl_anneal_ratio == 0.5 and cfg.train.milestones == (3, 6)


def test_config_for_seed_and_errors(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD.replace('name = "t"', 'name = "t"\nseeds = [3, 4]')
                           + "[train]\nepochs = 3\n[space.tfr]\nlow = 0.0\nhigh = 1.0\n"))
    assert spec.seeds == (3, 4) and spec.num_trials == 4
    assert spec.base_config().train.seed == 3
    cfg = spec.config_for({"tfr": 0.25, "seed": 4})
    assert (cfg.train.tfr, cfg.train.seed, cfg.train.epochs) == (0.25, 4, 3)
    with pytest.raises(ConfigError, match="did you mean 'tfr'"):
        spec.config_for({"tfrr": 0.5})
    with pytest.raises(ConfigError, match="tfr"):
        spec.config_for({"tfr": 2.0})


def test_train_seed_is_the_single_seed(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "[train]\nseed = 7\n"))
    assert spec.seeds == (7,) and spec.base_config().train.seed == 7


def test_dataset_root_relative_to_study_file(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "lab")
    (tmp_path / "studies").mkdir()
    spec = load_spec(write(tmp_path, HEAD + '[data]\nroot = "../data/lab"\ncache_dir = "cache"\n', "studies/s.toml"))
    assert spec.fixed["data"]["root"] == str((tmp_path / "data" / "lab").resolve())
    assert spec.fixed["data"]["cache_dir"] == str((tmp_path / "studies" / "cache").resolve())
    assert spec.base_config().data.root == spec.fixed["data"]["root"]


def test_asha_options(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + '[search]\nscheduler = "asha"\ngrace_period = 2\nreduction_factor = 2\n'))
    assert (spec.scheduler, spec.grace_period, spec.reduction_factor) == ("asha", 2, 2.0)


def test_main_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + "[train]\ntfr = 3.0\n")
    with pytest.raises(StudyError) as info:
        load_spec(path)
    assert main_error(info.value) == 2
    assert capsys.readouterr().err == f"error: {path}: train.tfr: must be in [0, 1], got 3.0\n"


def test_spec_is_frozen(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD))
    assert isinstance(spec, StudySpec)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


# --- bad study files -------------------------------------------------------------------------------

BAD: list[tuple[str, str, str, str]] = [
    # id, file text, dotted key, part of the reason
    ("unknown-table", HEAD + "[stdy]\nx = 1\n", "stdy", "did you mean 'study'"),
    ("table-not-table", 'study = 3\n', "study", "must be a table"),
    ("study-key-at-top", 'seeds = [0, 1]\n' + HEAD, "seeds", "belongs in the [study] table"),
    ("train-key-at-top", 'epochs = 3\n' + HEAD, "epochs", "belongs in the [train] table"),
    ("unknown-study-key", HEAD + "nmae = 'x'\n", "study.nmae", "did you mean 'name'"),
    ("unsafe-name", '[study]\nname = "../x"\nnum_samples = 1\n', "study.name", "folder name"),
    ("name-type", '[study]\nname = 3\nnum_samples = 1\n', "study.name", "must be a string"),
    ("description-type", HEAD + "description = 5\n", "study.description", "must be a string"),
    ("metric-typo", HEAD + 'metric = "val/psnrr"\n', "study.metric", "did you mean 'val/psnr'"),
    ("mode", HEAD + 'mode = "maximize"\n', "study.mode", "'max', 'min'"),
    ("objective", HEAD + 'objective = "mean"\n', "study.objective", "'best', 'last'"),
    ("num-samples-zero", '[study]\nname = "t"\nnum_samples = 0\n', "study.num_samples", ">= 1"),
    ("num-samples-float", '[study]\nname = "t"\nnum_samples = 1.5\n', "study.num_samples", "integer"),
    ("num-samples-missing", '[study]\nname = "t"\n', "study.num_samples", "missing"),
    ("seed-type", HEAD + 'seed = "0"\n', "study.seed", "integer"),
    ("max-concurrent", HEAD + "max_concurrent = 0\n", "study.max_concurrent", ">= 1"),
    ("cpus-zero", HEAD + "cpus_per_trial = 0\n", "study.cpus_per_trial", "> 0"),
    ("cpus-type", HEAD + 'cpus_per_trial = "1"\n', "study.cpus_per_trial", "number"),
    ("gpus-negative", HEAD + "gpus_per_trial = -0.5\n", "study.gpus_per_trial", ">= 0, got -0.5"),
    ("gpus-type", HEAD + 'gpus_per_trial = "0.5"\n', "study.gpus_per_trial", "number"),
    ("gpus-bool", HEAD + "gpus_per_trial = true\n", "study.gpus_per_trial", "number"),
    ("gpus-inf", HEAD + "gpus_per_trial = inf\n", "study.gpus_per_trial", "finite"),
    ("gpus-part-of-two", HEAD + "gpus_per_trial = 1.5\n", "study.gpus_per_trial", "whole number of GPUs, got 1.5"),
    ("cuda-without-gpus", HEAD + '[train]\ndevice = "cuda"\n', "train.device", "needs study.gpus_per_trial > 0"),
    ("cuda-1-of-a-share", HEAD + 'gpus_per_trial = 0.5\n[train]\ndevice = "cuda:1"\n', "train.device",
     "as cuda:0..cuda:0"),
    ("cuda-searched-without-gpus", HEAD + '[space.device]\nchoices = ["cpu", "cuda"]\n', "space.device.choices",
     "'cuda' needs study.gpus_per_trial > 0"),
    ("seeds-empty", HEAD + "seeds = []\n", "study.seeds", "non-empty"),
    ("seeds-not-list", HEAD + "seeds = 3\n", "study.seeds", "list"),
    ("seeds-type", HEAD + 'seeds = ["a"]\n', "study.seeds", "must be an integer, got str 'a'"),
    ("seeds-repeat", HEAD + "seeds = [1, 1]\n", "study.seeds", "repeat"),
    ("seeds-and-train-seed", HEAD + "seeds = [1, 2]\n[train]\nseed = 1\n", "train.seed", "study.seeds"),
    ("sampler", HEAD + '[search]\nsampler = "bayes"\n', "search.sampler", "'tpe'"),
    ("search-key", HEAD + '[search]\nsampeler = "tpe"\n', "search.sampeler", "did you mean 'sampler'"),
    ("scheduler", HEAD + '[search]\nscheduler = "hyperband"\n', "search.scheduler", "'asha'"),
    ("grace-without-asha", HEAD + "[search]\ngrace_period = 2\n", "search.grace_period", "asha"),
    ("factor-without-asha", HEAD + "[search]\nreduction_factor = 2\n", "search.reduction_factor", "asha"),
    ("grace-zero", HEAD + '[search]\nscheduler = "asha"\ngrace_period = 0\n', "search.grace_period", ">= 1"),
    ("grace-beyond-epochs", HEAD + '[search]\nscheduler = "asha"\ngrace_period = 5\n[train]\nepochs = 3\n',
     "search.grace_period", "<= train.epochs (3)"),
    ("factor-one", HEAD + '[search]\nscheduler = "asha"\nreduction_factor = 1\n', "search.reduction_factor", "> 1"),
    ("max-failures", HEAD + "[search]\nmax_failures = -1\n", "search.max_failures", ">= 0"),
    ("train-typo", HEAD + "[train]\nkl_anneal_cylce = 3\n", "train.kl_anneal_cylce", "did you mean 'kl_anneal_cycle'"),
    ("train-type", HEAD + '[train]\ntfr = "high"\n', "train.tfr", "must be a number"),
    ("train-range", HEAD + "[train]\ntfr = 1.5\n", "train.tfr", "[0, 1]"),
    ("train-kl-type", HEAD + '[train]\nkl_anneal_type = "Linear"\n', "train.kl_anneal_type", "'Cyclical'"),
    ("model-range", HEAD + "[model]\nF_dim = 12\n", "model.F_dim", "multiple of 8"),
    ("data-root-type", HEAD + "[data]\nroot = 5\n", "data.root", "must be a string, got int 5"),
    ("space-typo", HEAD + "[space.kl_anneal_cylce]\nchoices = [1, 2]\n", "space.kl_anneal_cylce",
     "did you mean 'kl_anneal_cycle'"),
    ("space-not-table", HEAD + "[space]\ntfr = 0.5\n", "space.tfr", "must be a table"),
    ("space-key-typo", HEAD + "[space.tfr]\nlo = 0.0\nhigh = 1.0\n", "space.tfr.lo", "did you mean 'low'"),
    ("space-two-forms", HEAD + "[space.tfr]\nlow = 0.0\nhigh = 1.0\nchoices = [0.0]\n", "space.tfr", "exactly one"),
    ("space-no-form", HEAD + '[space.tfr]\nwhen = { tfr_sde = 1 }\n', "space.tfr", "exactly one"),
    ("space-only-low", HEAD + "[space.tfr]\nlow = 0.0\n", "space.tfr", "high is missing"),
    ("space-seed", HEAD + "[space.seed]\nchoices = [0, 1]\n", "space.seed", "seeds"),
    ("space-root", HEAD + '[space.root]\nchoices = ["a"]\n', "space.root", "cannot be searched"),
    ("tfr-high", HEAD + "[space.tfr]\nlow = 0.0\nhigh = 1.5\n", "space.tfr.high", "[0, 1]"),
    ("tfr-d-step-negative", HEAD + "[space.tfr_d_step]\nlow = -0.1\nhigh = 0.5\n", "space.tfr_d_step.low", ">= 0"),
    ("cycle-zero", HEAD + "[space.kl_anneal_cycle]\nchoices = [0, 2]\n", "space.kl_anneal_cycle.choices", ">= 1"),
    ("ratio-zero", HEAD + "[space.kl_anneal_ratio]\nlow = 0.0\nhigh = 1.0\n", "space.kl_anneal_ratio.low", "(0, 1]"),
    ("fast-partial-high", HEAD + "[space.fast_partial]\nlow = 0.5\nhigh = 1.5\n", "space.fast_partial.high", "(0, 1]"),
    ("kl-type-choice", HEAD + '[space.kl_anneal_type]\nchoices = ["Cyclic"]\n', "space.kl_anneal_type.choices",
     "'Cyclical'"),
    ("choices-empty", HEAD + "[space.tfr]\nchoices = []\n", "space.tfr.choices", "empty"),
    ("choices-not-list", HEAD + '[space.tfr]\nchoices = "a"\n', "space.tfr.choices", "list"),
    ("choices-repeat", HEAD + "[space.tfr]\nchoices = [0.5, 0.5]\n", "space.tfr.choices", "repeats"),
    ("choices-list-value", HEAD + "[space.milestones]\nchoices = [[2, 5], [3, 6]]\n", "space.milestones.choices",
     "only be fixed"),
    ("value-range", HEAD + "[space.tfr]\nvalue = 2.0\n", "space.tfr.value", "[0, 1]"),
    ("low-not-below-high", HEAD + "[space.tfr]\nlow = 0.5\nhigh = 0.5\n", "space.tfr", "low must be < high"),
    ("log-low-zero", HEAD + "[space.lr]\nlow = 0.0\nhigh = 0.01\nlog = true\n", "space.lr.low", "> 0 for a log"),
    ("log-and-step", HEAD + "[space.lr]\nlow = 0.001\nhigh = 0.01\nlog = true\nstep = 0.001\n", "space.lr.step", "log"),
    ("log-type", HEAD + '[space.lr]\nlow = 0.001\nhigh = 0.01\nlog = "yes"\n', "space.lr.log", "true or false"),
    ("step-zero", HEAD + "[space.tfr]\nlow = 0.0\nhigh = 1.0\nstep = 0\n", "space.tfr.step", "> 0"),
    ("step-not-dividing", HEAD + "[space.tfr]\nlow = 0.0\nhigh = 1.0\nstep = 0.3\n", "space.tfr.step", "multiple"),
    ("range-type", HEAD + '[space.tfr]\nlow = 0.0\nhigh = 1.0\ntype = "double"\n', "space.tfr.type", "'float' or 'int'"),
    ("step-on-choices", HEAD + "[space.tfr]\nchoices = [0.0]\nstep = 0.1\n", "space.tfr.step", "only applies"),
    ("float-range-int-field", HEAD + "[space.kl_anneal_cycle]\nlow = 1.5\nhigh = 4\n", "space.kl_anneal_cycle",
     "integer"),
    ("int-range-fraction", HEAD + '[space.kl_anneal_cycle]\nlow = 1.5\nhigh = 4\ntype = "int"\n',
     "space.kl_anneal_cycle.low", "integer"),
    ("range-on-string", HEAD + "[space.kl_anneal_type]\nlow = 0\nhigh = 1\n", "space.kl_anneal_type", "not a number"),
    ("range-bool-bound", HEAD + "[space.tfr]\nlow = false\nhigh = 1.0\n", "space.tfr.low", "number"),
    ("when-unknown", HEAD + '[space.kl_anneal_type]\nchoices = ["Cyclical", "None"]\n[space.kl_anneal_cycle]\n'
     'choices = [2]\nwhen = { kl_anneal_typ = "Cyclical" }\n', "space.kl_anneal_cycle.when.kl_anneal_typ",
     "did you mean 'kl_anneal_type'"),
    ("when-not-in-space", HEAD + '[space.kl_anneal_cycle]\nchoices = [2]\nwhen = { kl_anneal_type = "Cyclical" }\n',
     "space.kl_anneal_cycle.when.kl_anneal_type", "not a [space] parameter"),
    ("when-bad-value", HEAD + '[space.kl_anneal_type]\nchoices = ["Cyclical", "None"]\n[space.kl_anneal_cycle]\n'
     'choices = [2]\nwhen = { kl_anneal_type = "Cyclic" }\n', "space.kl_anneal_cycle.when.kl_anneal_type",
     "did you mean 'Cyclical'"),
    ("when-out-of-range", HEAD + '[space.tfr]\nlow = 0.0\nhigh = 1.0\n[space.tfr_sde]\nchoices = [2]\n'
     'when = { tfr = 2.0 }\n', "space.tfr_sde.when.tfr", "never takes"),
    ("when-empty", HEAD + "[space.tfr]\nchoices = [0.0]\nwhen = {}\n", "space.tfr.when", "table"),
    ("when-self", HEAD + "[space.tfr]\nchoices = [0.0]\nwhen = { tfr = 0.0 }\n", "space.tfr.when.tfr", "itself"),
    ("when-circular", HEAD + "[space.tfr]\nchoices = [0.0, 1.0]\nwhen = { tfr_sde = 1 }\n[space.tfr_sde]\n"
     "choices = [1, 2]\nwhen = { tfr = 1.0 }\n", "space.tfr.when", "circular"),
    ("searched-and-fixed", HEAD + "[train]\ntfr = 0.0\n[space.tfr]\nlow = 0.0\nhigh = 1.0\n", "space.tfr",
     "also fixed in [train]"),
    ("grid-continuous", HEAD + '[search]\nsampler = "grid"\n[space.tfr]\nlow = 0.0\nhigh = 1.0\n', "space.tfr",
     "step"),
    ("grid-too-large", HEAD + '[search]\nsampler = "grid"\n[space.tfr]\nlow = 0.0\nhigh = 1.0\nstep = 0.0001\n'
     "[space.tfr_sde]\nlow = 0\nhigh = 10\n", "space", "more than"),
    ("combination", HEAD + "[space.synthetic_train_frames]\nchoices = [16, 128]\n[space.video_len]\nchoices = [8, 32]\n",
     "space.synthetic_train_frames", "video_len = 32"),
]


@pytest.mark.parametrize(("text", "key", "contains"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_study_is_rejected(tmp_path: Path, text: str, key: str, contains: str) -> None:
    assert_error(write(tmp_path, text), key, contains)


def test_did_you_mean_for_a_typo(tmp_path: Path) -> None:
    e = assert_error(write(tmp_path, HEAD + "[train]\nkl_anneal_cylce = 3\n"), "train.kl_anneal_cylce")
    assert str(e) == f"{tmp_path / 's.toml'}: train.kl_anneal_cylce: unknown key (did you mean 'kl_anneal_cycle'?)"


def test_dataset_is_not_load_specs_to_check(tmp_path: Path) -> None:
    """Whether data.root holds the lab's layout is cvae.data's check, which study.run makes before Ray
    (tests/test_study_run.py); a spec of a study whose dataset has gone still loads, for its report."""
    spec = load_spec(write(tmp_path, HEAD + '[data]\nroot = "no/such/dir"\n'))
    assert spec.base_config().data.root == str(tmp_path / "no" / "such" / "dir")


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "nope.toml", "-", "cannot read file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "d.toml").mkdir()
    assert_error(tmp_path / "d.toml", "-", "cannot read file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b'[study]\nname = "\xff\xfe"\n')
    assert_error(path, "-", "not a UTF-8 text file")


def test_not_toml(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "[study\nname = 1\n"), "-", "not valid TOML")


def test_study_file_runs_no_code(tmp_path: Path) -> None:
    # Something that would run under eval/exec is just an invalid TOML value here.
    marker = tmp_path / "ran"
    assert_error(write(tmp_path, HEAD + f"seed = __import__('pathlib').Path('{marker}').touch()\n"), "-", "not valid TOML")
    assert not marker.exists()


# --- one wording: a study file and a run config share the section builder ------------------------


def test_a_typo_reads_the_same_in_a_study_and_in_a_run_config(tmp_path: Path) -> None:
    study, run = write(tmp_path, HEAD + "nmae = 'x'\n"), write(tmp_path, "[train]\nepoch = 3\n", "run.toml")
    assert str(assert_error(study, "study.nmae")) == f"{study}: study.nmae: unknown key (did you mean 'name'?)"
    with pytest.raises(ConfigError) as e:
        load_config(run)
    assert str(e.value) == f"{run}: train.epoch: unknown key (did you mean 'epochs'?)"
    # and a wrong type
    assert assert_error(write(tmp_path, HEAD + 'seed = "0"\n'), "study.seed").reason == "must be an integer, got str '0'"
    with pytest.raises(ConfigError, match="train.epochs: must be an integer, got str '3'$"):
        load_config(write(tmp_path, '[train]\nepochs = "3"\n', "run.toml"))


def test_results_copy_is_read_leniently_with_the_same_defaults(tmp_path: Path) -> None:
    """A results folder's study.toml from another version: what this one refuses is left out and the
    tables' defaults apply (read_study builds the same StudyTable; there is no second reader)."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.toml").write_text('[study]\nnum_samples = 2\nmode = "maximize"\nfrom_the_future = 1\n'
                                                 'metric = "val/lpips"\n[train]\nseed = 4\n[space.tfr]\nlow = 0.0\n'
                                                 'high = 1.0\n[space.nope]\nchoices = [1]\n')
    info = read_study(tmp_path / "old")
    assert info.spec is None and (info.name, info.mode, info.objective, info.seeds) == ("old", "max", "best", (4,))
    assert info.metric == "val/lpips"  # a metric this version does not know is still the one the study optimised
    assert info.searched == ("tfr",)


# --- shared values by reference: base = "<file>" -------------------------------------------------

CPU = ROOT / "configs" / "cpu.toml"


def test_base_merges_table_by_table_and_the_file_wins(tmp_path: Path) -> None:
    write(tmp_path, '[model]\nF_dim = 16\nL_dim = 4\n[train]\nepochs = 5\nlr = 0.01\n[space.tfr]\nlow = 0.0\n'
                    'high = 1.0\n[space.tfr_sde]\nchoices = [1, 2]\n', "base.toml")
    spec = load_spec(write(tmp_path, 'base = "base.toml"\n' + HEAD + '[train]\nepochs = 3\n[space.tfr]\nchoices = [0.0, 1.0]\n'))
    cfg = spec.base_config()
    assert (cfg.model.F_dim, cfg.model.L_dim, cfg.train.epochs, cfg.train.lr) == (16, 4, 3, 0.01)
    assert spec.param("tfr").choices == (0.0, 1.0) and spec.param("tfr").low is None  # an entry is replaced whole
    assert spec.param("tfr_sde").choices == (1, 2)


def test_the_saved_study_is_the_resolved_one(tmp_path: Path) -> None:
    write(tmp_path, '[model]\nF_dim = 16\nL_dim = 4\n', "base.toml")
    spec = load_spec(write(tmp_path, 'base = "base.toml"\n' + HEAD))
    first, *_ = spec.raw_text.splitlines()
    assert first.startswith("#") and "base.toml" in first
    raw = tomllib.loads(spec.raw_text)
    assert "base" not in raw and raw["model"] == {"F_dim": 16, "L_dim": 4} and raw["study"]["name"] == "t"
    (tmp_path / "results").mkdir()
    copy = write(tmp_path / "results", spec.raw_text, "study.toml")
    (tmp_path / "base.toml").unlink()  # a result outlives the files it came from
    assert load_spec(copy).base_config() == spec.base_config()
    assert smoke_spec(spec).raw_text.splitlines()[0] == first  # and so does a smoke study's


def test_a_chain_of_bases_and_paths_relative_to_the_file_that_writes_them(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data")
    (tmp_path / "shared").mkdir()
    (tmp_path / "studies").mkdir()
    write(tmp_path, '[data]\nroot = "../data"\n[train]\nepochs = 4\nlr = 0.01\n', "shared/lab.toml")
    write(tmp_path, 'base = "lab.toml"\n[train]\nepochs = 5\n', "shared/mid.toml")
    spec = load_spec(write(tmp_path, 'base = "../shared/mid.toml"\n' + HEAD, "studies/s.toml"))
    cfg = spec.base_config()
    assert cfg.data.root == str((tmp_path / "data").resolve()) and (cfg.train.epochs, cfg.train.lr) == (5, 0.01)
    assert "../shared/mid.toml, ../shared/lab.toml" in spec.raw_text.splitlines()[0]


def test_a_missing_base_a_cycle_or_a_bad_value_names_the_file_and_key(tmp_path: Path) -> None:
    assert_error(write(tmp_path, 'base = "nope.toml"\n' + HEAD), "base", "'nope.toml': no such file")
    assert_error(write(tmp_path, "base = 3\n" + HEAD), "base", "must be a string, got int 3")
    write(tmp_path, 'base = "b.toml"\n' + HEAD, "a.toml")
    b = write(tmp_path, 'base = "a.toml"\n', "b.toml")
    for load in (load_spec, load_config):
        with pytest.raises(ConfigError) as e:
            load(tmp_path / "a.toml")
        assert (e.value.source, e.value.key) == (str(b), "base") and "cycle of bases: a.toml -> b.toml -> a.toml" in e.value.reason
    # a bad value names the file that wrote it
    bad = write(tmp_path, "[train]\ntfr = 3.0\n", "bad.toml")
    with pytest.raises(StudyError) as se:
        load_spec(write(tmp_path, 'base = "bad.toml"\n' + HEAD))
    assert str(se.value) == f"{bad}: train.tfr: must be in [0, 1], got 3.0"
    with pytest.raises(ConfigError, match=f"^{bad}: train.tfr: must be in"):
        load_config(write(tmp_path, 'base = "bad.toml"\n[model]\nF_dim = 16\n', "run.toml"))


def test_a_run_config_takes_a_base_too(tmp_path: Path) -> None:
    write(tmp_path, "[model]\nF_dim = 16\n[train]\nepochs = 4\nlr = 0.01\n", "cpu.toml")
    cfg = load_config(write(tmp_path, 'base = "cpu.toml"\n[train]\nepochs = 2\n', "run.toml"))
    assert (cfg.model.F_dim, cfg.train.epochs, cfg.train.lr) == (16, 2, 0.01)


@pytest.mark.slow
def test_the_cpu_size_is_written_once() -> None:
    cpu = load_config(CPU)
    demo = load_config(ROOT / "configs" / "demo.toml")
    assert (demo.model, demo.data, demo.train.epochs, demo.train.lr, demo.train.milestones) == \
        (cpu.model, cpu.data, cpu.train.epochs, cpu.train.lr, cpu.train.milestones)
    for name in ("kl", "tfr", "fast_train", "joint"):
        path = ROOT / "search_spaces" / f"{name}.toml"
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        assert raw["base"] == "../configs/cpu.toml" and "model" not in raw and "data" not in raw, name
        cfg = load_spec(path).base_config()
        assert (cfg.model, cfg.data, cfg.train.lr, cfg.train.milestones) == \
            (cpu.model, cpu.data, cpu.train.lr, cpu.train.milestones), name
