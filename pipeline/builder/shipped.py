"""A trained adapter that ships with the project, and the record that says how to remake it.

An experiment whose `[train] adapter` names a folder builds from it: the train stage checks
the folder's files against its record (adapter.json), checks that the base it is about to fuse
into is the base the adapter was trained on, and copies the adapter into the build instead of
training; fuse, quantize, integrity and the eval run as always. `--retrain` drops the setting
and trains afresh with the same recipe. The folder is written from a finished build by

    python -m pipeline ship RUN_DIR DEST --reproduce COMMAND

which records the base's digest, the data's digest, the recipe (the experiment's [train]
table), the seed, the loss curve, the mlx and mlx-lm versions, the training minutes and the
command that reproduces it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

from pipeline.builder.records import BuildRecord, TrainRecord
from pipeline.core.errors import BadInput
from pipeline.core.records import Record
from pipeline.core.workspace import RunFolder

FILES = ("adapters.safetensors", "adapter_config.json")
"""What fuse reads from an adapter folder."""
ADAPTER_RECORD = "adapter.json"


class ShippedAdapterError(BadInput):
    """A shipped adapter folder that cannot be used; the message says what to do."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShippedAdapter(Record):
    """adapter.json: where a shipped adapter came from and how to train it again."""

    KIND: ClassVar[str] = "shipped-adapter"

    experiment: str
    files: dict[str, str]
    """File name -> sha256 of each of FILES."""
    bytes: int
    base_model: str
    """The experiment's base reference (smollm2:json: the PyPI wheel's GGUF)."""
    base_digest: str
    """model_digest of the folder trained on and fused into."""
    data_sha256: str
    recipe: dict[str, Any]
    """The experiment's [train] settings it was trained with."""
    seed: int
    iters: int
    train_loss: float | None
    val_loss: float | None
    loss_curve: tuple[tuple[int, float], ...]
    """(step, train loss) at each report."""
    versions: dict[str, str]
    train_minutes: float
    reproduce: str
    """The command that trains it again (on 2 CPU cores: train_minutes)."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_shipped(folder: Path) -> ShippedAdapter:
    """The folder's record, its files checked against it; bad input naming what is wrong."""
    folder = Path(folder)
    path = folder / ADAPTER_RECORD
    if not path.is_file():
        raise ShippedAdapterError(
            f"{folder} is not a shipped adapter (no {ADAPTER_RECORD}); write one with "
            "`python -m pipeline ship RUN_DIR DEST --reproduce COMMAND` or train with --retrain"
        )
    shipped = ShippedAdapter.read(path)
    for name in FILES:
        file = folder / name
        if not file.is_file():
            raise ShippedAdapterError(f"{folder} lacks {name}: restore it, or train with --retrain")
        if sha256(file) != shipped.files.get(name):
            raise ShippedAdapterError(
                f"{file} is not the file {ADAPTER_RECORD} records (sha256 differs): restore it, or "
                "train with --retrain"
            )
    return shipped


def files_digest(folder: Path) -> str:
    """What a build key hashes for a shipped adapter: its files' recorded digests."""
    shipped = read_shipped(folder)
    return hashlib.sha256(repr(sorted(shipped.files.items())).encode()).hexdigest()


def use_shipped(folder: Path, *, base_digest: str, data_sha256: str, work: Path) -> TrainRecord:
    """Copy the shipped adapter into `work` (the train stage's output) and return the stage's
    record; bad input when it was trained on another base than `base_digest` or on other data
    than `data_sha256` (the recipe's data changed since: the adapter is not this recipe's)."""
    shipped = read_shipped(folder)
    if shipped.base_digest != base_digest:
        raise ShippedAdapterError(
            f"{folder} was trained on a base with digest {shipped.base_digest[:16]}, and this "
            f"build's base has {base_digest[:16]}: train with --retrain"
        )
    if shipped.data_sha256 != data_sha256:
        raise ShippedAdapterError(
            f"{folder} was trained on data with digest {shipped.data_sha256[:16]}, and this "
            f"build's data has {data_sha256[:16]} (the generator, its templates or the "
            "[data] table changed since): train with --retrain, and ship the new adapter"
        )
    work.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(folder / name, work / name)
    return TrainRecord(
        seconds=0.0,
        peak_memory_bytes=None,
        command=(),
        fine_tune_type=str(shipped.recipe.get("fine_tune_type", "lora")),
        iters=shipped.iters,
        train_loss=shipped.train_loss,
        val_loss=shipped.val_loss,
        val_loss_step=shipped.iters,
        mlx_peak_memory_gb=None,
        trainable_parameters=0,
        trainable_parameters_reported=None,
        total_parameters_millions=None,
        resumed_from=None,
        attempts=(),
        shipped=(
            f"{folder} ({shipped.bytes:,} bytes, adapters.safetensors sha256 "
            f"{shipped.files['adapters.safetensors'][:16]}); trained {shipped.train_minutes:.0f} "
            f"min on 2 CPU cores; retrain: {shipped.reproduce}"
        ),
    )


_PROGRESS = re.compile(r"^\[train\] step (\d+)/\d+\s+loss ([0-9.]+)")


def loss_curve(build_log: Path) -> tuple[tuple[int, float], ...]:
    """(step, train loss) from the build log's progress lines, once per step."""
    seen: dict[int, float] = {}
    if build_log.is_file():
        for line in build_log.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _PROGRESS.match(line)
            if match:
                seen.setdefault(int(match[1]), float(match[2]))
    return tuple(sorted(seen.items()))


def export(run_dir: Path, dest: Path, *, reproduce: str) -> ShippedAdapter:
    """Write the finished build's adapter and its record to `dest`."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    path = folder.build_record
    record = BuildRecord.read(path) if path.is_file() else None
    if record is None or record.stages.train is None or not record.complete:
        raise ShippedAdapterError(f"{run_dir} is not a finished build (build.json)")
    train: TrainRecord = record.stages.train
    if train.shipped:
        raise ShippedAdapterError(f"{run_dir} was built from a shipped adapter, not trained")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(folder.adapters / name, dest / name)
    shipped = _record(record, train, dest, folder.build_log, reproduce)
    shipped.write(dest / ADAPTER_RECORD)
    return shipped


def _record(
    record: BuildRecord, train: TrainRecord, dest: Path, log: Path, reproduce: str
) -> ShippedAdapter:
    inputs = record.inputs
    base = inputs.base.get("local") or {}
    return ShippedAdapter(
        experiment=record.experiment,
        files={name: sha256(dest / name) for name in FILES},
        bytes=sum((dest / name).stat().st_size for name in FILES),
        base_model=str(record.base_model),
        base_digest=str(base.get("sha256", "")),
        data_sha256=inputs.data_sha256,
        recipe=dict(inputs.train),
        seed=int(inputs.train.get("seed", 0)),
        iters=train.iters,
        train_loss=train.train_loss,
        val_loss=train.val_loss,
        loss_curve=loss_curve(log),
        versions=dict(inputs.versions),
        train_minutes=round(train.seconds / 60, 1),
        reproduce=reproduce,
    )
