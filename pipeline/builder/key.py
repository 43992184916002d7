"""What a build's key hashes: the base model's identity, the data's bytes, the stage settings
(with the number of training ranks when more than one process trains) and the mlx / mlx-lm
versions. `model_digest` also keys the eval of a model folder routegate
did not build (pipeline.eval)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

from pipeline.builder.records import BuildInputs
from pipeline.builder.shipped import files_digest
from pipeline.data import SPLITS
from pipeline.definitions.experiment import Experiment
from pipeline.models.cache import MARKER as CACHE_MARKER
from pipeline.models.refs import tiny_syntax

BUILD_FORMAT = 1
"""Bump when the stages' command lines or layout change in a way that changes results."""

_FULL_HASH_LIMIT = 256 * 1024 * 1024
"""Local model folders with weights up to this size are hashed in full; bigger ones by file
names, sizes and modification times (a cheap digest that errs towards rebuilding)."""
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_local(ref: str) -> bool:
    """A model reference that names something on this machine (or the tiny model), not a hub
    id to fetch."""
    if tiny_syntax(ref) is not None:
        return True
    path = Path(ref).expanduser()
    return path.exists() or not _HUB_ID.match(ref) or ref.startswith((".", "/", "~"))


def model_digest(folder: Path) -> dict[str, Any]:
    """A digest of a local model folder: small files' bytes, the weights by content or stat.

    The model cache's own record of how it made a folder (`build_info.json`: its seconds, among
    others) is not the model: counted, it made every fresh cache's base another model, and a
    shipped adapter refused the base it was trained on."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != CACHE_MARKER
    )
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


def train_inputs(experiment: Experiment) -> dict[str, Any]:
    """The train settings the key hashes.

    The launch layout counts only through its number of ranks, and only when it is more than
    one: mlx_lm then splits each batch across the ranks and averages their per-rank mean
    gradients (another model than one process trains), whereas which hosts or how many local
    processes make up the ranks changes nothing. One process, launched or not, hashes exactly
    the settings it hashed before [train.launch] existed, so its builds keep their keys.
    """
    train = dataclasses.asdict(experiment.train)
    del train["launch"]
    adapter = train.pop("adapter")
    if adapter is not None:  # not trained here: the adapter's files are what the build holds
        return {"shipped_adapter": files_digest(adapter)}
    ranks = experiment.train.launch.ranks()
    if ranks > 1:
        train["ranks"] = ranks
    return train


def build_inputs(experiment: Experiment, data: Path, base: Path | None) -> BuildInputs:
    """The key's inputs: `base` is the local base folder, None for a hub id not fetched yet."""
    if base is not None:
        identity: dict[str, Any] = {"local": model_digest(base)}
    else:
        identity = {"hub": experiment.models.base, "revision": experiment.models.base_revision}
    return BuildInputs(
        format=BUILD_FORMAT,
        base=identity,
        data_sha256=data_digest(data),
        train=train_inputs(experiment),
        fuse=dataclasses.asdict(experiment.fuse),
        quantize=dataclasses.asdict(experiment.quantize),
        versions=versions(),
    )


__all__ = [
    "BUILD_FORMAT",
    "build_inputs",
    "data_digest",
    "is_local",
    "model_digest",
    "train_inputs",
    "versions",
]
