"""Load and validate an experiment: everything a run depends on, as frozen dataclasses.

An experiment is a TOML file under `experiments/`. Relative paths inside it resolve against the
folder that holds the file, so an experiment can live anywhere. Loading is strict: an unknown
key, a wrong type, a threshold outside 0..1 or a missing file raises `ExperimentError` naming
the file and the dotted key, because a typo that silently falls back to a default would change
the experiment without anyone noticing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.tables import (
    DECISION_RULES,
    DEFAULT_NO_TOOL_SHARE,
    EXPERIMENTS_DIR,
    OVERALL,
    PROMPTS_DIR,
    ROOT,
    SHARED,
    Baseline,
    CallMode,
    CallSyntax,
    Data,
    Decision,
    DecisionRule,
    Eval,
    ExperimentError,
    Fuse,
    Integrity,
    Launch,
    Models,
    Quantize,
    Regression,
    Resources,
    ScoreName,
    Scores,
    Thresholds,
    TinyModel,
    Train,
    check_launch,
    hostfile_ranks,
)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    source: Path
    models: Models
    tokens: dict[str, int]
    """Pinned special-token ids, e.g. `<tool_call>` -> 151657."""
    data: Data
    train: Train
    fuse: Fuse
    quantize: Quantize
    eval: Eval
    thresholds: Thresholds
    baseline: Baseline
    resources: Resources
    regression: Regression = dataclasses.field(default_factory=Regression)
    decision: Decision = dataclasses.field(default_factory=Decision)
    integrity: Integrity = dataclasses.field(default_factory=Integrity)
    docs: Path | None = None
    tiny: TinyModel | None = None

    def fingerprint(self) -> str:
        """A short hash of every setting, for run keys and reports."""
        plain = _plain(self)
        for *tables, key in _ADDED_LATER:
            owner, holder = self, plain
            for table in tables:
                owner, holder = getattr(owner, table), holder[table]
            if getattr(owner, key) == _default(type(owner), key):
                del holder[key]
        text = json.dumps(plain, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_ADDED_LATER = (
    ("train", "launch"),
    ("train", "lr_schedule"),
    ("train", "warmup"),
    ("decision",),
    ("data", "no_tool_share"),
    ("integrity", "as_built_prompts"),
    ("thresholds", "sets"),
)
"""Tables and keys added after runs were recorded (as paths from the experiment): left at
their default, they stay out of the fingerprint, so eval runs and study rows recorded under
the fingerprint they had before keep their keys."""


def _default(cls: Any, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def experiment_path(name_or_path: str | Path) -> Path:
    """`tiny` -> experiments/tiny.toml; anything with a suffix or a slash is a path."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return Path(text).expanduser().resolve()
    return EXPERIMENTS_DIR / f"{text}.toml"


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def available_prompt_sets() -> list[str]:
    """The prompt sets that ship with routegate: fixtures/prompts/<name>.toml."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.toml"))


def load_experiment(name_or_path: str | Path) -> Experiment:
    path = experiment_path(name_or_path)
    if not path.is_file():
        raise ExperimentError(
            f"experiment file {path} does not exist "
            f"(known experiments: {', '.join(available_experiments())})"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{path}: not valid TOML: {err}") from err
    raw.setdefault("name", path.stem)
    experiment = _build(Experiment, raw, path, "", {"source": path})
    check_launch(experiment.train, f"{path}: [train.launch]")
    _check_decision(experiment.decision, path)
    for name in experiment.thresholds.sets:
        if not (PROMPTS_DIR / f"{name}.toml").is_file():
            known = ", ".join(available_prompt_sets())
            raise ExperimentError(
                f"{path}: thresholds.sets.{name}: no prompt set fixtures/prompts/{name}.toml "
                f"(known sets: {known})"
            )
    train = experiment.train
    if not 0 <= train.warmup < train.iters or (train.warmup and train.lr_schedule == "constant"):
        raise ExperimentError(
            f"{path}: train.warmup = {train.warmup}: give 0 <= warmup < iters ({train.iters}), "
            'and only with an lr_schedule (lr_schedule = "cosine")'
        )
    if experiment.integrity.as_built_prompts < 0:
        raise ExperimentError(
            f"{path}: integrity.as_built_prompts = {experiment.integrity.as_built_prompts} "
            "is negative (0 asks every prompt)"
        )
    if not 0.0 < experiment.data.no_tool_share < 1.0:
        raise ExperimentError(
            f"{path}: data.no_tool_share = {experiment.data.no_tool_share} is outside (0, 1)"
        )
    return experiment


def _check_decision(decision: Decision, source: Path) -> None:
    """Margins in (0, 1) on categories the catalog has (or overall)."""
    known = (*load_catalog().categories, OVERALL)
    if decision.margin is not None and not 0.0 < decision.margin < 1.0:
        raise ExperimentError(f"{source}: decision.margin = {decision.margin} is outside (0, 1)")
    for name, margin in decision.margins.items():
        if name not in known:
            raise ExperimentError(
                f"{source}: unknown key 'decision.margins.{name}' (allowed: {', '.join(known)})"
            )
        if not 0.0 < margin < 1.0:
            raise ExperimentError(f"{source}: decision.margins.{name} = {margin} is outside (0, 1)")


def with_overrides(experiment: Experiment, **overrides: Any) -> Experiment:
    """Apply command-line overrides: base_model, reference_model, data, prompts, baseline_run,
    require_decidable, launch_processes, launch_hostfile, retrain, decide (None leaves a
    field)."""
    models = experiment.models
    if overrides.get("base_model"):
        models = dataclasses.replace(models, base=str(overrides["base_model"]), base_revision="")
    if overrides.get("reference_model"):
        models = dataclasses.replace(
            models, reference=str(overrides["reference_model"]), reference_revision=""
        )
    data = experiment.data
    if overrides.get("data"):
        data = dataclasses.replace(data, path=str(Path(str(overrides["data"])).resolve()))
    ev = experiment.eval
    thresholds = experiment.thresholds
    if overrides.get("prompts"):
        ev = dataclasses.replace(ev, prompts=prompts_path(str(overrides["prompts"])))
        other = thresholds.sets.get(ev.prompts.stem) if ev.prompts.parent == PROMPTS_DIR else None
        if other is not None:
            thresholds = dataclasses.replace(thresholds, values=dict(other.values))
    if overrides.get("baseline_run"):
        ev = dataclasses.replace(
            ev, baseline_run=str(Path(str(overrides["baseline_run"])).resolve())
        )
    if overrides.get("require_decidable"):
        ev = dataclasses.replace(ev, require_decidable=True)
    train = _launch_override(
        experiment.train, overrides.get("launch_processes"), overrides.get("launch_hostfile")
    )
    if overrides.get("retrain"):
        train = dataclasses.replace(train, adapter=None)
    decision = experiment.decision
    if overrides.get("decide"):
        rule = str(overrides["decide"])
        if rule not in DECISION_RULES:
            raise ExperimentError(f"--decide {rule}: one of {', '.join(DECISION_RULES)}")
        decision = dataclasses.replace(decision, rule=rule)  # type: ignore[arg-type]
    return dataclasses.replace(
        experiment,
        models=models,
        data=data,
        eval=ev,
        train=train,
        decision=decision,
        thresholds=thresholds,
    )


def _launch_override(train: Train, processes: int | None, hostfile: Any) -> Train:
    """--launch-processes N / --launch-hostfile PATH replace the whole [train.launch] table
    (`--launch-processes 1`: one process, no launch, whatever the file says)."""
    if processes is None and not hostfile:
        return train
    if processes is not None and hostfile:
        raise ExperimentError("give --launch-processes or --launch-hostfile, not both")
    if hostfile:
        where = f"--launch-hostfile {hostfile}"
        launch = Launch(hostfile=Path(str(hostfile)).expanduser().resolve())
    else:
        where = f"--launch-processes {processes}"
        launch = Launch(processes=int(str(processes)))
    train = dataclasses.replace(train, launch=launch)
    check_launch(train, where)
    return train


def prompts_path(name_or_path: str) -> Path:
    """`--prompts NAME` -> fixtures/prompts/NAME.toml; anything with a suffix or a slash is a
    path. A file that does not exist is an error naming it and the known sets."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        path = Path(text).expanduser().resolve()
    else:
        path = PROMPTS_DIR / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(available_prompt_sets())
        raise ExperimentError(f"--prompts {text}: {path} does not exist (known sets: {known})")
    return path


