"""What a study's file says, read leniently from its results folder (a results dir outlives its
dataset path): `read_study(study_dir) -> StudyInfo`. The tables are study.tables', the trial folders
study.results', THE ranking's rule study.ranking's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from cvae.config import SECTIONS, ConfigError, build_section_leniently, read_toml
from study.params import Param, read_space
from study.place import STUDY_COPY
from study.compare import ALPHA, MARGIN_DB
from study.spec import SearchTable, SeedRace, StudyError, StudySpec, StudyTable, load_spec, seeds_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyInfo:
    """What the study file says, read leniently (a results dir outlives its dataset path)."""

    name: str
    metric: str  # the optimised metric, e.g. "val/psnr"
    mode: Literal["max", "min"]
    objective: Literal["best", "last"]  # a trial's score: the metric at its best epoch, or its last
    seeds: tuple[int, ...]
    params: tuple[Param, ...]  # searched [space] parameters (fixed-value ones left out), dependency order
    text: str  # the study file as written ("" if missing)
    description: str | None
    spec: StudySpec | None  # None when load_spec failed (e.g. the dataset path is gone)
    fixed: dict[str, dict[str, Any]]  # the [data]/[model]/[train] tables
    alpha: float = ALPHA  # [study] alpha: the level of the verdicts' tests
    margin: float = MARGIN_DB  # [study] margin_db: "about equal" within +-this
    paired: bool = False  # [study] paired
    race: SeedRace | None = None  # [study] seeds = { min, max }
    confirm_top: int = 0  # [search] confirm_top: with a race, how many configurations race (0: all, a grid)

    @property
    def race_rule(self) -> Any:
        """The seed race's rule (study.race.RaceRule), None when the seeds were a fixed list."""
        from study.race import RaceRule

        return RaceRule.of(self.race, self.mode, self.alpha, self.margin, self.paired)

    @property
    def race_top(self) -> int | None:
        """How many configurations race: all (None: a grid), or confirm_top after a search."""
        return self.confirm_top or None

    @property
    def searched(self) -> tuple[str, ...]:
        """Names of the searched parameters (seed excluded)."""
        return tuple(p.name for p in self.params)

    @property
    def scored_by(self) -> str:
        """What ranks the settings, in words: e.g. "val/psnr (max) at each trial's best epoch"."""
        return f"{self.metric} ({self.mode}) at each trial's {self.objective} epoch"

    @classmethod
    def of(cls, spec: StudySpec) -> StudyInfo:
        """What a loaded study file says."""
        return cls.of_tables(spec, spec.seeds, spec.space, spec.raw_text, spec, spec.fixed, spec.confirm_top)

    @classmethod
    def of_tables(cls, study: StudyTable, seeds: tuple[int, ...], space: Sequence[Param], text: str,
                  spec: StudySpec | None, fixed: Mapping[str, Mapping[str, Any]], confirm_top: int = 0) -> StudyInfo:
        """What a study file's tables say: [study], the seeds, [space], the fixed cvae tables and
        [search] confirm_top."""
        race = spec.race if spec is not None else (study.seeds if isinstance(study.seeds, SeedRace) else None)
        return cls(study.name, study.metric, study.mode, study.objective, seeds, tuple(p for p in space if p.kind != "fixed"),
                   text, study.description, spec, {s: dict(t) for s, t in fixed.items()}, study.alpha, study.margin_db,
                   study.paired, race, confirm_top if race is not None else 0)


# -- the study file --------------------------------------------------------------------------------


def read_study(study_dir: str | Path) -> StudyInfo:
    """The study file of a results dir: via load_spec, else its tables read leniently (the same
    dataclasses, leaving out what this version does not know or refuses), else the dir name."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_COPY
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text:
        try:
            return StudyInfo.of(load_spec(path))
        except StudyError as e:
            log.info("%s: not a loadable study (%s); reading its tables leniently", path, e)
    try:
        raw = read_toml(path, text)[1] if text else {}
    except ConfigError as e:
        log.warning("%s; ignoring it", e)
        raw = {}
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    # what StudyInfo reads needs no num_samples: 1 keeps a file without one readable
    study = build_section_leniently(StudyTable, tables.get("study", {}), {"name": study_dir.name, "num_samples": 1})
    search = build_section_leniently(SearchTable, tables.get("search", {}), {})
    fixed = {s: dict(tables[s]) for s in SECTIONS if s in tables}
    return StudyInfo.of_tables(study, seeds_of(study, fixed.get("train", {})), read_space(tables.get("space")), text,
                               None, fixed, search.confirm_top)


__all__ = ["StudyInfo", "read_study"]
