"""Build integrity: the model judged is the model trained.

mlx-lm #1172: a fused model scored 0% where the same base with `--adapter-path` scored
95-100%; fusing re-quantizes at the base's bit width, and float16 addition can erase small
deltas (mlx-examples #832). A build goes adapters -> fused -> quantized and nothing in the
eval would notice behaviour lost on the way. This check asks the eval's prompts, greedily (one
answer per prompt at temperature 0), of each step of a finished build:

    reference   the training base (its float32 expansion where the experiment trains on
                one) served with the trained adapters (`mlx_lm.server --adapter-path`)
    fused       the fused model (fused again into the run folder when the build removed it:
                `mlx_lm fuse` is deterministic, and the sizes are checked against build.json)
    quantized   the quantized model as built: the folder users deploy
    served      what the gate's eval serves for it: on mlx's CPU backend its float32
                expansion (pipeline.models.expanded.served_weights), the same function;
                absent where the gate serves the folder as built (Metal, CUDA)

Per step: the routing score and the agreement, the share of prompts whose extracted calls
(names and arguments, in order) equal the reference's. A step fails when its routing falls
more than `[integrity] max_drop` below the reference's or its agreement below
`[integrity] min_agreement`; the first failing step is named. The served step also names
each prompt whose calls differ from the quantized folder's (`unlike_quantized`): the
expansion should answer exactly as the folder does, and the report says where it does not.
Each step's answers are an
eval run of their own under `<run>/integrity/<step>-<weights digest>/`, so a rerun asks
nothing twice; the result is `<run>/integrity/integrity.json` (an `IntegrityRecord`), shown
by the report.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.builder import BuildRecord, read_record
from pipeline.builder.fuse import fuse
from pipeline.builder.key import model_digest
from pipeline.builder.runner import Runner
from pipeline.core.errors import BadInput, Fault, Refused
from pipeline.core.records import Record
from pipeline.core.workspace import RunFolder
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.definitions.prompts import EvalPrompt, load_prompts
from pipeline.eval import metrics
from pipeline.eval.run import OVERALL, EvalResult, run_eval, values_at
from pipeline.eval.serve import ServerError
from pipeline.models.expanded import SERVED_AS_BUILT, float32_expansion, served_weights

STEPS = ("reference", "fused", "quantized", "served")


class IntegrityInputError(BadInput):
    """RUN_DIR is not a finished build, or lacks what a step needs."""


class IntegrityFault(Fault):
    """A step's model could not be served or asked."""


class IntegrityFailed(Refused):
    """A step lost the trained behaviour (exit 1, like a FAIL): the gate does not judge it."""


@dataclass(frozen=True, kw_only=True)
class StepIntegrity:
    step: str
    model: str
    """The folder served (and the adapters, for the reference)."""
    routing: float
    """Mean routing over the prompts that expect a tool (greedy, one answer each)."""
    agreement: float | None
    """Share of all prompts whose calls equal the reference's; None for the reference."""
    disagreeing: tuple[str, ...] = ()
    """Prompt ids whose calls differ from the reference's."""
    unlike_quantized: tuple[str, ...] = ()
    """(served only) Prompt ids whose calls differ from the quantized folder's as built."""
    failure: str | None = None
    asked: tuple[str, ...] = ()
    """The prompt ids this step asked when it asked a sample (`[integrity] as_built_prompts`),
    its routing and agreement measured on them against the reference's on the same; empty
    when it asked every prompt."""


@dataclass(frozen=True, kw_only=True)
class IntegrityRecord(Record):
    KIND: ClassVar[str] = "integrity"
    VERSION: ClassVar[int] = 1

    run_dir: Path
    max_drop: float
    min_agreement: float
    steps: tuple[StepIntegrity, ...]
    quantized_digest: str = ""
    """The quantized weights' digest when checked: a later build of the same weights reuses
    a passing record instead of fusing and asking again."""
    as_built_prompts: int = 0
    """`[integrity] as_built_prompts` when checked (0: every prompt)."""

    @property
    def failure(self) -> str | None:
        """The first failing step's message, or None when every step held."""
        return next((s.failure for s in self.steps if s.failure), None)

    @property
    def passed(self) -> bool:
        return self.failure is None