def from_options(option: Callable[[str], Any]) -> Experiment:
    """The experiment a CLI or pytest run selects: `experiment` plus single-field overrides.

    A `--data` folder that does not exist is bad input named here, before any step runs (the
    preflight would count it as failed loads, a FAIL rather than a mistyped option).
    """
    data = option("data")
    if data and not Path(str(data)).is_dir():
        raise ExperimentError(
            f"--data {data}: no such folder; pass the folder that holds train.jsonl and valid.jsonl"
        )
    return with_overrides(
        load_experiment(option("experiment")),
        base_model=option("base_model"),
        reference_model=option("reference_model"),
        data=option("data"),
        prompts=option("prompts"),
        baseline_run=option("baseline_run"),
        require_decidable=option("require_decidable"),
        launch_processes=option("launch_processes"),
        launch_hostfile=option("launch_hostfile"),
        retrain=option("retrain"),
        decide=option("decide"),
    )


# --- strict construction -------------------------------------------------------------------

_PATH_KEYS_THAT_MUST_EXIST = {
    "prompts",
    "system_prompt",
    "system_prompt_variants",
    "docs",
    "phrasings",
    "adapter",
}


def _build(cls: Any, raw: Any, source: Path, key: str, preset: dict[str, Any] | None = None):
    where = f"{source}: [{key}]" if key else f"{source}"
    if not isinstance(raw, dict):
        raise ExperimentError(f"{where} must be a table, got {type(raw).__name__}")
    preset = preset or {}
    if issubclass(cls, Scores):
        raw = _scores(cls, raw, source, key)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields) - set(preset))
    if unknown:
        raise ExperimentError(
            f"{source}: unknown key {_dotted(key, unknown[0])!r} "
            f"(allowed here: {', '.join(sorted(set(fields) - set(preset)))})"
        )
    values: dict[str, Any] = dict(preset)
    for name, f in fields.items():
        if name in preset:
            continue
        dotted = _dotted(key, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ExperimentError(f"{source}: missing required key {dotted!r}")
            continue
        values[name] = _convert(hints[name], raw[name], source, dotted)
    return cls(**values)


def _scores(cls: Any, raw: dict[str, Any], source: Path, key: str) -> dict[str, Any]:
    """A [thresholds] or [baseline] table: its own settings, and one score per category."""
    own = {f.name for f in dataclasses.fields(cls)} - {"values"}
    known = (*load_catalog().categories, OVERALL)
    values: dict[str, float] = {}
    for name, score in raw.items():
        if name in own:
            continue
        dotted = _dotted(key, name)
        if name not in known:
            raise ExperimentError(
                f"{source}: unknown key {dotted!r} (allowed here: {', '.join([*known, *own])})"
            )
        score = _convert(float, score, source, dotted)
        if not 0.0 <= score <= 1.0:
            raise ExperimentError(f"{source}: {dotted} = {score} is outside 0..1")
        values[name] = score
    return {**{k: v for k, v in raw.items() if k in own}, "values": values}


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(hint: Any, value: Any, source: Path, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, source, key)
    if origin is Literal:
        if value not in args:
            raise ExperimentError(
                f"{source}: {key} = {value!r} is not one of {', '.join(map(repr, args))}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ExperimentError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ExperimentError(f"{source}: {key} must be a table, got {value!r}")
        return {str(k): _convert(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is Path:
        if not isinstance(value, str):
            raise ExperimentError(f"{source}: {key} must be a path string, got {value!r}")
        path = (source.parent / value).resolve()
        if key.split(".")[-1].split("[")[0] in _PATH_KEYS_THAT_MUST_EXIST and not path.exists():
            raise ExperimentError(f"{source}: {key} names {path}, which does not exist")
        return path
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExperimentError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if not ok:
            raise ExperimentError(
                f"{source}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}"
            )
        return value
    raise ExperimentError(f"{source}: {key}: unsupported setting type {hint!r}")  # pragma: no cover


__all__ = [
    "DECISION_RULES",
    "DEFAULT_NO_TOOL_SHARE",
    "EXPERIMENTS_DIR",
    "OVERALL",
    "PROMPTS_DIR",
    "ROOT",
    "SHARED",
    "Baseline",
    "CallMode",
    "CallSyntax",
    "Data",
    "Decision",
    "DecisionRule",
    "Eval",
    "Experiment",
    "ExperimentError",
    "Fuse",
    "Integrity",
    "Launch",
    "Models",
    "Quantize",
    "Regression",
    "Resources",
    "ScoreName",
    "Scores",
    "Thresholds",
    "TinyModel",
    "Train",
    "available_experiments",
    "available_prompt_sets",
    "check_launch",
    "experiment_path",
    "from_options",
    "hostfile_ranks",
    "load_experiment",
    "prompts_path",
    "with_overrides",
]
