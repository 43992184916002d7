"""Build: data -> preflight -> disk check -> train -> fuse -> quantize, cached and resumable.

Artifacts live in the workspace's `runs/<experiment>/<key>/`, where the key hashes every input
that changes the result (pipeline.builder.key): the base model (hub id + revision, or a digest of
a local folder), the training data's bytes, the experiment's train/fuse/quantize settings and
the mlx / mlx-lm versions.

    adapters/    trained adapters (adapters.partial/ while training; kept across attempts)
    fused/       fused model (fused.partial/ while written; removed after quantizing unless
                 keep_fused)
    quantized/   the result (quantized.partial/ while written)
    build.json   the BuildRecord: per-stage records, the preflight verdict, the key's inputs
    build.log    every line the stages printed, and every progress line `log` got

A stage output is trusted only when build.json records the stage complete and the folder's
files still have the names and sizes recorded then; anything else under a stage's name is
deleted and redone. A build of inputs whose quantized folder is trusted is a cache hit: it runs
nothing (nor the preflight, seconds on the tiny model, when the experiment's fingerprint is
the one recorded with the build: its verdict is reused) and leaves build.json untouched. A
lock file serialises builds of the same key, so concurrent pytest workers wait for one build
instead of racing it. Progress reaches `log` at least every 10 s while a stage runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.builder.files import folder_bytes, manifest, remove
from pipeline.builder.fuse import fuse
from pipeline.builder.key import BUILD_FORMAT, build_inputs, is_local
from pipeline.builder.quantize import quantize
from pipeline.builder.records import (
    BuildInputs,
    BuildPreflight,
    BuildRecord,
    StageRecord,
    Stages,
)
from pipeline.builder.runner import Log, Runner
from pipeline.builder.shipped import use_shipped
from pipeline.builder.train import train
from pipeline.core import blas, io
from pipeline.core.errors import EXIT_FAIL, BadInput, Refused
from pipeline.core.progress import LogLines
from pipeline.core.workspace import RunFolder, StageOutput, Workspace
from pipeline.data import DataError, ensure_data
from pipeline.definitions.experiment import Experiment
from pipeline.models.expanded import float32_expansion
from pipeline.models.refs import ModelError, resolve
from pipeline.preflight import Finding, resolve_model, run_preflight, write_report

LOCK = ".lock"

Preflight = Callable[[Experiment], list[Finding]]


class BuildError(BadInput):
    """The build cannot go on; the message says why and what to do."""


class BuildRefused(BuildError, Refused):
    """The preflight failed and the build was not forced."""

    exit_code: ClassVar[int] = EXIT_FAIL

    def __init__(self, message: str, findings: Sequence[Finding]):
        super().__init__(message)
        self.findings = list(findings)


# --- the plan and its stages ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildFolder:
    """A build's paths by stage name, in its run folder (whose layout core.workspace spells)."""

    run_dir: Path

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def record_path(self) -> Path:
        return self.folder.build_record

    @property
    def log_path(self) -> Path:
        return self.folder.build_log

    def output(self, stage: str) -> Path:
        return self.folder.output(OUTPUTS[stage])

    def partial(self, stage: str) -> Path:
        return self.folder.partial(OUTPUTS[stage])


@dataclass(frozen=True, kw_only=True)
class BuildPlan(BuildFolder):
    """Where a build of these inputs lives, before anything is built."""

    experiment: Experiment
    key: str
    inputs: BuildInputs
    data: Path
    base: Path | None
    """The base model's local folder; None for a hub id not fetched yet."""


StageRun = Callable[[BuildPlan, Path | None, Path, Runner], StageRecord]
"""(plan, base folder, output folder to write, runner) -> the stage's record."""


def _train(p: BuildPlan, base: Path | None, out: Path, runner: Runner) -> StageRecord:
    assert base is not None
    shipped = p.experiment.train.adapter
    if shipped is not None:
        digest = str((p.inputs.base.get("local") or {}).get("sha256", ""))
        record = use_shipped(
            shipped, base_digest=digest, data_sha256=p.inputs.data_sha256, work=out
        )
        runner.log(f"[train] not trained: using the shipped adapter {record.shipped}")
        return record
    return train(p.experiment, base=base, data=p.data, work=out, runner=runner)


def _fuse(p: BuildPlan, base: Path | None, out: Path, runner: Runner) -> StageRecord:
    assert base is not None
    adapters = p.output("train")
    return fuse(p.experiment, base=base, adapters=adapters, out=out, runner=runner)


