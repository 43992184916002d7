"""The trainer's ranks under mlx.launch: each rank says it started and finished, ranks other
than 0 write their output to their own log, and every rank stops when the launcher dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from pipeline.builder.launch import RANK_LOG


def _die_with_launcher() -> None:
    """SIGTERM when mlx.launch goes: it runs each local rank as its child and does not stop
    them when it is killed itself, so a stopped build would leave ranks training into its
    work folder. Linux: PR_SET_PDEATHSIG; elsewhere a thread watching the parent."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent or parent == 1:  # it went before the lines above took effect
        sys.exit(128 + signal.SIGTERM)


def _blas_loaded() -> str:
    """The OpenBLAS this process has mapped (Linux: /proc/self/maps), for the rank's line:
    evidence that core.blas's preload reached the rank, not just that it was asked for."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "the platform's"
    for line in maps.splitlines():
        if "libopenblas" in line:
            return line.split()[-1]
    return "none preloaded (mlx's own)"


def _say(fd: int, line: str) -> None:
    """One line in one write(): whole however mlx.launch interleaves the ranks' output."""
    os.write(fd, (line + "\n").encode())


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks mlx.launch started."""

    rank: int
    size: int
    announce: int
    """The file descriptor for the rank's own `rank R/N ...` lines: the shared output."""

    def finished(self) -> None:
        _say(self.announce, f"rank {self.rank}/{self.size} finished")


def join_ranks(expected: int, logs: Path | None) -> Ranks:
    """Join mlx.launch's group of `expected` ranks; announce this rank; send the output of a
    rank other than 0 to its own file in `logs` (module docstring)."""
    _die_with_launcher()
    # strict: a backend that cannot start must stop the build, not leave each rank training
    # the whole batch alone (mx.distributed.init() would fall back to a group of one)
    world = mx.distributed.init(strict=expected > 1)
    rank, size = world.rank(), world.size()
    if size != expected:
        raise RuntimeError(
            f"mlx.launch was to start {expected} ranks, but mx.distributed sees {size}"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    fd, where = None, "here"
    if rank != 0 and logs is not None:
        path = logs / RANK_LOG.format(rank=rank)
        try:
            logs.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"# rank {rank}/{size}, pid {os.getpid()}\n".encode())
            where = f"in {path}"
        except OSError as err:  # another host without the run folder: its output stays here
            where = f"here ({path}: {err.strerror})"
    _say(
        1,
        f"rank {rank}/{size} started: pid {os.getpid()} on {socket.gethostname()}, "
        f"BLAS {_blas_loaded()}, output {where}",
    )
    announce = 1
    if fd is not None:
        announce = os.dup(1)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    # one write per line, so another rank's line never lands inside one of this rank's
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)
    return Ranks(rank=rank, size=size, announce=announce)


def require_shared(path: Path | None, ranks: Ranks | None, what: str) -> None:
    """A resume file every rank must read: on another host than rank 0 it may be missing."""
    if path is not None and ranks is not None and not path.is_file():
        raise FileNotFoundError(
            f"rank {ranks.rank}/{ranks.size} on {socket.gethostname()}: {what} {path} is not "
            "here; a resumed training under a hostfile needs the run folder on a path every "
            "host shares"
        )
