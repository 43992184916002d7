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
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.errors import BadInput
from pipeline.definitions.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = ROOT / "experiments"
PROMPTS_DIR = ROOT / "fixtures" / "prompts"
"""Eval prompt sets by name (`--prompts NAME`)."""
SHARED = Path(os.environ.get("ROUTEGATE_SHARED", ROOT.parent / "shared"))
"""Read-only material beside the checkout: real Qwen3 tokenizers, notes, the seed plan."""

OVERALL = "overall"
"""The score over every gated category's prompts; the categories come from the catalog."""

CallSyntax = Literal["structured", "json", "xml"]
CallMode = Literal["direct", "code"]
ScoreName = Literal["routing", "arguments", "seed"]


class ExperimentError(BadInput):
    """An experiment file (or an override) is invalid; the message names the file and key."""


@dataclass(frozen=True)
class Models:
    base: str
    """Hub id, local folder, or `tiny:json` / `tiny:xml` for the embedded tiny model."""
    reference: str
    """The model the base is meant to replace; its tokenizer and template are the yardstick."""
    base_revision: str = ""
    reference_revision: str = ""


DEFAULT_NO_TOOL_SHARE = 0.10


@dataclass(frozen=True)
class Data:
    train_min: int
    valid_min: int
    path: str = ""
    """A folder with train.jsonl and valid.jsonl; empty means `runs/<name>/data`, generated."""
    train_count: int = 1159
    valid_count: int = 123
    seed: int = 0
    syntax: CallSyntax = "structured"
    mode: CallMode = "direct"
    phrasings: tuple[Path, ...] = ()
    """More phrasings for the generator: files whose [requests] and [no_tool] lists extend
    fixtures/data_templates.toml's (relative to the experiment file)."""
    no_tool_share: float = DEFAULT_NO_TOOL_SHARE
    """The share of examples that need no tool; the other kinds keep their proportions."""


@dataclass(frozen=True)
class Launch:
    """[train.launch]: train data-parallel under `mlx.launch` (ring backend unless the hostfile
    names another). The default is no launch: one process, as without the table.

    mlx_lm splits each batch of `batch_size` across the ranks (rank r takes examples r, r + N,
    ...; mlx_lm.tuner.trainer.iterate_batches) and averages their gradients, so the effective
    batch stays `batch_size` and it must be a multiple of the ranks."""

    processes: int = 1
    """Local processes (`mlx.launch -n N`)."""
    hostfile: Path | None = None
    """An mlx.launch hostfile (JSON: `{"hosts": [{"ssh": ..., "ips": [...]}, ...]}` or the bare
    list); one rank per host. Relative to the experiment file's folder."""

    @property
    def launched(self) -> bool:
        """Training runs under mlx.launch (a hostfile of one remote host too)."""
        return self.processes != 1 or self.hostfile is not None

    def ranks(self) -> int:
        """How many processes train: `processes`, or the hostfile's hosts."""
        return hostfile_ranks(self.hostfile) if self.hostfile is not None else self.processes


