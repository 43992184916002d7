"""A fast BLAS for mlx's CPU backend in every mlx process routegate starts, without root.

The `mlx[cpu]` wheel for Linux computes float32 matmuls with a reference BLAS; OpenBLAS makes
them ~10-30x faster (a 512x2048 @ 2048x512 matmul: 368 ms -> 20 ms here) with the same results
to float tolerance (shared notes: mlx-on-linux-cpu.md). Where one comes from, in order:

1. **pip**: the default Linux install brings PyPI's `cmeel-openblas`, whose unprefixed
   `cmeel.prefix/lib/libopenblas.so.0` needs `libgfortran.so.5`. The `mlx-cpu` wheel ships that
   library under an auditwheel name (`mlx_cpu.libs/libgfortran-<hash>.so.5.0.0`), so a private
   folder holds a `libgfortran.so.5` link to it (and one to its libquadmath), and the child's
   `LD_LIBRARY_PATH` names it.
   (Its `$ORIGIN` rpath is not searched for a library opened by `dlopen` here, so the link
   cannot sit beside a copy of OpenBLAS instead.)
2. **system**: Debian's `libopenblas0` (or any `libopenblas.so.0` the linker finds).

The library is preloaded (`LD_PRELOAD`) into the train, fuse, quantize and server processes:
mlx resolves `cblas_sgemm` to the first definition. A library that the dynamic linker cannot
load, or whose matmul crashes (a wheel built for another CPU: cmeel-openblas 0.3.31's x86_64
wheel targets AVX-512 and dies with SIGILL on AVX2-only CPUs), is dropped after one probe
that multiplies two matrices in a child mlx process, with one line saying why; nothing
depends on any of it.
`ROUTEGATE_BLAS` chooses: `auto` (default), `pip`, `system`, `none`, or a library path.
In-process mlx work (the tiny builder, checkpoint checks) is small and runs on mlx's own BLAS:
a running process cannot be given a preload.
"""

from __future__ import annotations

import ctypes.util
import functools
import hashlib
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CHOICE_ENV = "ROUTEGATE_BLAS"
_SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_SLOW = "mlx's reference BLAS: float32 training runs ~10x slower"


@dataclass(frozen=True)
class Blas:
    """An OpenBLAS to preload into mlx child processes."""

    library: Path
    source: str
    """"pip", "system" or "given": where the library came from, for logs and reports."""
    library_dir: Path | None = None
    """A folder the child needs on LD_LIBRARY_PATH (the pip library's libgfortran link)."""

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this library preloaded (and its folder searched)."""
        env = dict(base)
        preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
        if str(self.library) not in preload:
            env["LD_PRELOAD"] = ":".join([str(self.library), *preload])
        if self.library_dir is not None:
            paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
            if str(self.library_dir) not in paths:
                env["LD_LIBRARY_PATH"] = ":".join([str(self.library_dir), *paths])
        return env


def _site_dirs() -> list[Path]:
    seen: list[Path] = []
    for entry in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]:
        path = Path(entry)
        if path.is_dir() and path not in seen:
            seen.append(path)
    return seen


def pip_blas(site_dirs: list[Path] | None = None, links_root: Path | None = None) -> Blas | None:
    """cmeel-openblas with mlx-cpu's libgfortran linked into a private folder, or None."""
    for site in _site_dirs() if site_dirs is None else site_dirs:
        library = site / "cmeel.prefix" / "lib" / "libopenblas.so.0"
        gfortran = sorted((site / "mlx_cpu.libs").glob("libgfortran-*.so.5*"))
        if library.is_file() and gfortran:
            # libgfortran needs libquadmath under its auditwheel name and has no rpath.
            links = {"libgfortran.so.5": gfortran[0]}
            links |= {q.name: q for q in (site / "mlx_cpu.libs").glob("libquadmath-*.so*")}
            return Blas(library, "pip", _link_folder(links, links_root))
    return None


