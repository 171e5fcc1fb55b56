"""A study's `[space]` table: one `[space.<name>]` entry per searched cvae config field, as a Param.

An entry is a range (`low`, `high`, maybe `log`, `step`, `type`), a categorical (`choices`) or a
fixed value (`value`), and may be conditional (`when = { other = value(s) }`). `parse_space` checks
every entry against the cvae config dataclasses (the values they accept, the `when` it names) and
returns the space in dependency order; `grid_points` enumerates a finite one. Errors are
ConfigErrors on the dotted key (`space.tfr.low`); study.spec adds the file.
"""
from __future__ import annotations

import logging
import math
import types
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union, get_args, get_origin

from cvae.config import SECTIONS, Config, ConfigError, build_section, check_keys, coerce, did_you_mean, field_types

log = logging.getLogger(__name__)

PARAM_KEYS: tuple[str, ...] = ("low", "high", "log", "step", "type", "choices", "value", "when")
MAX_GRID = 10_000  # grids larger than this are certainly a mistake on a laptop
_MAX_COMBOS = 4_096  # beyond this, [space] combinations are checked one parameter at a time
# field name -> the cvae config section it belongs to (names are unique across sections)
FIELD_SECTION: dict[str, str] = {name: section for section, klass in SECTIONS.items()
                                 for name in field_types(klass)}
# cvae fields that cannot be searched, and why
_UNSEARCHABLE: dict[str, str] = {
    "root": "a dataset path cannot be searched; fix it in [data]",
    "cache_dir": "a cache path cannot be searched; fix it in [data]",
    "seed": "list seeds in [study] seeds = [...] to run every configuration once per seed",
}


@dataclass(frozen=True)
class Param:
    """One `[space.<name>]` entry: a float/int range, a categorical or a fixed value, maybe conditional."""

    name: str  # the cvae config field
    kind: Literal["float", "int", "categorical", "fixed"]
    low: float | int | None = None  # range bounds, both inclusive
    high: float | int | None = None
    log: bool = False  # sample the range on a log scale
    step: float | int | None = None  # range discretisation (None: continuous float / step 1 int)
    choices: tuple[Any, ...] = ()  # categorical values
    value: Any = None  # fixed value
    when: dict[str, tuple[Any, ...]] | None = None  # other [space] param -> values for which this one is active
    section: Literal["train", "model", "data"] = "train"  # the config table the field lives in

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether every `when` condition holds, given the values decided so far (inactive params absent)."""
        if not self.when:
            return True
        return all(dep in values and any(_same(values[dep], a) for a in allowed)
                   for dep, allowed in self.when.items())

    def grid_values(self) -> tuple[Any, ...] | None:
        """The finite values this parameter can take, or None for a continuous float range."""
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        lo, hi, st = Decimal(str(self.low)), Decimal(str(self.high)), Decimal(str(self.step))
        n = int((hi - lo) / st)
        return tuple(float(lo + i * st) for i in range(n + 1))

    def can_take(self, v: Any) -> bool:
        """Whether `v` is one of the values this parameter can take (used to check `when` values)."""
        if self.kind == "fixed":
            return _same(self.value, v)
        if self.kind == "categorical":
            return any(_same(c, v) for c in self.choices)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if not self.low <= v <= self.high:
            return False
        if self.kind == "int":
            return float(v).is_integer() and (int(v) - int(self.low)) % int(self.step or 1) == 0
        return self.step is None or _on_step(self.low, v, self.step)

    def values_hint(self, v: Any) -> str:
        """What this parameter takes, for an error about a value `v` it never takes."""
        if self.kind == "categorical":
            close = did_you_mean(v, [c for c in self.choices if isinstance(c, str)]) if isinstance(v, str) else ""
            return close or f"; its choices are {', '.join(map(repr, self.choices))}"
        if self.kind == "fixed":
            return f"; it is fixed to {self.value!r}"
        return f"; it ranges over [{self.low}, {self.high}]" + (f" in steps of {self.step}" if self.step else "")


# --- parsing -------------------------------------------------------------------------------------


def parse_space(table: Mapping[str, Any], fixed: Mapping[str, Mapping[str, Any]]) -> tuple[Param, ...]:
    """The [space] table as Params in dependency order, each value checked against the cvae config
    with the `fixed` [data]/[model]/[train] values around it; every `when` checked against the others."""
    params = {name: parse_param(name, entry, fixed) for name, entry in table.items()}
    for p in params.values():
        _check_when(p, params)
    return tuple(_ordered(params))


def read_space(table: Any) -> tuple[Param, ...]:
    """The [space] table of a study file written by another version (for labels and distributions):
    the entries parse_param reads without the config's value checks; the others are left out."""
    out = []
    for name, entry in (table.items() if isinstance(table, Mapping) else ()):
        try:
            out.append(parse_param(name, entry, None))
        except ConfigError as e:
            log.info("space.%s: %s (left out)", name, e.reason)
    return tuple(out)


