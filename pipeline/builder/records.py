"""build.json as typed, versioned records: one per stage and one for the whole build.

The JSON keeps the keys build.json has always had (plus `kind` and `version`), so a reader of
the plain file (the report) sees the same names:

    BuildRecord                       build.json
      inputs: BuildInputs             what the key hashes
      preflight: BuildPreflight       the verdict the build ran under
      stages: Stages                  train / fuse / quantize, absent (null) until complete
        TrainRecord(StageRecord)      losses, tokens/s, parameters, resume, attempts
        FuseRecord(StageRecord)       what fusing did, the weights' dtype, removed?
        QuantizeRecord(StageRecord)   bits, group size, dtype, bits per weight

A stage function returns its record with the subprocess figures; the build fills in the
completion fields (`complete`, `wall_seconds`, `output`, `output_bytes`, `manifest`,
`command_line`) once the output folder is in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pipeline.builder.files import folder_bytes, manifest
from pipeline.builder.runner import PEAK_MEMORY_SOURCE, CommandRun
from pipeline.core.records import Record


@dataclass(frozen=True, kw_only=True)
class StageRecord(Record):
    """What one stage did: its command and figures, and what its output held when done."""

    KIND: ClassVar[str] = "stage"

    seconds: float
    """The stage process's own time (0 when nothing had to run)."""
    peak_memory_bytes: int | None
    peak_memory_source: str = PEAK_MEMORY_SOURCE
    command: tuple[str, ...]
    """The exact mlx_lm command line, as argv (empty when nothing had to run)."""
    complete: bool = False
    wall_seconds: float = 0.0
    """The whole stage as the build timed it (loading, checks, the subprocess)."""
    output: Path | None = None
    output_bytes: int = 0
    manifest: dict[str, int] = field(default_factory=dict)
    """Every file of the output folder with its size, when recorded complete."""
    command_line: str = ""

    @classmethod
    def ran(cls, run: CommandRun, **figures: Any) -> Self:
        """The record of a stage whose work was the subprocess `run`."""
        return cls(
            seconds=round(run.seconds, 3),
            peak_memory_bytes=run.peak_rss_bytes,
            command=run.argv,
            **figures,
        )

    def completed(self, out: Path, wall_seconds: float) -> Self:
        """This record with the completion fields of the output folder `out`."""
        return dataclasses.replace(
            self,
            complete=True,
            wall_seconds=round(wall_seconds, 3),
            output=out,
            output_bytes=folder_bytes(out),
            manifest=manifest(out),
            command_line=subprocess.list2cmdline(self.command) if self.command else "",
        )


@dataclass(frozen=True, kw_only=True)
class Resumed:
    checkpoint: Path
    step: int
    exact: bool = False
    """Optimizer, data order and random state were restored too, in this resume and every
    earlier one: the model is the one an uninterrupted run trains. False: weights only (a
    checkpoint without state; build.json written before this field reads so, as it was)."""
    state: Path | None = None
    """The checkpoint's state file that was used, if any."""


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One mlx_lm training run into the same work folder (a resumed build makes several)."""

    offset: int
    """Global iterations done before this attempt started."""
    iters: int
    resume_from: Path | None
    command: tuple[str, ...]
    started: str
    finished: str | None = None
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class Attempts(Record):
    """attempts.json in the training work folder: how its checkpoints are numbered."""

    KIND: ClassVar[str] = "train-attempts"

    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TrainRecord(StageRecord):
    KIND: ClassVar[str] = "train"

    fine_tune_type: str
    iters: int
    train_loss: float | None
    val_loss: float | None
    val_loss_step: int | None
    tokens_per_second: float | None = None
    """The last tokens/s mlx_lm reported."""
    mlx_peak_memory_gb: float | None
    trainable_parameters: int
    trainable_parameters_reported: str | None
    total_parameters_millions: float | None
    resumed_from: Resumed | None
    attempts: tuple[Attempt, ...]
    ranks: int = 1
    """Processes that trained data-parallel under mlx.launch (1: one process, no launch)."""
    effective_batch: int | None = None
    """Examples per iteration over all ranks: `batch_size` whatever the ranks, since mlx_lm
    splits each batch across them and averages their gradients (times grad_accumulation_steps
    per optimizer step). None: recorded before the field existed."""
    rank_batch: int | None = None
    """Examples each rank computes per iteration: effective_batch / ranks."""
    shipped: str | None = None
    """Not trained: the shipped adapter used (folder, bytes, sha256, how to retrain)."""


@dataclass(frozen=True, kw_only=True)
class FuseRecord(StageRecord):
    KIND: ClassVar[str] = "fuse"

    fine_tune_type: str
    nothing_to_merge: bool
    """A full fine-tune: fuse loads the trained weights over the base, nothing is merged."""
    dequantize: bool
    dtype: str | None
    """The fused weights' dtype (mlx_lm fuse has no dtype option)."""
    dtype_note: str | None
    removed: bool | None = None
    """The fused folder was deleted after quantizing (None until the build decides)."""


@dataclass(frozen=True, kw_only=True)
class QuantizeRecord(StageRecord):
    KIND: ClassVar[str] = "quantize"

    bits: int
    group_size: int
    dtype: str
    bits_per_weight: float | None


@dataclass(frozen=True, kw_only=True)
class Stages:
    """The stages recorded so far, by name; a missing one is None."""

    train: TrainRecord | None = None
    fuse: FuseRecord | None = None
    quantize: QuantizeRecord | None = None

    def get(self, name: str) -> StageRecord | None:
        return getattr(self, name)

    def with_stage(self, name: str, record: StageRecord | None) -> Stages:
        return dataclasses.replace(self, **{name: record})

    def done(self) -> tuple[StageRecord, ...]:
        return tuple(s for s in (self.train, self.fuse, self.quantize) if s is not None)


@dataclass(frozen=True, kw_only=True)
class BuildInputs:
    """Everything the build key hashes."""

    format: int
    base: dict[str, Any]
    """{"local": model_digest} or {"hub": id, "revision": rev}."""
    data_sha256: str
    train: dict[str, Any]
    fuse: dict[str, Any]
    quantize: dict[str, Any]
    versions: dict[str, str]

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class BuildPreflight:
    """The preflight verdict a build ran under (a cache hit reuses it for the same
    fingerprint)."""

    fingerprint: str
    passed: bool
    forced: bool
    failed: tuple[str, ...]
    """Each failed check's message."""
    checks: int
    report: Path | None


@dataclass(frozen=True, kw_only=True)
class BuildRecord(Record):
    """build.json."""

    KIND: ClassVar[str] = "build"
    VERSION: ClassVar[int] = 1

    format: int
    experiment: str
    experiment_file: Path
    fingerprint: str
    key: str
    inputs: BuildInputs
    base_model: str
    base_folder: Path | None
    data_folder: Path
    preflight: BuildPreflight
    started: str
    complete: bool = False
    finished: str | None = None
    seconds: float | None = None
    stages: Stages = field(default_factory=Stages)

    def with_stage(self, name: str, record: StageRecord | None) -> BuildRecord:
        return dataclasses.replace(self, stages=self.stages.with_stage(name, record))


__all__ = [
    "Attempt",
    "Attempts",
    "BuildInputs",
    "BuildPreflight",
    "BuildRecord",
    "FuseRecord",
    "QuantizeRecord",
    "Resumed",
    "StageRecord",
    "Stages",
    "TrainRecord",
]