def hostfile_ranks(path: Path, where: str = "[train.launch]") -> int:
    """The number of hosts in an mlx.launch hostfile (mlx/_distributed_utils/common.py's
    format); a missing or malformed file is an ExperimentError naming it after `where`."""
    if not path.is_file():
        raise ExperimentError(
            f"{where}: hostfile {path} does not exist; write an mlx.launch hostfile there "
            '(README: "Training on two Macs with a hostfile") or leave the hostfile out'
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        hosts = raw["hosts"] if isinstance(raw, dict) else raw
        if not isinstance(hosts, list) or not hosts:
            raise ValueError("it lists no hosts")
        for i, host in enumerate(hosts):
            if not isinstance(host, dict) or not isinstance(host.get("ssh"), str):
                raise ValueError(f'host {i} has no "ssh" name')
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ExperimentError(
            f"{where}: hostfile {path} is not an mlx.launch hostfile ({err}); expected JSON "
            'such as {"hosts": [{"ssh": "mac1.local", "ips": ["192.168.1.10"]}, ...]}'
        ) from err
    return len(hosts)


def check_launch(train: Train, where: str) -> None:
    """A launch layout mlx_lm can train with; else an ExperimentError naming `where` (the
    file and table, or the command-line option) and what to do."""
    launch = train.launch
    if launch.processes < 1:
        raise ExperimentError(f"{where}: processes must be at least 1, got {launch.processes}")
    if launch.hostfile is not None and launch.processes != 1:
        raise ExperimentError(
            f"{where}: give processes or hostfile, not both (a hostfile starts one rank per host)"
        )
    ranks = launch.processes
    if launch.hostfile is not None:
        ranks = hostfile_ranks(launch.hostfile, where)
    if train.batch_size % ranks != 0:
        raise ExperimentError(
            f"{where}: {ranks} ranks cannot split batch_size {train.batch_size}: mlx_lm gives "
            "each rank batch_size / ranks examples of every batch, so make batch_size a "
            "multiple of the ranks (and lower grad_accumulation_steps to keep the examples per "
            "optimizer step)"
        )


@dataclass(frozen=True)
class Train:
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    num_layers: int = 16
    iters: int = 800
    batch_size: int = 1
    learning_rate: float = 1e-4
    grad_accumulation_steps: int = 4
    mask_prompt: bool = True
    save_every: int = 200
    steps_per_report: int = 10
    steps_per_eval: int = 50
    val_batches: int = 10
    max_seq_length: int = 2048
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_dropout: float = 0.0
    seed: int = 0
    dequantize_base: bool = False
    """Train (and fuse) on the quantized base's float32 expansion, the same weights, because
    mlx's quantized matmul is ~14x slower on CPUs (pipeline/models/expanded.py)."""
    launch: Launch = Launch()
    """[train.launch]: data-parallel training under mlx.launch; the default, one process."""
    adapter: Path | None = None
    """A shipped adapter folder (pipeline/builder/shipped.py) the train stage uses instead of
    training, relative to the experiment file; `--retrain` trains afresh with this recipe."""


@dataclass(frozen=True)
class Fuse:
    dequantize: bool = True
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


@dataclass(frozen=True)
class Quantize:
    bits: int = 5
    group_size: int = 64
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


@dataclass(frozen=True)
class Eval:
    prompts: Path
    system_prompt: Path
    """Text file; `{tool_stubs}` and `{tool_list}` are filled from the catalog."""
    system_prompt_variants: tuple[Path, ...] = ()
    """Other system prompts declared equivalent for the train/eval consistency check."""
    temperatures: tuple[float, ...] = (0.0,)
    samples: int = 1
    max_tokens: int = 512
    enable_thinking: bool | None = None
    """Passed to the chat template; None leaves the template's default."""
    stop: tuple[str, ...] = ()
    score: ScoreName = "routing"
    seed: int = 0
    concurrency: int = 32
    """Requests in flight at once, and what routegate's own server batches. Measured on 2 CPU
    cores (benchmarks/eval.py, a 5-bit SmolLM2-135M served as its float32 expansion, the
    seed's 30 requests): 4 in flight 74 s, 8 58 s, 16 49 s, 32 37 s; in-process
    batch_generate of all 30 at once 33 s."""
    timeout_s: float = 120.0
    """The most one request may wait, whatever its max_tokens (pipeline.eval.client's
    request_timeout derives a shorter wait from them)."""
    require_decidable: bool = False
    """A pass whose 95% interval reaches below the threshold fails (pre-registered strictness)."""
    baseline_run: str = ""
    """An earlier eval's run folder to compare with, prompt by prompt (paired); relative to
    this file's folder; "" for none. `--baseline-run` replaces it."""


@dataclass(frozen=True)
class Scores:
    """Scores in 0..1 keyed by category (the catalog's, fixtures/tools.json) or `overall`.

    A category the table leaves out has no score here: for thresholds, it is not gated.
    """

    values: dict[str, float] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The scores alone, without a subclass's extra fields."""
        return dict(self.values)

    def get(self, name: str) -> float | None:
        return self.values.get(name)


@dataclass(frozen=True)
class Thresholds(Scores):
    pending: bool = False
    """True while the thresholds are not yet pre-registered from measurements: gates skip."""
    sets: dict[str, Scores] = dataclasses.field(default_factory=dict)
    """[thresholds.sets.NAME]: thresholds pre-registered for another shipped prompt set
    (fixtures/prompts/NAME.toml), in force when the eval asks it (`--prompts NAME`); the table's
    own scores are for the experiment's [eval] prompts."""


@dataclass(frozen=True)
class Baseline(Scores):
    name: str = ""


@dataclass(frozen=True)
class Regression:
    """ "No catastrophic regression in any category" against the baseline run, pre-registered."""

    max_drop: float | None = None
    """A category fails when its paired 95% interval does not rule out a drop larger than this
    (this run minus the baseline run); None: no such criterion."""


DecisionRule = Literal["thresholds", "non-inferiority"]
DECISION_RULES: tuple[DecisionRule, ...] = ("thresholds", "non-inferiority")


@dataclass(frozen=True)
class Decision:
    """How the verdict is reached ([decision]): against the pre-registered thresholds, or
    "can the candidate replace the baseline run?" within pre-registered margins."""

    rule: DecisionRule = "thresholds"
    """"non-inferiority": the verdict rests on the paired comparison with the baseline run
    (`--baseline-run` or [eval] baseline_run) within each margin; the thresholds are shown."""
    margin: float | None = None
    """The margin of every gated category (those with a threshold; overall when none has)."""
    margins: dict[str, float] = dataclasses.field(default_factory=dict)
    """Margins per category (or overall), beside or instead of `margin`."""

    def margins_for(self, thresholds: Thresholds) -> dict[str, float]:
        """Each decided category's margin."""
        out: dict[str, float] = {}
        if self.margin is not None:
            gated = list(thresholds.as_dict()) or [OVERALL]
            out = dict.fromkeys(gated, self.margin)
        return {**out, **self.margins}

    @property
    def default(self) -> bool:
        return self == Decision()


@dataclass(frozen=True)
class Integrity:
    """The build-integrity check (pipeline.eval.integrity): base + adapters vs fused vs
    quantized, each asked every prompt greedily. A step fails below either bound."""

    after_build: bool = True
    """Run after every build (the gate's and `python -m pipeline build`'s); off: --no-integrity."""
    max_drop: float = 0.15
    """Largest allowed fall of a step's routing below the reference's (a share, 0..1)."""
    as_built_prompts: int = 0
    """Where the gate serves the quantized folder's float32 expansion (mlx's CPU backend), how
    many prompts the `quantized` step asks of the folder as built, one per category in turn
    (0: all). Its quantized matmul runs at ~7 tokens/s there, so asking all of them is most of
    a CPU gate's minutes; the expansion computes the same function, and the sample checks that
    it answers as the folder does."""
    min_agreement: float = 0.5
    """Smallest allowed share of prompts whose calls equal the reference's.

    Measured (2026-12-01, greedy, seed prompts): tiny's fused model agrees on 100%, its 5-bit
    model on 63% with routing 40% against the reference's 47% (a 128-wide model moves under
    5-bit rounding); its untrained base quantized to 5 bits routes 0% and fails on max_drop."""


@dataclass(frozen=True)
class Resources:
    disk_gb: float
    expected_minutes: float
    memory_gb: float = 0.0


@dataclass(frozen=True)
class TinyModel:
    """Shape of the embedded tiny Qwen3 model (only the tiny experiment has one)."""

    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    max_position_embeddings: int = 4096


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
    regression: Regression = Regression()
    decision: Decision = Decision()
    integrity: Integrity = Integrity()
    docs: Path | None = None
    tiny: TinyModel | None = None

    def fingerprint(self) -> str:
        """A short hash of every setting, for run keys and reports."""
        plain = _plain(self)
        if not self.train.launch.launched:
            # experiments without [train.launch] keep the fingerprint they had before it
            # existed: eval runs and study rows recorded under it stay valid
            del plain["train"]["launch"]
        if self.decision.default:
            del plain["decision"]  # likewise for experiments without [decision]
        for table, key in _ADDED_LATER:  # and for those that leave a later key at its default
            if getattr(getattr(self, table), key) == _default(type(getattr(self, table)), key):
                del plain[table][key]
        text = json.dumps(plain, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_ADDED_LATER = (
    ("data", "no_tool_share"),
    ("integrity", "as_built_prompts"),
    ("thresholds", "sets"),
)
"""Keys added after runs were recorded: left at their default, they stay out of the
fingerprint, so those runs keep their keys."""


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
            known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.toml")))
            raise ExperimentError(
                f"{path}: thresholds.sets.{name}: no prompt set fixtures/prompts/{name}.toml "
                f"(known sets: {known})"
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
        known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.toml")))
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
    "OVERALL",
    "ROOT",
    "SHARED",
    "Baseline",
    "Data",
    "Eval",
    "Experiment",
    "ExperimentError",
    "Fuse",
    "Launch",
    "Models",
    "Quantize",
    "Resources",
    "Scores",
    "Thresholds",
    "TinyModel",
    "Train",
    "available_experiments",
    "check_launch",
    "experiment_path",
    "from_options",
    "hostfile_ranks",
    "load_experiment",
    "with_overrides",
]