def record_path(run_dir: Path) -> Path:
    return RunFolder(Path(run_dir)).integrity_record


def read_integrity(run_dir: Path) -> IntegrityRecord | None:
    """The run's integrity record, or None when the check has not run."""
    path = record_path(run_dir)
    return IntegrityRecord.read(path) if path.is_file() else None


def _build_record(run_dir: Path) -> BuildRecord:
    path = RunFolder(Path(run_dir)).build_record
    if not path.is_file():
        raise IntegrityInputError(
            f"{run_dir} is not a build (no build.json): pass a run folder "
            "runs/<experiment>/<key>/ that `python -m pipeline build` made"
        )
    record = read_record(path)
    if record is None or not record.complete:
        raise IntegrityInputError(f"{path} is not a complete build: finish it with the build step")
    return record


def _adapters(run_dir: Path) -> Path:
    adapters = RunFolder(Path(run_dir)).adapters
    if (
        not (adapters / "adapters.safetensors").is_file()
        or not (adapters / "adapter_config.json").is_file()
    ):
        raise IntegrityInputError(
            f"{run_dir} has no trained adapters ({adapters}/adapters.safetensors and "
            "adapter_config.json): the reference step needs them; rebuild with --force"
        )
    return adapters


def _training_base(experiment: Experiment, record: BuildRecord) -> Path:
    base = record.base_folder
    if base is None or not (base / "config.json").is_file():
        raise IntegrityInputError(
            f"the build's base model folder {base} is gone: the reference step serves it "
            "with the adapters; resolve the base again (python -m pipeline build)"
        )
    return float32_expansion(base) if experiment.train.dequantize_base else base


def _fused(
    experiment: Experiment, run_dir: Path, record: BuildRecord, base: Path, log: Callable
) -> Path:
    """The build's fused model, or the same fuse again when the build removed it."""
    kept = RunFolder(Path(run_dir)).output("fused")
    if (kept / "config.json").is_file():
        return kept
    again = RunFolder(Path(run_dir)).integrity / "fused"
    if not (again / "config.json").is_file():
        partial = again.with_name("fused.partial")
        shutil.rmtree(partial, ignore_errors=True)
        with open(RunFolder(Path(run_dir)).integrity / "fuse.log", "a") as log_file:
            runner = Runner(log=log, log_file=log_file, log_path=Path(log_file.name))
            fuse(experiment, base=base, adapters=_adapters(run_dir), out=partial, runner=runner)
        partial.rename(again)
    recorded = record.stages.fuse.manifest if record.stages.fuse else {}
    sizes = {p.name: p.stat().st_size for p in again.glob("*.safetensors")}
    expected = {name: size for name, size in recorded.items() if name.endswith(".safetensors")}
    if expected and sizes != expected:
        raise IntegrityFault(
            f"fusing {run_dir}/adapters again gave other weights ({sizes}) than the build "
            f"recorded ({expected}): the base or the adapters changed since the build"
        )
    return again


def _calls(result: EvalResult) -> dict[str, str]:
    """Per prompt, its decision-temperature calls as one comparable string."""
    return {
        s.prompt.id: json.dumps(s.score.calls, sort_keys=True)
        for s in result.scored
        if s.record.temperature == result.settings.decision_temperature and s.record.sample == 0
    }


def _routing(result: EvalResult, ids: Collection[str] = ()) -> float:
    """The overall mean, as the eval counts it (metrics.summarize: no_tool stays out); over
    the prompt ids in `ids` only, when given."""
    if not ids:
        return result.decision().categories[OVERALL].mean
    t = result.settings.decision_temperature
    asked = [s for s in result.scored if s.prompt.id in ids and s.record.temperature == t]
    categories = tuple(load_catalog().categories)
    return metrics.summarize(values_at(asked), categories)[OVERALL].mean


def as_built_sample(prompts: Sequence[EvalPrompt], count: int) -> tuple[str, ...]:
    """`count` prompt ids, one per category in turn (in the prompt file's order within each,
    categories in the order they first appear); every id when `count` is 0 or covers them."""
    if count <= 0 or count >= len(prompts):
        return tuple(p.id for p in prompts)
    queues: dict[str, list[str]] = {}
    for p in prompts:
        queues.setdefault(p.category, []).append(p.id)
    picked: list[str] = []
    while len(picked) < count:
        for queue in queues.values():
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return tuple(picked)


