"""A faster BLAS for mlx's CPU backend in the processes routegate starts, where one exists.

The `mlx[cpu]` wheel for Linux computes float32 matmuls with a reference BLAS; preloading
OpenBLAS makes them 30x faster here (a 512x512x2048 matmul: 133 ms -> 4 ms) with the same
results to float tolerance (shared notes: mlx-on-linux-cpu.md). Nothing depends on it: without
OpenBLAS, or with ROUTEGATE_NO_OPENBLAS=1, the child processes run exactly as mlx_lm would.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


def openblas_path() -> str | None:
    """The OpenBLAS library to preload, or None (not Linux, not installed, or switched off)."""
    if not sys.platform.startswith("linux") or os.environ.get("ROUTEGATE_NO_OPENBLAS"):
        return None
    for candidate in _CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    found = ctypes.util.find_library("openblas")
    return found if found and Path(found).is_absolute() else None


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an mlx child process, with OpenBLAS preloaded when available."""
    env = dict(os.environ if base is None else base)
    library = openblas_path()
    if library and library not in env.get("LD_PRELOAD", "").split(":"):
        env["LD_PRELOAD"] = ":".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return env