def _quantize(p: BuildPlan, base: Path | None, out: Path, runner: Runner) -> StageRecord:
    return quantize(p.experiment, fused=p.output("fuse"), out=out, runner=runner)


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageRun
    output: StageOutput
    """The output folder's name in the run folder (`<output>.partial` while written)."""
    needs_base: bool = True
    resumable: bool = False
    """Its partial folder is kept for the next attempt (training's checkpoints)."""


STAGES: tuple[Stage, ...] = (
    Stage("train", _train, "adapters", resumable=True),
    Stage("fuse", _fuse, "fused"),
    Stage("quantize", _quantize, "quantized", needs_base=False),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
OUTPUTS = {s.name: s.output for s in STAGES}


def plan(experiment: Experiment, *, workspace: Workspace) -> BuildPlan:
    """Make sure the data exists, find the base model, and compute the build's key.

    A local base folder (or the tiny model, built here in about a second) must exist: a
    missing one raises BuildError naming it. A hub id is not fetched here.
    """
    try:
        data = ensure_data(experiment, workspace=workspace)
    except DataError as err:
        raise BuildError(f"cannot prepare the training data: {err}") from err
    ref, revision = experiment.models.base, experiment.models.base_revision
    base: Path | None = None
    if is_local(ref):
        try:
            base = resolve_model(ref, experiment, workspace=workspace, revision=revision)
        except ModelError as err:
            raise BuildError(
                f"base model {ref!r} cannot be used: {err}. Pass an existing model folder "
                "(--base-model DIR) or a hub id."
            ) from err
        if not (base / "config.json").is_file():
            raise BuildError(f"base model folder {base} has no config.json: not a model folder")
    inputs = build_inputs(experiment, data, base)
    key = inputs.key()
    run_dir = workspace.runs(experiment.name) / key
    return BuildPlan(
        run_dir=run_dir, experiment=experiment, key=key, inputs=inputs, data=data, base=base
    )


# --- records and trust ------------------------------------------------------------------------


def read_record(path: Path, log: Log | None = None) -> BuildRecord | None:
    """build.json, or None when there is none or it cannot be read (its stages are then not
    trusted: they are redone; `log` hears why)."""
    if not path.is_file():
        return None
    try:
        raw = io.read_json(path)
        if isinstance(raw, dict) and "kind" not in raw:  # written before records existed
            raw = {"kind": BuildRecord.KIND, "version": 1, **raw}
        return BuildRecord.from_json(raw, str(path))
    except (ValueError, TypeError) as err:  # BadInput, RecordError, a malformed value
        if log is not None:
            log(f"[build] ignoring {path}: {err}")
        return None


def trusted(p: BuildPlan, record: BuildRecord | None, stage: str) -> bool:
    """A stage's output folder is complete: recorded as such, and its files unchanged."""
    if record is None or record.key != p.key:
        return False
    entry = record.stages.get(stage)
    folder = p.output(stage)
    return (
        entry is not None
        and entry.complete
        and folder.is_dir()
        and manifest(folder) == entry.manifest
    )


# --- the result -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildResult(BuildFolder):
    experiment: str
    key: str
    quantized: Path
    adapters: Path
    fused: Path | None
    """The fused float model, when kept (keep_fused) and still present."""
    cached: bool
    """Nothing was run: a complete build of the same inputs was reused."""
    stages_run: tuple[str, ...]
    resumed_from: str | None
    """The checkpoint training resumed from in this build, if it did."""
    seconds: float
    record: BuildRecord


def _result(
    p: BuildPlan,
    record: BuildRecord,
    *,
    cached: bool,
    stages_run: Sequence[str],
    resumed: str | None,
    started: float,
) -> BuildResult:
    return BuildResult(
        experiment=p.experiment.name,
        key=p.key,
        run_dir=p.run_dir,
        quantized=p.output("quantize"),
        adapters=p.output("train"),
        fused=p.output("fuse") if trusted(p, record, "fuse") else None,
        cached=cached,
        stages_run=tuple(stages_run),
        resumed_from=resumed,
        seconds=time.perf_counter() - started,
        record=record,
    )


# --- checks before building -------------------------------------------------------------------


def free_disk_bytes(path: Path) -> int:
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def check_disk(
    path: Path, need_gb: float, free_bytes: Callable[[Path], int] = free_disk_bytes
) -> None:
    free = free_bytes(path)
    if free < need_gb * 1e9:
        raise BuildError(
            f"not enough disk space for this build: {free / 1e9:.2f} GB free at {path}, the "
            f"experiment needs {need_gb:g} GB (resources.disk_gb). Free some space or point "
            "--workdir at a larger disk; nothing was written."
        )


def _preflight_failures(findings: Sequence[Finding]) -> list[str]:
    return [f.message() for f in findings if f.failed]


def refusal_message(failures: Sequence[str], report: Path | str | None) -> str:
    lines = [f"preflight failed ({len(failures)} check(s)); not building:"]
    lines += [f"  - {m.replace(chr(10), chr(10) + '    ')}" for m in failures]
    if report:
        lines.append(f"report: {report}")
    lines.append("Fix the experiment or data, or pass --force (force=True) to build anyway.")
    return "\n".join(lines)


def _run_preflight(
    experiment: Experiment, preflight: Preflight | None, ws: Workspace
) -> tuple[list[Finding], list[str], Path]:
    """(findings, failed messages, report path) of a fresh preflight."""
    if preflight is not None:
        findings = preflight(experiment)
    else:
        findings = run_preflight(experiment, workspace=ws)
    return findings, _preflight_failures(findings), write_report(experiment, findings, ws)


@contextlib.contextmanager
def _locked(run_dir: Path, log: Log) -> Generator[int]:
    """Hold an exclusive lock on the run folder (waiting for another build of the same key)."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[build] another build of the same inputs holds {run_dir / LOCK}; waiting")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --- the build --------------------------------------------------------------------------------


def build(
    experiment: Experiment,
    *,
    force: bool = False,
    keep_fused: bool = False,
    workspace: Workspace,
    log: Log = print,
    free_bytes: Callable[[Path], int] = free_disk_bytes,
    preflight: Preflight | None = None,
) -> BuildResult:
    """Build (or reuse) the experiment's quantized model; see the module docstring.

    `workspace` is where everything goes. `preflight` lets a caller that has just run the
    preflight pass its findings instead of paying for it twice; `free_bytes` is the
    free-space reading (stubbed by tests). `log` gets every progress line.
    Raises BuildRefused when the preflight fails and not `force`, BuildError for bad input
    (missing base model, full disk) and StageError when mlx_lm fails or a checkpoint is
    corrupt.
    """
    started = time.perf_counter()
    p = plan(experiment, workspace=workspace)
    record = read_record(p.record_path, log)
    if record is not None and trusted(p, record, "quantize"):
        return _cache_hit(
            p, record, workspace, force=force, log=log, started=started, preflight=preflight
        )

    findings, failures, report = _run_preflight(experiment, preflight, workspace)
    if failures and not force:
        raise BuildRefused(refusal_message(failures, report), findings)
    if failures:
        log(f"[build] preflight failed ({len(failures)} checks); building anyway (--force)")
    check_disk(workspace.runs_root, experiment.resources.disk_gb, free_bytes)
    verdict = BuildPreflight(
        fingerprint=experiment.fingerprint(),
        passed=not failures,
        forced=bool(failures) and force,
        failed=tuple(failures),
        checks=len(findings),
        report=report,
    )

    p.run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(p.run_dir, log) as lock_fd, p.log_path.open("a", encoding="utf-8") as log_file:
        kept = LogLines()

        def say(message: str) -> None:
            log(message)
            if kept.keep(message):  # build.log: heartbeats only after a quiet spell
                log_file.write(message + "\n")
                log_file.flush()

        record = read_record(p.record_path)  # another build may have finished meanwhile
        if record is not None and trusted(p, record, "quantize"):
            return _cache_hit(
                p, record, workspace, force=force, log=log, started=started, preflight=preflight
            )
        log_file.write(f"\n# build {_now()} key {p.key}\n")
        say(f"[build] {experiment.name} -> {p.run_dir}")
        say(f"[build] {blas.describe()}")  # with no OpenBLAS: one line saying it will be slow
        runner = Runner(say, log_file, p.log_path, pass_fds=(lock_fd,))
        record, ran = _run_stages(p, _fresh_record(p, record, verdict), runner, keep_fused)
        seconds = round(time.perf_counter() - started, 3)
        record = dataclasses.replace(record, complete=True, finished=_now(), seconds=seconds)
        record.write(p.record_path)
        say(f"[build] done in {seconds:.1f} s: {p.output('quantize')}")
    trained = record.stages.train if "train" in ran else None
    resumed = trained.resumed_from if trained is not None else None
    return _result(
        p,
        record,
        cached=False,
        stages_run=ran,
        resumed=str(resumed.checkpoint) if resumed is not None else None,
        started=started,
    )


def _cache_hit(
    p: BuildPlan,
    record: BuildRecord,
    ws: Workspace,
    *,
    force: bool,
    log: Log,
    started: float,
    preflight: Preflight | None,
) -> BuildResult:
    """Reuse a complete build; the preflight verdict too, if the experiment is unchanged.

    The key covers what changes the model, not everything the preflight judges (minimum
    counts, the reference model, eval prompts): when the experiment's fingerprint differs
    from the one recorded, the preflight runs again and can still refuse.
    """
    findings: list[Finding] = []
    if record.preflight.fingerprint == p.experiment.fingerprint():
        failures = list(record.preflight.failed)
        report: Path | None = record.preflight.report
    else:
        findings, failures, report = _run_preflight(p.experiment, preflight, ws)
    if failures and not force:
        raise BuildRefused(refusal_message(failures, report), findings)
    log(f"[build] cache hit: {p.output('quantize')} (key {p.key}; nothing to run)")
    with contextlib.suppress(OSError), p.log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"# {_now()} cache hit\n")
    return _result(p, record, cached=True, stages_run=(), resumed=None, started=started)


def _fresh_record(p: BuildPlan, old: BuildRecord | None, verdict: BuildPreflight) -> BuildRecord:
    """The record of a build about to run; the stages of an earlier attempt at the same key
    are kept (whether to trust them is decided by their folders)."""
    return BuildRecord(
        format=BUILD_FORMAT,
        experiment=p.experiment.name,
        experiment_file=Path(p.experiment.source),
        fingerprint=p.experiment.fingerprint(),
        key=p.key,
        inputs=p.inputs,
        base_model=p.experiment.models.base,
        base_folder=p.base,
        data_folder=p.data,
        preflight=verdict,
        started=_now(),
        stages=old.stages if old is not None and old.key == p.key else Stages(),
    )


def _run_stages(
    p: BuildPlan, record: BuildRecord, runner: Runner, keep_fused: bool
) -> tuple[BuildRecord, list[str]]:
    """Run the stages the trusted outputs do not already cover; the record and their names."""
    say = runner.log
    # what can be reused: the newest trusted output; everything before it is not needed
    start = max((i + 1 for i, s in enumerate(STAGES) if trusted(p, record, s.name)), default=0)
    todo = STAGES[start:]
    for stage in todo:
        record = record.with_stage(stage.name, None)
        if p.output(stage.name).exists():
            say(f"[build] discarding {p.output(stage.name)}: not recorded as complete")
            remove(p.output(stage.name))
    for i, stage in enumerate(STAGES):  # only an unfinished resumable stage keeps its partial
        if i < start or not stage.resumable:
            remove(p.partial(stage.name))
    if start > 0:
        say(f"[build] reusing {p.output(STAGES[start - 1].name)}")
    record.write(p.record_path)

    base = p.base
    if base is None and any(s.needs_base for s in todo):  # a hub id: fetch the weights now
        ex = p.experiment
        say(f"[build] fetching {ex.models.base}")
        try:
            base = resolve(ex.models.base, ex, revision=ex.models.base_revision)
        except ModelError as err:
            raise BuildError(str(err)) from err
        record = dataclasses.replace(record, base_folder=base)
    if base is not None and p.experiment.train.dequantize_base and any(s.needs_base for s in todo):
        try:
            expansion = float32_expansion(base)
        except ModelError as err:
            raise BuildError(str(err)) from err
        if expansion != base:
            say(f"[build] training on the float32 expansion of {base}: {expansion}")
            base = expansion

    ran: list[str] = []
    for stage in todo:
        t0 = time.perf_counter()
        figures = stage.run(p, base, p.partial(stage.name), runner)
        p.partial(stage.name).rename(p.output(stage.name))
        done = figures.completed(p.output(stage.name), time.perf_counter() - t0)
        record = record.with_stage(stage.name, done)
        record.write(p.record_path)
        ran.append(stage.name)

    fused = record.stages.fuse
    if fused is not None and not keep_fused and p.output("fuse").exists():
        size = folder_bytes(p.output("fuse"))
        remove(p.output("fuse"))
        record = record.with_stage("fuse", dataclasses.replace(fused, removed=True))
        say(f"[build] removed the fused intermediate ({size / 1e6:,.1f} MB); keep it: --keep-fused")
    elif fused is not None and keep_fused:
        record = record.with_stage("fuse", dataclasses.replace(fused, removed=False))
    return record, ran


__all__ = [
    "OUTPUTS",
    "STAGES",
    "STAGE_NAMES",
    "BuildError",
    "BuildFolder",
    "BuildPlan",
    "BuildRefused",
    "BuildResult",
    "Stage",
    "build",
    "check_disk",
    "free_disk_bytes",
    "plan",
    "read_record",
    "refusal_message",
    "trusted",
]