def parse_param(name: str, entry: Any, fixed: Mapping[str, Mapping[str, Any]] | None) -> Param:
    """One [space.<name>] entry. `fixed` None: its values are not checked against the cvae config."""
    key = f"space.{name}"
    if name in _UNSEARCHABLE:
        raise ConfigError(key, _UNSEARCHABLE[name])
    section = FIELD_SECTION.get(name)
    if section is None:
        raise ConfigError(key, f"unknown parameter{did_you_mean(name, FIELD_SECTION)}; [space] entries are "
                               "fields of [train], [model] or [data]")
    if not isinstance(entry, dict):
        raise ConfigError(key, "must be a table: { low = ..., high = ... }, { choices = [...] } or { value = ... }, "
                               f"got {type(entry).__name__} {entry!r}")
    try:
        check_keys(entry, PARAM_KEYS)
    except ConfigError as e:
        raise ConfigError(f"{key}.{e.key}", e.reason) from None
    forms = [f for f, present in (("low/high", "low" in entry or "high" in entry),
                                  ("choices", "choices" in entry), ("value", "value" in entry)) if present]
    if len(forms) != 1:
        raise ConfigError(key, "give exactly one of low/high (a range), choices or value"
                               + (f", got {' and '.join(forms)}" if forms else ""))
    if forms[0] != "low/high":
        for k in ("log", "step", "type"):
            if k in entry:
                raise ConfigError(f"{key}.{k}", "only applies to a range (low/high)")
    when = _when(key, entry.get("when"))
    context = None if fixed is None else fixed[section]
    if context is not None and name in context and when is None:
        raise ConfigError(key, f"searched here and also fixed in [{section}] ({section}.{name}); remove one (a "
                               f"[{section}] value is only allowed as the fallback of a conditional, `when`, parameter)")
    if forms[0] == "low/high":
        return _range(key, name, section, entry, context, when)
    if forms[0] == "choices":
        return _choices(key, name, section, entry["choices"], context, when)
    value = entry["value"]
    if isinstance(value, dict):
        raise ConfigError(f"{key}.value", f"must be a plain value, got a table {value!r}")
    _check_value(f"{key}.value", section, name, value, context)
    return Param(name, "fixed", value=value, when=when, section=section)


def _choices(key: str, name: str, section: str, choices: Any, context: Mapping[str, Any] | None,
             when: dict[str, tuple[Any, ...]] | None) -> Param:
    key = f"{key}.choices"
    if not isinstance(choices, list):
        raise ConfigError(key, f"must be a list, got {type(choices).__name__} {choices!r}")
    if not choices:
        raise ConfigError(key, "must not be empty")
    for i, c in enumerate(choices):
        if isinstance(c, (list, dict)):
            raise ConfigError(key, f"choices must be strings, numbers or booleans, got {c!r} "
                                   "(a list can only be fixed: { value = [...] })")
        if any(_same(c, d) for d in choices[:i]):
            raise ConfigError(key, f"repeats {c!r}")
        _check_value(key, section, name, c, context)
    return Param(name, "categorical", choices=tuple(choices), when=when, section=section)