def _step_folder(run_dir: Path, step: str, model: Path, adapters: Path | None) -> Path:
    """`<run>/integrity/<step>-<digest>`: answers on disk are reused only for the same weights
    (and adapters), so a model replaced under the same name is asked again."""
    parts = [model_digest(model)["sha256"]]
    if adapters is not None:
        parts.append(model_digest(adapters)["sha256"])
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return RunFolder(Path(run_dir)).integrity / f"{step}-{digest}"


def _asks_as_the_gate(experiment: Experiment) -> bool:
    """Whether the gate's own eval asks exactly what the check asks (one greedy answer per
    prompt): then the quantized step's answers are the eval's, asked once for both."""
    return experiment.eval.samples == 1 and tuple(experiment.eval.temperatures) == (0.0,)


def _ask(
    experiment: Experiment,
    step: str,
    model: Path,
    run_dir: Path,
    *,
    adapters: Path | None = None,
    as_built: bool = False,
    gates: bool = False,
    only: Collection[str] | None = None,
    log: Callable[[str], None],
) -> EvalResult:
    """`gates`: this step serves what the gate's eval serves, so when they ask alike its
    answers go to the build's own eval folder, asked once for both."""
    if gates and _asks_as_the_gate(experiment):
        folder = Path(run_dir)  # the build's own eval folder: the gate reuses these answers
    else:
        folder = _step_folder(run_dir, step, model, adapters)
    how = " as built" if as_built else ""
    which = "every prompt" if only is None else f"{len(only)} prompts, one per category in turn"
    log(f"[integrity] {step}: asking {model.name}{how} {which}, greedily")
    try:
        return run_eval(
            experiment,
            folder,
            model_dir=model,
            adapters=adapters,
            samples=1,
            temperatures="0",
            as_built=as_built,
            only=only,
            log=log,
        )
    except ServerError as err:
        raise IntegrityFault(f"integrity step {step!r}: {model} cannot be served: {err}") from err


