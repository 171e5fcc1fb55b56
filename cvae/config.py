"""Frozen configuration of one training run: model, data and training, each checked when built.

A single run is a TOML file with up to three tables, `[model]`, `[data]` and `[train]`, whose keys
are the fields below; it may start with `base = "other.toml"` and list only what it changes
(read_config_file). `load_config` rejects unknown tables and keys (with a "did you mean" hint),
wrong types and out-of-range values, naming the file, the key and the reason. A study file's own
tables (study.spec) are built by the same section builder (build_section), with the same errors.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

KLType = Literal["Monotonic", "Cyclical", "None"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
KL_TYPES: tuple[str, ...] = ("Monotonic", "Cyclical", "None")
SYNTHETIC_STYLES: tuple[str, ...] = ("bold", "lab")


class ConfigError(ValueError):
    """A bad configuration value: names the file (if any), the dotted key and the reason."""

    def __init__(self, key: str, reason: str, source: str | Path | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}{key}: {reason}")


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class ModelConfig:
    """Dims of the lab's five modules (lab defaults F, L, N, D = 128, 32, 12, 192)."""

    F_dim: int = 128  # RGB_Encoder output channels (frame feature); divisible by 8
    L_dim: int = 32  # Label_Encoder output channels (pose feature); even
    N_dim: int = 12  # latent channels of z per pixel; divisible by 4
    D_out_dim: int = 192  # Decoder_Fusion output channels; divisible by 8
    # The lab template passes `True` as LeakyReLU's slope in the Label_Encoder and the
    # Gaussian_Predictor, which makes it the identity. True keeps that; False uses LeakyReLU(0.01).
    act_identity: bool = True
    # Squash the Generator's output into [0, 1] with a sigmoid (the common lab solution); False
    # leaves it raw as the template's Generator returns it.
    output_sigmoid: bool = True
    # Run the Label_Encoder over all B*T pose frames in one call. Exact for the conv layers, but its
    # BatchNorm then normalises over B*T frames instead of B per step: it changes the numbers,
    # so it is off by default (the lab's per-frame statistics).
    batch_label_encoder: bool = False
    # Time steps per batched call in the fast training path (B * time_chunk frames per call). An
    # execution knob only: results are the same for any value. On a CPU, a few steps per call beat
    # both one step (per-call overhead) and the whole sequence (activations fall out of cache).
    time_chunk: int = 4

    def __post_init__(self) -> None:
        _check(self.F_dim >= 8 and self.F_dim % 8 == 0, "F_dim", f"must be a positive multiple of 8, got {self.F_dim}")
        _check(self.L_dim >= 2 and self.L_dim % 2 == 0, "L_dim", f"must be a positive even number, got {self.L_dim}")
        _check(self.N_dim >= 4 and self.N_dim % 4 == 0, "N_dim", f"must be a positive multiple of 4, got {self.N_dim}")
        _check(self.D_out_dim >= 8 and self.D_out_dim % 8 == 0, "D_out_dim", f"must be a positive multiple of 8, got {self.D_out_dim}")
        _check(self.time_chunk >= 1, "time_chunk", f"must be >= 1, got {self.time_chunk}")
        _check((self.F_dim + self.L_dim + self.N_dim) % 4 == 0, "F_dim",
               f"F_dim + L_dim + N_dim must be a multiple of 4 (Decoder_Fusion halves and quarters it), got {self.F_dim + self.L_dim + self.N_dim}")

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return (self.F_dim, self.L_dim, self.N_dim, self.D_out_dim)


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from and how they are cut into sequences."""

    root: str | None = None  # a lab-layout dataset directory; None = the embedded synthetic dancer
    frame_H: int = 32  # frame height in pixels after resizing
    frame_W: int = 64  # frame width in pixels after resizing
    video_len: int = 16  # frames per training sequence (the lab's train_vi_len)
    val_video_len: int = 630  # frames of the validation rollout (the lab's val_vi_len)
    # Synthetic dataset only (ignored when `root` is set):
    synthetic_seed: int = 0  # seed of the generated dancers; same seed, same bytes
    synthetic_train_videos: int = 8  # number of training videos generated
    synthetic_train_frames: int = 128  # frames per training video (rounded down to a multiple of video_len)
    # distinct dancers (body, clothes, room) over the training videos, video i danced by dancer
    # i mod K; 0 = a new dancer per video. The validation video is always dancer 0's. Bold style only.
    synthetic_dancers: int = 0
    # "bold": the large, bright, fast dancer the shipped studies are tuned on; "lab": a stand-in with
    # the lab's statistics (one small person, slow moves, thin pose lines; cvae.synthetic_lab)
    synthetic_style: Literal["bold", "lab"] = "bold"
    # sequences of the test split (630 frames at 32x64, as the lab's test phase); 0 = no test split
    synthetic_test_sequences: int = 5
    cache_dir: str | None = None  # where generated datasets are cached; None = $CVAE_CACHE or ~/.cache/cvae-study

    def __post_init__(self) -> None:
        _check(self.frame_H >= 8, "frame_H", f"must be >= 8, got {self.frame_H}")
        _check(self.frame_W >= 8, "frame_W", f"must be >= 8, got {self.frame_W}")
        _check(self.video_len >= 2, "video_len", f"must be >= 2 (one frame given, one predicted), got {self.video_len}")
        _check(self.val_video_len >= 2, "val_video_len", f"must be >= 2, got {self.val_video_len}")
        _check(self.synthetic_train_videos >= 1, "synthetic_train_videos", f"must be >= 1, got {self.synthetic_train_videos}")
        _check(self.synthetic_dancers >= 0, "synthetic_dancers", f"must be >= 0, got {self.synthetic_dancers}")
        _check(self.synthetic_style in SYNTHETIC_STYLES, "synthetic_style",
               f"must be one of {', '.join(map(repr, SYNTHETIC_STYLES))}, got {self.synthetic_style!r}")
        _check(self.synthetic_style == "bold" or self.synthetic_dancers <= 1, "synthetic_dancers",
               f"the lab style has one person in every video; got {self.synthetic_dancers} with synthetic_style = 'lab'")
        _check(self.synthetic_test_sequences >= 0, "synthetic_test_sequences",
               f"must be >= 0 (0 = no test split), got {self.synthetic_test_sequences}")
        _check(self.synthetic_train_frames >= self.video_len, "synthetic_train_frames",
               f"must be >= video_len ({self.video_len}), got {self.synthetic_train_frames}")

    @property
    def synthetic(self) -> bool:
        return self.root is None


@dataclass(frozen=True)
class TrainConfig:
    """The lab's training knobs (defaults are the lab's) plus run bookkeeping."""

    epochs: int = 10  # training epochs
    batch_size: int = 2  # sequences per optimisation step
    lr: float = 1e-3  # Adam learning rate
    milestones: tuple[int, ...] = (2, 5)  # MultiStepLR epochs at which lr is multiplied by gamma
    gamma: float = 0.1  # MultiStepLR factor
    grad_clip: float = 1.0  # max gradient norm before each Adam step
    tfr: float = 1.0  # initial teacher-forcing ratio, probability in [0, 1]
    tfr_sde: int = 10  # epoch from which tfr decays
    tfr_d_step: float = 0.1  # tfr decrease per epoch from tfr_sde on (floored at 0)
    tf_per: Literal["epoch", "batch"] = "epoch"  # teacher forcing drawn once per epoch (lab) or per batch
    kl_anneal_type: KLType = "Cyclical"  # "Monotonic" | "Cyclical" | "None" (beta = 1)
    kl_anneal_cycle: int = 10  # KL annealing period P in epochs
    kl_anneal_ratio: float = 1.0  # fraction r of a period spent ramping beta from 0 to 1
    fast_partial: float = 0.4  # fraction of training sequences used during fast-train epochs
    fast_train_epoch: int = 0  # fast-train for the first this-many epochs (0 = off)
    val_every: int = 1  # validate every this-many epochs (and always at the last epoch)
    seed: int = 0  # seeds torch, numpy and Python's random
    threads: int | None = None  # torch intra-op threads; None = the CPUs this process may use
    max_steps_per_epoch: int | None = None  # cap on optimisation steps per epoch (smoke runs)
    keep_checkpoints: int = 2  # epoch checkpoints kept on disk by a plain run (Ray keeps its own)
    device: str = "auto"  # "auto" (CUDA when available, else CPU) | "cpu" | "cuda" | "cuda:N"
    # "fp32" (the lab's) | "bf16" | "fp16": torch.autocast for the forward passes (fp16 with a
    # GradScaler); the loss, its gradients' clipping and every metric stay fp32.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the five modules (the per-frame step); minutes of warm-up on a CPU

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(all(m >= 0 for m in self.milestones), "milestones", f"must be epochs >= 0, got {list(self.milestones)}")
        _check(list(self.milestones) == sorted(self.milestones), "milestones", f"must be increasing, got {list(self.milestones)}")
        _check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")
        _check(0.0 <= self.tfr <= 1.0, "tfr", f"must be in [0, 1], got {self.tfr}")
        _check(self.tfr_sde >= 0, "tfr_sde", f"must be >= 0, got {self.tfr_sde}")
        _check(self.tfr_d_step >= 0, "tfr_d_step", f"must be >= 0, got {self.tfr_d_step}")
        _check(self.tf_per in ("epoch", "batch"), "tf_per", f"must be 'epoch' or 'batch', got {self.tf_per!r}")
        _check(self.kl_anneal_type in KL_TYPES, "kl_anneal_type",
               f"must be one of {', '.join(KL_TYPES)}, got {self.kl_anneal_type!r}")
        _check(self.kl_anneal_cycle >= 1, "kl_anneal_cycle", f"must be >= 1, got {self.kl_anneal_cycle}")
        _check(0.0 < self.kl_anneal_ratio <= 1.0, "kl_anneal_ratio", f"must be in (0, 1], got {self.kl_anneal_ratio}")
        _check(0.0 < self.fast_partial <= 1.0, "fast_partial", f"must be in (0, 1], got {self.fast_partial}")
        _check(self.fast_train_epoch >= 0, "fast_train_epoch", f"must be >= 0, got {self.fast_train_epoch}")
        _check(self.val_every >= 1, "val_every", f"must be >= 1, got {self.val_every}")
        _check(self.threads is None or self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        _check(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch",
               f"must be >= 1, got {self.max_steps_per_epoch}")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(DEVICE_RE.fullmatch(self.device) is not None, "device",
               f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        _check(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class Config:
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain TOML/JSON-able dict ({table: {key: value}}); None values are left out."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            table = {}
            for k, v in dataclasses.asdict(getattr(self, name)).items():
                if v is None:
                    continue
                table[k] = list(v) if isinstance(v, tuple) else v
            out[name] = table
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> "Config":
        """Build from {table: {key: value}}, rejecting unknown tables/keys and bad values."""
        try:
            check_tables(d, {name: field_types(klass) for name, klass in SECTIONS.items()})
            return cls(**{name: build_table(name, klass, d.get(name, {})) for name, klass in SECTIONS.items()})
        except ConfigError as e:
            raise ConfigError(e.key, e.reason, source) from None

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """A copy with some fields changed: `cfg.replace(train={"epochs": 3})`."""
        d = self.to_dict()
        for name, changes in sections.items():
            d.setdefault(name, {}).update(changes)
        return Config.from_dict(d)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def did_you_mean(key: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(table: Mapping[str, Any], names: typing.Collection[str], what: str = "key") -> None:
    """Refuse a key that is not one of `names`, with the closest as a hint (and, for tables, the choices)."""
    for key in table:
        if key not in names:
            expected = f"; expected one of {', '.join(names)}" if what == "table" else ""
            raise ConfigError(key, f"unknown {what}{did_you_mean(key, names)}{expected}")


def check_tables(raw: Mapping[str, Any], tables: Mapping[str, typing.Collection[str]]) -> None:
    """A file's top level: only the `tables` (name -> its keys), each a table. A key written above
    the first table header lands at the top level: the error says which table it belongs in."""
    for key in raw:
        home = next((name for name, keys in tables.items() if key in keys), None)
        if key not in tables and home is not None:
            raise ConfigError(key, f"belongs in the [{home}] table (write it below the [{home}] header)")
    check_keys(raw, list(tables), "table")
    for name in tables:
        if name in raw and not isinstance(raw[name], Mapping):
            raise ConfigError(name, f"must be a table ([{name}]), got {type(raw[name]).__name__}")


@functools.cache
def field_types(klass: type) -> types.MappingProxyType[str, Any]:
    """Resolved type hints of a config dataclass's fields (read-only; resolved once per class, as
    resolving them is most of the cost of building a config)."""
    return types.MappingProxyType(typing.get_type_hints(klass))


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        # a table or a list is judged by the one type of its shape: its own error, not "wrong type"
        shaped = [a for a in args if (dataclasses.is_dataclass(a) and isinstance(value, Mapping))
                  or (typing.get_origin(a) is tuple and isinstance(value, (list, tuple)))]
        if len(shaped) == 1:
            return coerce(key, value, shaped[0])
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e.reason)
        if len(errors) == 1:
            raise ConfigError(key, errors[0])
        kinds = [_kind(a) for a in args if a is not type(None)]
        raise ConfigError(key, f"must be {' or '.join(kinds)}, got {type(value).__name__} {value!r}" if all(kinds)
                          else f"wrong type {type(value).__name__} for {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = did_you_mean(value, [c for c in choices if isinstance(c, str)]) if isinstance(value, str) else ""
            raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}{close}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(coerce(key, v, item) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):  # an inline table of its own fields, e.g. seeds = { min = 2, max = 6 }
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, got {type(value).__name__} {value!r}")
        try:
            return build_section(hint, value)
        except ConfigError as e:
            raise ConfigError(f"{key}.{e.key}", e.reason) from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(key, f"must be an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _kind(hint: Any) -> str:
    """What a value of this type is called in an error ("" when it has no short name)."""
    if typing.get_origin(hint) is tuple:
        return "a list"
    if dataclasses.is_dataclass(hint):
        return "a table { " + ", ".join(f"{f.name} = ..." for f in dataclasses.fields(hint)) + " }"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, "")


def build_section(klass: type, table: Mapping[str, Any]) -> Any:
    """One config dataclass from a dict: unknown keys, missing required ones, wrong types and bad
    values (the class's __post_init__) raise ConfigError naming the key."""
    hints = field_types(klass)
    check_keys(table, [f.name for f in dataclasses.fields(klass)])
    for key in _required(klass):
        if key not in table:
            raise ConfigError(key, "missing (required)")
    return klass(**{key: coerce(key, value, hints[key]) for key, value in table.items()})


def build_table(name: str, klass: type, table: Mapping[str, Any]) -> Any:
    """build_section for the file's table `name`: an error names the dotted key, `name.key`."""
    try:
        return build_section(klass, table)
    except ConfigError as e:
        raise ConfigError(f"{name}.{e.key}", e.reason) from None


def build_section_leniently(klass: type, table: Mapping[str, Any], fallback: Mapping[str, Any]) -> Any:
    """build_section for a file written by another version (or whose paths have gone): a key it does
    not know or a value it refuses is left out, with a log line, and its default applies (`fallback`'s
    for a required key). Raises ConfigError only when the defaults themselves do not build."""
    hints = field_types(klass)
    kwargs = {**fallback}
    given = set()
    for key, value in table.items():
        if key not in hints:
            log.info("%s: unknown key (left out)", key)
            continue
        try:
            kwargs[key] = coerce(key, value, hints[key])
            given.add(key)
        except ConfigError as e:
            log.info("%s: %s (left out)", e.key, e.reason)
    while True:
        try:
            return klass(**kwargs)
        except ConfigError as e:
            if e.key not in given:
                raise
            log.info("%s: %s (left out)", e.key, e.reason)
            given.discard(e.key)
            if e.key in fallback:
                kwargs[e.key] = fallback[e.key]
            else:
                del kwargs[e.key]


def _required(klass: type) -> list[str]:
    return [f.name for f in dataclasses.fields(klass)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def smoke_config(cfg: Config) -> Config:
    """A seconds-long variant of cfg (every entry point's `--smoke-test`): tiny data, 2 epochs of a
    few steps each, the same model and schedules."""
    return cfg.replace(
        data={"synthetic_train_videos": 2, "synthetic_train_frames": 2 * cfg.data.video_len,
              "val_video_len": min(cfg.data.val_video_len, 24)},
        train={"epochs": 2, "max_steps_per_epoch": 3},
    )


def load_config(path: str | Path) -> Config:
    """Read a single-run TOML file (and its `base` files) into a Config; a ConfigError names the
    file that wrote the bad key, the key and the reason."""
    file = read_config_file(path)
    try:
        return Config.from_dict(file.tables)
    except ConfigError as e:
        raise ConfigError(e.key, e.reason, file.source_of(e.key)) from None


# --- config files: TOML, with shared values by reference ------------------------------------------
# A file may start with `base = "other.toml"` (relative to the file) and list only what it changes,
# as nanoGPT's config files do: its tables merge into the base's key by key, its own keys winning; a
# value that is itself a table (a [space.<name>] entry) is replaced whole. Bases may have bases.
BASE_KEY = "base"


@dataclass(frozen=True)
class ConfigFile:
    """A TOML file with its `base` chain resolved: the merged tables and which file wrote each value."""

    path: Path  # the file, as given
    text: str  # its text as written
    tables: dict[str, Any]  # the merged tables, `base` resolved away
    bases: tuple[Path, ...] = ()  # its base files, nearest first
    origins: Mapping[str, Path] = field(default_factory=dict)  # "table.key" -> the base file that set it

    def source_of(self, key: str) -> Path:
        """The file that wrote a dotted key (`train.tfr`, `space.tfr.low`): one of the bases, or this file."""
        table, _, rest = key.partition(".")
        return self.origins.get(f"{table}.{rest.partition('.')[0]}", self.origins.get(table, self.path))


def read_toml(path: Path, text: str | None = None) -> tuple[str, dict[str, Any]]:
    """A TOML file's text (read unless given) and tables; ConfigError, key "-", when it cannot be."""
    try:
        text = path.read_text(encoding="utf-8") if text is None else text
    except UnicodeDecodeError:
        raise ConfigError("-", "not a UTF-8 text file", path) from None
    except OSError as e:
        raise ConfigError("-", f"cannot read file: {e.strerror or e}", path) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("-", f"not valid TOML: {e}", path) from None


def read_config_file(path: str | Path, text: str | None = None, rebase: typing.Collection[str] = (),
                     _chain: tuple[Path, ...] = ()) -> ConfigFile:
    """Read a TOML file and the files its `base` names (see above). `rebase`: dotted keys whose
    relative paths are relative to the file that writes them (a study's data.root); a base's are
    made absolute. A missing base or a cycle is a ConfigError on key `base` of the file that names it."""
    path = Path(path)
    text, raw = read_toml(path, text)
    if BASE_KEY not in raw:
        return ConfigFile(path, text, raw)
    try:
        name = coerce(BASE_KEY, raw.pop(BASE_KEY), str)
    except ConfigError as e:
        raise ConfigError(e.key, e.reason, path) from None
    target = path.parent / Path(name).expanduser()
    chain = (*_chain, path.resolve())
    if target.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, target.resolve()))
        raise ConfigError(BASE_KEY, f"{name!r} makes a cycle of bases: {cycle}", path)
    if not target.is_file():
        raise ConfigError(BASE_KEY, f"{name!r}: no such file ({target}); a base is relative to the file naming it", path)
    base = read_config_file(target, rebase=rebase, _chain=chain)
    tables, origins = _merged(base, raw, rebase)
    return ConfigFile(path, text, tables, (target, *base.bases), origins)


def _merged(base: ConfigFile, raw: Mapping[str, Any], rebase: typing.Collection[str]) -> tuple[dict[str, Any], dict[str, Path]]:
    tables = {k: dict(v) if isinstance(v, dict) else v for k, v in base.tables.items()}
    origins = dict(base.origins)
    for k, v in base.tables.items():
        for key in v if isinstance(v, dict) else [None]:
            origins.setdefault(k if key is None else f"{k}.{key}", base.path)
    for dotted in rebase:
        table, _, key = dotted.partition(".")
        value = tables[table].get(key) if isinstance(tables.get(table), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            tables[table][key] = str((base.path.parent / value).resolve())
    for k, v in raw.items():
        if isinstance(v, dict) and isinstance(tables.get(k), dict):
            tables[k].update(v)
            for key in v:
                origins.pop(f"{k}.{key}", None)
        else:
            tables[k] = v
            origins = {o: f for o, f in origins.items() if o != k and not o.startswith(f"{k}.")}
    return tables, origins