def _range(key: str, name: str, section: str, entry: Mapping[str, Any], context: Mapping[str, Any] | None,
           when: dict[str, tuple[Any, ...]] | None) -> Param:
    for k in ("low", "high"):
        if k not in entry:
            raise ConfigError(key, f"a range needs both low and high; {k} is missing")
        v = entry[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{key}.{k}", f"must be a finite number, got {type(v).__name__} {v!r}")
    low, high = entry["low"], entry["high"]
    log_ = coerce(f"{key}.log", entry.get("log", False), bool)
    step = entry.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
            raise ConfigError(f"{key}.step", f"must be a number > 0, got {step!r}")
        if log_:
            raise ConfigError(f"{key}.step", "cannot be combined with log = true")
    all_ints = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    kind = entry.get("type", "int" if all_ints else "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{key}.type", f"must be 'float' or 'int', got {kind!r}")
    numeric = plain_type(field_types(SECTIONS[section])[name])
    if numeric not in (int, float):
        raise ConfigError(key, f"{name} is not a number; search it with choices = [...]")
    if numeric is int and kind == "float":
        raise ConfigError(key, f"{name} is an integer; give integer low/high/step (or type = \"int\")")
    if kind == "int":
        for k, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and not float(v).is_integer():
                raise ConfigError(f"{key}.{k}", f"must be an integer for an int range, got {v!r}")
    num = int if kind == "int" else float
    low, high = num(low), num(high)
    step = num(step) if step is not None else None
    if low >= high:
        raise ConfigError(key, f"low must be < high, got low = {low}, high = {high}")
    if log_ and low <= 0:
        raise ConfigError(f"{key}.low", f"must be > 0 for a log range, got {low}")
    if step is not None and not _on_step(low, high, step):
        raise ConfigError(f"{key}.step", f"high - low must be a multiple of step, got low = {low}, high = {high}, "
                                         f"step = {step}")
    _check_value(f"{key}.low", section, name, low, context)
    _check_value(f"{key}.high", section, name, high, context)
    return Param(name, kind, low=low, high=high, log=log_, step=step, when=when, section=section)


def _check_value(key: str, section: str, name: str, value: Any, context: Mapping[str, Any] | None) -> None:
    # The config dataclasses own the range rules; build one with this value to reuse them.
    if context is None:
        return
    try:
        build_section(SECTIONS[section], {**context, name: value})
    except ConfigError as e:
        raise ConfigError(key, e.reason if e.key == name else f"{e.key}: {e.reason}") from None


def _when(key: str, when: Any) -> dict[str, tuple[Any, ...]] | None:
    if when is None:
        return None
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{key}.when", f"must be a table like {{ kl_anneal_type = \"Cyclical\" }}, got {when!r}")
    out: dict[str, tuple[Any, ...]] = {}
    for dep, allowed in when.items():
        values = allowed if isinstance(allowed, list) else [allowed]
        if not values:
            raise ConfigError(f"{key}.when.{dep}", "must name at least one value")
        for v in values:
            if isinstance(v, (list, dict)):
                raise ConfigError(f"{key}.when.{dep}", f"values must be strings, numbers or booleans, got {v!r}")
        out[dep] = tuple(values)
    return out


def _check_when(p: Param, params: Mapping[str, Param]) -> None:
    for dep, allowed in (p.when or {}).items():
        key = f"space.{p.name}.when.{dep}"
        if dep == p.name:
            raise ConfigError(key, "a parameter cannot depend on itself")
        q = params.get(dep)
        if q is None:
            if dep in FIELD_SECTION:
                raise ConfigError(key, f"{dep!r} is not a [space] parameter; add [space.{dep}] or drop the condition")
            raise ConfigError(key, f"unknown [space] parameter {dep!r}{did_you_mean(dep, params)}")
        for v in allowed:
            if not q.can_take(v):
                raise ConfigError(key, f"{dep} never takes the value {v!r}{q.values_hint(v)}")


def _ordered(params: Mapping[str, Param]) -> list[Param]:
    # Topological order, otherwise file order: a `when` can only be evaluated after its parameter.
    done: list[Param] = []
    placed: set[str] = set()
    pending = list(params.values())
    while pending:
        ready = [p for p in pending if all(d in placed for d in (p.when or {}))]
        if not ready:
            raise ConfigError(f"space.{pending[0].name}.when",
                              "circular conditions between " + ", ".join(q.name for q in pending))
        done.append(ready[0])
        placed.add(ready[0].name)
        pending.remove(ready[0])
    return done


# --- whole configurations ------------------------------------------------------------------------


def grid_points(space: Sequence[Param]) -> list[dict[str, Any]] | None:
    """Every distinct configuration of a finite space (only active params, fixed ones included).

    None when a range is continuous or there are more than MAX_GRID points. A conditional
    parameter multiplies only the branch where its condition holds, so no point repeats.
    """
    values = {p.name: p.grid_values() for p in space}
    if any(v is None for v in values.values()):
        return None
    if math.prod(len(v) for v in values.values()) > MAX_GRID and _count_points(space, values) > MAX_GRID:
        return None
    return _enumerate_points(space, values)


def check_combinations(space: Sequence[Param], config_for: Callable[[Mapping[str, Any]], Config]) -> None:
    """Cross-field rules (e.g. F_dim + L_dim + N_dim divisible by 4) need whole configs: build every
    combination of choices and range ends, or each parameter alone if there are too many."""
    candidates = {p.name: _candidates(p) for p in space}
    if _count_points(space, candidates, cap=_MAX_COMBOS) <= _MAX_COMBOS:
        points = _enumerate_points(space, candidates)
    else:
        points = [{p.name: v} for p in space for v in candidates[p.name]]
    params = {p.name: p for p in space}
    for point in points:
        try:
            config_for(point)
        except ConfigError as e:
            field = e.key.rsplit(".", 1)[-1]
            key = f"space.{field}" if field in params else e.key
            shown = ", ".join(f"{k} = {v!r}" for k, v in point.items() if params[k].kind != "fixed")
            raise ConfigError(key, f"{e.reason} (when sampled with {shown})" if shown else e.reason) from None


def active_values(point: Mapping[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """The values of `point` whose parameter is active given the others (a `when` that fails drops it)."""
    out: dict[str, Any] = {}
    for p in space:  # dependency order
        if p.name in point and p.active(out):
            out[p.name] = point[p.name]
    return out


def plain_type(hint: Any) -> Any:
    """A config field's type hint without its `| None` (None for a union of several types)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return plain_type(args[0]) if len(args) == 1 else None
    return hint


def _same(a: Any, b: Any) -> bool:
    # true == 1 in Python; a TOML boolean and a number are different values here.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def _on_step(low: float, v: float, step: float) -> bool:
    # Decimal on the shortest repr, so 0.0 .. 1.0 in steps of 0.1 is exact.
    try:
        return (Decimal(str(v)) - Decimal(str(low))) % Decimal(str(step)) == 0
    except InvalidOperation:  # pragma: no cover
        return False


def _candidates(p: Param) -> tuple[Any, ...]:
    values = p.grid_values()
    if values is not None and len(values) <= 8:
        return values
    return (p.low, p.high)


def _count_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]], cap: int = MAX_GRID) -> int:
    # Stops early past `cap`, so a huge space costs no more than cap points.
    n = 0
    for _ in _iter_points(params, values, 0, {}):
        n += 1
        if n > cap:
            break
    return n


def _enumerate_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(p) for p in _iter_points(params, values, 0, {})]


def _iter_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]], i: int,
                 point: dict[str, Any]) -> Iterable[dict[str, Any]]:
    # Depth-first over params in dependency order; an inactive param adds no branch.
    if i == len(params):
        yield point
        return
    p = params[i]
    if not p.active(point):
        yield from _iter_points(params, values, i + 1, point)
        return
    for v in values[p.name]:
        yield from _iter_points(params, values, i + 1, {**point, p.name: v})


__all__ = ["FIELD_SECTION", "MAX_GRID", "PARAM_KEYS", "Param", "active_values", "check_combinations", "grid_points",
           "parse_param", "parse_space", "plain_type", "read_space"]
