"""The model cache: one folder per build input, made atomically, shared by tests and runs.

A builder writes into a temporary sibling of the final folder, which is renamed into place only
when the build returns, so a crash, a failed check or a concurrent build never leaves a
half-written folder under a name a later run would trust. A folder counts as finished when its
marker file exists (renames are atomic, so a folder without it was damaged by hand).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

MARKER = "build_info.json"
VERSIONED = ("mlx", "mlx-lm", "tokenizers")
"""Libraries whose versions can change the bytes a model build writes."""


def default_cache_root() -> Path:
    """$ROUTEGATE_CACHE, else ~/.cache/routegate: one cache shared by tests and runs."""
    env = os.environ.get("ROUTEGATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "routegate"


def library_versions(names: Iterable[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of `names` (missing ones left out); part of a cache key."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cached_build(final: Path, build: Callable[[Path], object], marker: str = MARKER) -> Path:
    """`final`, built by `build(staging_folder)` first if no finished copy exists.

    If another process finishes the same folder first, its copy wins and ours is discarded.
    Whatever `build` raises propagates, after the staging folder is removed.
    """
    final = Path(final)
    if (final / marker).is_file():
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)  # damaged: see the module docstring
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        build(staging)
        try:
            staging.rename(final)
        except OSError:
            if not (final / marker).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
