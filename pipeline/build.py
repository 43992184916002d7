"""Build: data -> preflight -> disk check -> train -> fuse -> quantize, cached and resumable.

Artifacts live in `runs/<experiment>/<key>/`, where the key hashes every input that changes
the result: the base model (hub id + revision, or a digest of a local folder), the training
data's bytes, the experiment's train/fuse/quantize settings and the mlx / mlx-lm versions.

    adapters/    trained adapters (adapters.partial/ while training; kept across attempts)
    fused/       fused model (fused.partial/ while written; removed after quantizing unless
                 keep_fused)
    quantized/   the result (quantized.partial/ while written)
    build.json   per-stage figures and completion records, plus the key's inputs
    build.log    every line the stages printed, and this module's progress lines

A stage output is trusted only when build.json records the stage complete and the folder's
files still have the names and sizes recorded then; anything else under a stage's name is
deleted and redone. A build of inputs whose quantized folder is trusted is a cache hit: it runs
nothing (nor the preflight, seconds on the tiny model, when the experiment's fingerprint is
the one recorded with the build: its verdict is reused) and leaves build.json untouched. A
lock file serialises builds of the same key, so concurrent pytest workers wait for one build
instead of racing it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline import fuse as fuse_stage
from pipeline import quantize as quantize_stage
from pipeline import train as train_stage
from pipeline.data import SPLITS, DataError, ensure_data
from pipeline.experiment import ROOT, Experiment, ExperimentError
from pipeline.models import ModelError, resolve, tiny_syntax
from pipeline.preflight import (
    Finding,
    add_experiment_options,
    experiment_from_args,
    run_preflight,
    summary,
    write_report,
)
from pipeline.train import Log, StageError

BUILD_FORMAT = 1
"""Bump when the stages' command lines or layout change in a way that changes results."""

STAGES = ("train", "fuse", "quantize")
OUTPUTS = {"train": "adapters", "fuse": "fused", "quantize": "quantized"}
RECORD = "build.json"
LOG = "build.log"
LOCK = ".lock"
PARTIAL = ".partial"
_FULL_HASH_LIMIT = 256 * 1024 * 1024
"""Local model folders with weights up to this size are hashed in full; bigger ones by file
names, sizes and modification times (a cheap digest that errs towards rebuilding)."""
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


class BuildRefused(BuildError):
    """The preflight failed and the build was not forced."""

    def __init__(self, message: str, findings: Sequence[Finding]):
        super().__init__(message)
        self.findings = list(findings)


# --- the key ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """Where a build of these inputs lives, before anything is built."""

    experiment: Experiment
    key: str
    inputs: dict[str, Any]
    run_dir: Path
    data: Path
    base: Path | None
    """The base model's local folder; None for a hub id not fetched yet."""

    @property
    def record_path(self) -> Path:
        return self.run_dir / RECORD

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG

    def output(self, stage: str) -> Path:
        return self.run_dir / OUTPUTS[stage]


def _is_local(ref: str) -> bool:
    if tiny_syntax(ref) is not None:
        return True
    path = Path(ref).expanduser()
    return path.exists() or not _HUB_ID.match(ref) or ref.startswith((".", "/", "~"))


