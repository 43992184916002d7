"""What the build reads from stage folders without loading a model: sizes, manifests, and
safetensors headers (tensor names, dtypes, shapes; no tensor data)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def manifest(folder: Path) -> dict[str, int]:
    """Every file under a folder with its size: what 'complete' meant when it was recorded."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def remove(path: Path) -> None:
    """Delete a file, link or folder tree; nothing there is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: tensor names, dtypes, shapes, offsets."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return header


def parameter_count(path: Path) -> int:
    total = 0
    for info in safetensors_header(path).values():
        n = 1
        for dim in info["shape"]:
            n *= int(dim)
        total += n
    return total


__all__ = ["folder_bytes", "manifest", "parameter_count", "remove", "safetensors_header"]