def check_integrity(
    run_dir: Path,
    *,
    experiment: Experiment | None = None,
    log: Callable[[str], None] = print,
) -> IntegrityRecord:
    """Ask each step of the build in `run_dir`, compare it with the reference, write and
    return the record; a failing step is in the record (`failure`), not raised."""
    run_dir = Path(run_dir)
    record = _build_record(run_dir)
    if experiment is None:
        experiment = load_experiment(record.experiment_file)
    settings = experiment.integrity
    adapters = _adapters(run_dir)
    quantized = RunFolder(run_dir).quantized
    if not (quantized / "config.json").is_file():
        raise IntegrityInputError(f"{run_dir} has no quantized model ({quantized}/config.json)")
    base = _training_base(experiment, record)
    RunFolder(run_dir).integrity.mkdir(exist_ok=True)
    models: dict[str, tuple[Path, Path | None]] = {
        "reference": (base, adapters),
        "fused": (_fused(experiment, run_dir, record, base, log), None),
        "quantized": (quantized, None),
        "served": (quantized, None),
    }
    # Where the gate serves the folder as built, its answers are the quantized step's.
    expands = served_weights(quantized, cache_root=run_dir).weights != SERVED_AS_BUILT
    sample: tuple[str, ...] = ()
    if expands and settings.as_built_prompts:
        prompts = load_prompts(experiment.eval.prompts, load_catalog())
        sample = as_built_sample(prompts, settings.as_built_prompts)
        if len(sample) == len(prompts):
            sample = ()
    results: dict[str, EvalResult] = {}
    steps: list[StepIntegrity] = []
    for step in STEPS if expands else STEPS[:-1]:
        model, with_adapters = models[step]
        asked = sample if step == "quantized" else ()
        results[step] = result = _ask(
            experiment,
            step,
            model,
            run_dir,
            adapters=with_adapters,
            as_built=step == "quantized" and expands,
            gates=step == ("served" if expands else "quantized"),
            only=asked or None,
            log=log,
        )
        routing = _routing(result, asked)
        if step == "reference":
            steps.append(
                StepIntegrity(
                    step=step, model=f"{model} + {adapters}", routing=routing, agreement=None
                )
            )
            continue
        ref_calls, calls = _calls(results["reference"]), _calls(result)
        if asked:  # a sample is measured against the reference's answers to the same prompts
            ref_calls = {p: c for p, c in ref_calls.items() if p in asked}
        differ = tuple(sorted(p for p in ref_calls if calls.get(p) != ref_calls[p]))
        unlike: tuple[str, ...] = ()
        if step == "served":
            built = _calls(results["quantized"])
            unlike = tuple(sorted(p for p in built if calls.get(p) != built[p]))
        agreement = 1 - len(differ) / len(ref_calls) if ref_calls else 1.0
        reference = _routing(results["reference"], asked)
        failure = None
        if routing < reference - settings.max_drop:
            failure = (
                f"integrity: the {step} model routes {routing:.0%}, more than "
                f"{settings.max_drop:.0%} below the reference (base + adapters) {reference:.0%}"
            )
        elif agreement < settings.min_agreement:
            failure = (
                f"integrity: the {step} model agrees with the reference (base + adapters) on "
                f"{agreement:.0%} of the prompts, below {settings.min_agreement:.0%} "
                f"(differ: {', '.join(differ)})"
            )
        steps.append(
            StepIntegrity(
                step=step,
                model=str(model),
                routing=routing,
                agreement=agreement,
                disagreeing=differ,
                unlike_quantized=unlike,
                failure=failure,
                asked=asked,
            )
        )
        of = f" (on {len(asked)} prompts)" if asked else ""
        log(
            f"[integrity] {step}: routing {routing:.0%}, agreement {agreement:.0%}{of}"
            + (f"; unlike the quantized folder on {', '.join(unlike)}" if unlike else "")
            + (f"  FAIL: {failure}" if failure else "")
        )
    out = IntegrityRecord(
        run_dir=run_dir,
        max_drop=settings.max_drop,
        min_agreement=settings.min_agreement,
        steps=tuple(steps),
        quantized_digest=model_digest(quantized)["sha256"],
        as_built_prompts=settings.as_built_prompts,
    )
    out.write(record_path(run_dir))
    again = RunFolder(run_dir).integrity / "fused"
    if steps[-1].failure is None and again.exists():
        shutil.rmtree(again)  # the build's own choice: no fused copy kept
    return out


def after_build(
    experiment: Experiment, run_dir: Path, *, skip: bool, log: Callable[[str], None]
) -> IntegrityRecord | None:
    """The check as a build's last step (the build CLI and the gate's build): skipped with
    --no-integrity or `[integrity] after_build = false`; a failing step raises
    IntegrityFailed naming it, after the record is written."""
    if skip or not experiment.integrity.after_build:
        why = "--no-integrity" if skip else "[integrity] after_build = false"
        log(f"[integrity] skipped ({why})")
        return None
    held = read_integrity(run_dir)
    settings = experiment.integrity
    if (
        held is not None
        and held.passed
        and (held.max_drop, held.min_agreement, held.as_built_prompts)
        == (settings.max_drop, settings.min_agreement, settings.as_built_prompts)
        and held.quantized_digest == model_digest(RunFolder(Path(run_dir)).quantized)["sha256"]
    ):
        log(f"[integrity] held for these weights before: {record_path(run_dir)}")
        return held
    record = check_integrity(run_dir, experiment=experiment, log=log)
    if record.failure:
        raise IntegrityFailed(f"{record.failure} (record: {record_path(run_dir)})")
    return record


def summary_lines(record: IntegrityRecord) -> list[str]:
    """One line per step, for terminals and logs."""
    lines = []
    for s in record.steps:
        agreement = "" if s.agreement is None else f", agreement {s.agreement:.0%}"
        unlike = f", unlike the quantized folder on {', '.join(s.unlike_quantized)}"
        of = f" on {len(s.asked)} prompts" if s.asked else ""
        lines.append(
            f"{s.step:<10} routing {s.routing:.0%}{agreement}{of}"
            + (unlike if s.unlike_quantized else "")
            + ("  FAIL" if s.failure else "")
        )
    return lines