def _link_folder(links: Mapping[str, Path], root: Path | None) -> Path:
    """A folder holding the symlinks `links` (name -> target), made once and atomically."""
    base = root if root is not None else _links_root()
    digest = hashlib.sha256(repr(sorted((k, str(v)) for k, v in links.items())).encode())
    folder = base / digest.hexdigest()[:12]
    if all((folder / name).resolve() == target.resolve() for name, target in links.items()):
        return folder
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".links-", dir=base))
    for name, target in links.items():
        (staging / name).symlink_to(target)
    try:
        staging.rename(folder)
    except OSError:  # another process made it first, or a stale folder is in the way
        for name, target in links.items():
            (folder / name).unlink(missing_ok=True)
            (folder / name).symlink_to(target)
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return folder


def _links_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "routegate" / "blas"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:  # no writable home: a per-user folder in the temp directory
        return Path(tempfile.gettempdir()) / f"routegate-blas-{os.getuid()}"


def system_blas() -> Blas | None:
    """The system's OpenBLAS (Debian's libopenblas0), or None."""
    for candidate in _SYSTEM_CANDIDATES:
        if Path(candidate).is_file():
            return Blas(Path(candidate), "system")
    found = ctypes.util.find_library("openblas")
    return Blas(Path(found), "system") if found and Path(found).is_absolute() else None


_PROBE = "import mlx.core as mx; a = mx.ones((64, 64)); mx.eval(a @ a)"
"""A float32 matmul through the preloaded cblas_sgemm, as every mlx child will run one."""


def loads(blas: Blas) -> str | None:
    """None when a child mlx process can preload `blas` and multiply with it, else why not:
    the dynamic linker's complaint, or the signal its matmul died of."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=blas.env(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"{type(err).__name__}: {err}"
    # ld.so reports a library it cannot preload on stderr and carries on without it.
    complaint = next((line for line in probe.stderr.splitlines() if "ld.so" in line), None)
    if probe.returncode == -signal.SIGILL:
        return "its matmul dies of an illegal instruction (built for another CPU)"
    if probe.returncode < 0:
        return f"its matmul dies of signal {-probe.returncode}"
    if probe.returncode != 0:
        return complaint or f"exit {probe.returncode}: {probe.stderr.strip()[-200:]}"
    return complaint


@functools.cache
def selected() -> tuple[Blas | None, str]:
    """The BLAS child processes get, and one line saying which (or why none).

    Decided once per process: the probe costs one short subprocess.
    """
    choice = os.environ.get(CHOICE_ENV, "auto").strip() or "auto"
    if not sys.platform.startswith("linux"):
        return None, "BLAS: the platform's own (preloading applies to Linux only)"
    if choice == "none":
        return None, f"BLAS: {_SLOW} ({CHOICE_ENV}=none)"
    if choice in ("auto", "pip", "system"):
        finders = {"pip": [pip_blas], "system": [system_blas], "auto": [pip_blas, system_blas]}
        candidates = [b for b in (find() for find in finders[choice]) if b is not None]
        wanted = "pip or system" if choice == "auto" else choice
        missing = [] if candidates else [f"no {wanted} OpenBLAS found"]
    else:
        given = Blas(Path(choice).expanduser(), "given")
        candidates = [given] if given.library.is_file() else []
        missing = [] if candidates else [f"{CHOICE_ENV}={choice} is not a file"]
    problems = list(missing)
    for blas in candidates:
        complaint = loads(blas)
        if complaint is None:
            return blas, f"BLAS: OpenBLAS ({blas.source}) {blas.library}"
        problems.append(f"{blas.source} OpenBLAS {blas.library} does not load: {complaint}")
    hint = "install cmeel-openblas (pip) or libopenblas0 (apt)"
    return None, f"BLAS: {_SLOW}; {'; '.join(problems)}; {hint}"


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an mlx child process, with OpenBLAS preloaded when one loads."""
    env = dict(os.environ if base is None else base)
    blas, _ = selected()
    return blas.env(env) if blas is not None else env


def describe() -> str:
    """One line for logs and the terminal: which BLAS the mlx processes get."""
    return selected()[1]