def model_digest(folder: Path) -> dict[str, Any]:
    """A digest of a local model folder: small files' bytes, the weights by content or stat."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    weights = [p for p in files if p.suffix == ".safetensors"]
    full = sum(p.stat().st_size for p in weights) <= _FULL_HASH_LIMIT
    for path in files:
        digest.update(path.name.encode() + b"\0")
        stat = path.stat()
        if path.suffix == ".safetensors" and not full:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        elif path.suffix == ".safetensors" or stat.st_size <= 64 * 1024 * 1024:
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        else:  # a large non-weight file (a big tokenizer.json is ~11 MB, so rare)
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return {"sha256": digest.hexdigest(), "weights": "content" if full else "names+sizes+mtimes"}


def data_digest(folder: Path) -> str:
    """sha256 over train.jsonl and valid.jsonl (length-prefixed, in that order)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        data = (folder / f"{split}.jsonl").read_bytes()
        digest.update(f"{split}:{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    out = {}
    for name in ("mlx", "mlx-lm"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def plan(experiment: Experiment, runs_root: Path = ROOT / "runs") -> BuildPlan:
    """Make sure the data exists, find the base model, and compute the build's key.

    A local base folder (or the tiny model, built here in about a second) must exist: a
    missing one raises BuildError naming it. A hub id is not fetched here.
    """
    try:
        data = ensure_data(experiment)
    except DataError as err:
        raise BuildError(f"cannot prepare the training data: {err}") from err
    ref, revision = experiment.models.base, experiment.models.base_revision
    base: Path | None = None
    if _is_local(ref):
        try:
            base = resolve(ref, experiment, revision=revision)
        except ModelError as err:
            raise BuildError(
                f"base model {ref!r} cannot be used: {err}. Pass an existing model folder "
                "(--base-model DIR) or a hub id."
            ) from err
        if not (base / "config.json").is_file():
            raise BuildError(f"base model folder {base} has no config.json: not a model folder")
        identity: dict[str, Any] = {"local": model_digest(base)}
    else:
        identity = {"hub": ref, "revision": revision}
    inputs = {
        "format": BUILD_FORMAT,
        "base": identity,
        "data_sha256": data_digest(data),
        "train": dataclasses.asdict(experiment.train),
        "fuse": dataclasses.asdict(experiment.fuse),
        "quantize": dataclasses.asdict(experiment.quantize),
        "versions": versions(),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    run_dir = Path(runs_root) / experiment.name / key
    return BuildPlan(experiment, key, inputs, run_dir, data, base)


# --- records and trust ------------------------------------------------------------------------


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)


def manifest(folder: Path) -> dict[str, int]:
    """Every file under a folder with its size: what 'complete' meant when it was recorded."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def trusted(plan_: BuildPlan, record: dict[str, Any], stage: str) -> bool:
    """A stage's output folder is complete: recorded as such, and its files unchanged."""
    entry = record.get("stages", {}).get(stage) or {}
    folder = plan_.output(stage)
    return (
        record.get("key") == plan_.key
        and bool(entry.get("complete"))
        and folder.is_dir()
        and manifest(folder) == entry.get("manifest")
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- the result -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    experiment: str
    key: str
    run_dir: Path
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
    record: dict[str, Any]

    @property
    def record_path(self) -> Path:
        return self.run_dir / RECORD

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG


def _result(
    p: BuildPlan,
    record: dict[str, Any],
    *,
    cached: bool,
    stages_run: Sequence[str],
    resumed: str | None,
    started: float,
) -> BuildResult:
    fused = p.output("fuse")
    return BuildResult(
        experiment=p.experiment.name,
        key=p.key,
        run_dir=p.run_dir,
        quantized=p.output("quantize"),
        adapters=p.output("train"),
        fused=fused if trusted(p, record, "fuse") else None,
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
            "runs_root (--runs-root) at a larger disk; nothing was written."
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


# --- the build --------------------------------------------------------------------------------


def build(
    experiment: Experiment,
    *,
    force: bool = False,
    keep_fused: bool = False,
    runs_root: Path = ROOT / "runs",
    log: Log = print,
    free_bytes: Callable[[Path], int] = free_disk_bytes,
    preflight: Callable[[Experiment], list[Finding]] = run_preflight,
) -> BuildResult:
    """Build (or reuse) the experiment's quantized model; see the module docstring.

    `preflight` lets a caller that has just run the preflight pass its findings instead of
    paying for it twice; `free_bytes` is the free-space reading (stubbed by tests).
    Raises BuildRefused when the preflight fails and not `force`, BuildError for bad input
    (missing base model, full disk, a corrupt checkpoint) and StageError when mlx_lm fails.
    """
    started = time.perf_counter()
    p = plan(experiment, Path(runs_root))
    record = read_record(p.record_path)
    if trusted(p, record, "quantize"):
        return _cache_hit(p, record, force=force, log=log, started=started, preflight=preflight)

    findings = preflight(experiment)
    report = write_report(experiment, findings)
    failures = _preflight_failures(findings)
    if failures and not force:
        raise BuildRefused(refusal_message(failures, report), findings)
    if failures:
        log(f"[build] preflight failed ({len(failures)} checks); building anyway (--force)")
    check_disk(Path(runs_root), experiment.resources.disk_gb, free_bytes)

    p.run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(p.run_dir, log) as lock_fd, p.log_path.open("a", encoding="utf-8") as log_file:

        def say(message: str) -> None:
            log(message)
            log_file.write(message + "\n")
            log_file.flush()

        record = read_record(p.record_path)  # another build may have finished meanwhile
        if trusted(p, record, "quantize"):
            return _cache_hit(p, record, force=force, log=log, started=started, preflight=preflight)
        log_file.write(f"\n# build {time.strftime('%Y-%m-%dT%H:%M:%S')} key {p.key}\n")
        say(f"[build] {experiment.name} -> {p.run_dir}")
        record = _fresh_record(p, record, findings, failures, report, force)
        stages_run, resumed = _run_stages(
            p, record, keep_fused=keep_fused, say=say, log_file=log_file, lock_fd=lock_fd
        )
        record["complete"] = True
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        record["seconds"] = round(time.perf_counter() - started, 3)
        _write_record(p.record_path, record)
        say(f"[build] done in {record['seconds']:.1f} s: {p.output('quantize')}")
    return _result(p, record, cached=False, stages_run=stages_run, resumed=resumed, started=started)


def _cache_hit(
    p: BuildPlan,
    record: dict[str, Any],
    *,
    force: bool,
    log: Log,
    started: float,
    preflight: Callable[[Experiment], list[Finding]],
) -> BuildResult:
    """Reuse a complete build; the preflight verdict too, if the experiment is unchanged.

    The key covers what changes the model, not everything the preflight judges (minimum
    counts, the reference model, eval prompts): when the experiment's fingerprint differs
    from the one recorded, the preflight runs again and can still refuse.
    """
    recorded = record.get("preflight") or {}
    findings: list[Finding] = []
    if recorded.get("fingerprint") == p.experiment.fingerprint():
        failures = list(recorded.get("failed") or [])
        report: Path | str | None = recorded.get("report")
    else:
        findings = preflight(p.experiment)
        report = write_report(p.experiment, findings)
        failures = _preflight_failures(findings)
    if failures and not force:
        raise BuildRefused(refusal_message(failures, report), findings)
    log(f"[build] cache hit: {p.output('quantize')} (key {p.key}; nothing to run)")
    with contextlib.suppress(OSError), p.log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} cache hit\n")
    return _result(p, record, cached=True, stages_run=(), resumed=None, started=started)


def _fresh_record(
    p: BuildPlan,
    old: dict[str, Any],
    findings: Sequence[Finding],
    failures: Sequence[str],
    report: Path,
    force: bool,
) -> dict[str, Any]:
    stages = old.get("stages", {}) if old.get("key") == p.key else {}
    return {
        "format": BUILD_FORMAT,
        "experiment": p.experiment.name,
        "experiment_file": str(p.experiment.source),
        "fingerprint": p.experiment.fingerprint(),
        "key": p.key,
        "inputs": p.inputs,
        "base_model": p.experiment.models.base,
        "base_folder": str(p.base) if p.base else None,
        "data_folder": str(p.data),
        "preflight": {
            "fingerprint": p.experiment.fingerprint(),
            "passed": not failures,
            "forced": bool(failures) and force,
            "failed": list(failures),
            "checks": len(findings),
            "report": str(report),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "complete": False,
        "stages": {s: stages[s] for s in STAGES if s in stages},
    }


def _run_stages(
    p: BuildPlan,
    record: dict[str, Any],
    *,
    keep_fused: bool,
    say: Log,
    log_file: IO[str],
    lock_fd: int,
) -> tuple[list[str], str | None]:
    """Run the stages the trusted outputs do not already cover; returns (stages, resumed)."""
    # what can be reused: the newest trusted output, everything before it is not needed
    start = 0
    for i, stage in enumerate(STAGES):
        if trusted(p, record, stage):
            start = i + 1
    for stage in STAGES[start:]:
        record["stages"].pop(stage, None)
        if p.output(stage).exists():
            say(f"[build] discarding {p.output(stage)}: not recorded as complete")
            _remove(p.output(stage))
    for stage in ("fuse", "quantize"):  # never resumable: start them clean
        _remove(p.run_dir / (OUTPUTS[stage] + PARTIAL))
    if start > 0:
        _remove(p.run_dir / (OUTPUTS["train"] + PARTIAL))  # adapters done: no resume needed
        say(f"[build] reusing {p.output(STAGES[start - 1])}")
    _write_record(p.record_path, record)

    base = p.base
    if base is None and start < 2:  # a hub id: fetch the weights only now
        say(f"[build] fetching {p.experiment.models.base}")
        try:
            base = resolve(
                p.experiment.models.base, p.experiment, revision=p.experiment.models.base_revision
            )
        except ModelError as err:
            raise BuildError(str(err)) from err
        record["base_folder"] = str(base)
    common: dict[str, Any] = {
        "log": say,
        "log_file": log_file,
        "log_path": p.log_path,
        "pass_fds": (lock_fd,),
    }
    ran: list[str] = []
    resumed: str | None = None
    for stage in STAGES[start:]:
        partial = p.run_dir / (OUTPUTS[stage] + PARTIAL)
        t0 = time.perf_counter()
        if stage == "train":
            assert base is not None
            figures = train_stage.train(
                p.experiment, base=base, data=p.data, work=partial, **common
            )
            if figures["resumed_from"]:
                resumed = figures["resumed_from"]["checkpoint"]
        elif stage == "fuse":
            assert base is not None
            figures = fuse_stage.fuse(
                p.experiment, base=base, adapters=p.output("train"), out=partial, **common
            )
        else:
            figures = quantize_stage.quantize(
                p.experiment, fused=p.output("fuse"), out=partial, **common
            )
        partial.rename(p.output(stage))
        out = p.output(stage)
        figures.update(
            complete=True,
            wall_seconds=round(time.perf_counter() - t0, 3),
            output=str(out),
            output_bytes=train_stage.folder_bytes(out),
            manifest=manifest(out),
            command_line=(
                " ".join(_quote(a) for a in figures["command"]) if figures["command"] else ""
            ),
        )
        record["stages"][stage] = figures
        _write_record(p.record_path, record)
        ran.append(stage)
        if stage == "train":
            say(
                f"[train] done in {figures['wall_seconds']:.1f} s: train loss "
                f"{_fmt(figures['train_loss'])}, val loss {_fmt(figures['val_loss'])}, "
                f"{figures['trainable_parameters']:,} trainable parameters"
            )
    if not keep_fused and p.output("fuse").exists():
        size = train_stage.folder_bytes(p.output("fuse"))
        _remove(p.output("fuse"))
        record["stages"]["fuse"]["removed"] = True
        say(f"[build] removed the fused intermediate ({size / 1e6:,.1f} MB); keep it: --keep-fused")
    elif keep_fused and "fuse" in record["stages"]:
        record["stages"]["fuse"]["removed"] = False
    return ran, resumed


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# --- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline build",
        description="Train, fuse and quantize the experiment's model (cached and resumable).",
    )
    add_experiment_options(parser)
    parser.add_argument("--force", action="store_true", help="build even when the preflight fails")
    parser.add_argument(
        "--keep-fused",
        action="store_true",
        help="keep the fused float model after quantizing (removed by default)",
    )
    parser.add_argument(
        "--runs-root", type=Path, default=ROOT / "runs", help="where runs/ lives [ROOT/runs]"
    )
    args = parser.parse_args(argv)
    try:
        experiment = experiment_from_args(args)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = build(
            experiment,
            force=args.force,
            keep_fused=args.keep_fused,
            runs_root=args.runs_root,
            log=lambda line: print(line, flush=True),
        )
    except BuildRefused as err:
        if err.findings:
            print(summary(err.findings))
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (BuildError, StageError, ModelError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same build again to resume", file=sys.stderr)
        return 130
    print(f"model: {result.quantized}")
    print(f"record: {result.record_path}")
    return 0


__all__ = [
    "BUILD_FORMAT",
    "OUTPUTS",
    "STAGES",
    "BuildError",
    "BuildPlan",
    "BuildRefused",
    "BuildResult",
    "build",
    "check_disk",
    "data_digest",
    "free_disk_bytes",
    "main",
    "manifest",
    "model_digest",
    "plan",
    "read_record",
    "trusted",
]
