"""The stage subprocess runner train, fuse and quantize share (mlx_lm, or our trainer over it).

`Runner.run` starts `python -m mlx_lm COMMAND ...` with this interpreter and OpenBLAS
preloaded (`core.blas.child_env`), writes every output line (colours removed) to build.log,
hands each line to the stage's parser, and reports through the build's `log` callback at
least every `every` seconds: the stage's own progress line when it has one (training: step,
loss, tokens/s, ETA), else a heartbeat such as `[fuse] running 0:20`. The callback is what the
terminal shows, so nothing of the progress exists only in build.log. The child dies with the
build (Linux: PR_SET_PDEATHSIG) and keeps the build's lock open, so an orphan still blocks a
second build of the same inputs. A failed command is a `StageError` naming the command, its
last output lines and the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipeline.core.blas import child_env
from pipeline.core.errors import Fault
from pipeline.core.progress import HEARTBEAT_SECONDS, Transient, clock

Log = Callable[[str], None]
OnLine = Callable[[str], str | None]
"""Called with each output line; returns a progress message for `log`, or None."""
Status = Callable[[float], str]
"""Called with the seconds since the command started; the line to report when nothing else
was reported for `every` seconds."""

PEAK_MEMORY_SOURCE = "rusage maxrss of the stage process"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAIL = 40


class StageError(Fault):
    """A stage failed; the message says which, why, and where its full log is."""


@dataclass(frozen=True)
class CommandRun:
    """One finished mlx_lm subprocess."""

    argv: tuple[str, ...]
    returncode: int
    seconds: float
    peak_rss_bytes: int | None
    tail: tuple[str, ...] = field(default=())


def mlx_lm_argv(command: str, *args: str) -> list[str]:
    """`python -m mlx_lm COMMAND ...` with this interpreter."""
    return [sys.executable, "-m", "mlx_lm", command, *args]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux (a Popen preexec_fn): the child gets SIGTERM when the process that started it
    dies, even by a signal that runs no cleanup (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Reader thread: every line of the child's output, then None at its end."""
    try:
        for raw in stream:
            lines.put(raw)
    finally:
        lines.put(None)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Runner:
    """How a build runs its stages' commands: where their output goes and how they report."""

    log: Log
    """The build's progress callback (the terminal, and build.log through the build)."""
    log_file: IO[str]
    """build.log, open for appending: every line the commands print."""
    log_path: Path
    pass_fds: tuple[int, ...] = ()
    """Kept open in the child: the build's lock."""
    every: float = HEARTBEAT_SECONDS

    def run(
        self,
        stage: str,
        argv: Sequence[str],
        *,
        on_line: OnLine | None = None,
        status: Status | None = None,
    ) -> CommandRun:
        """Run `argv` to its end, reporting as the module docstring says; a failure raises
        StageError. stderr is merged into stdout so the log keeps the order mlx_lm printed
        in; peak memory is the child's maximum resident set (wait4's rusage)."""
        heartbeat = status or (lambda seconds: f"[{stage}] running {clock(seconds)}")
        env = child_env()
        env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="120")
        self.log_file.write(f"$ {subprocess.list2cmdline(list(argv))}\n")
        self.log_file.flush()
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env,
            pass_fds=self.pass_fds,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        tail: list[str] = []
        reported = started
        try:
            while True:
                try:
                    raw = lines.get(timeout=max(0.0, reported + self.every - time.monotonic()))
                except queue.Empty:
                    self.log(Transient(heartbeat(time.monotonic() - started)))
                    reported = time.monotonic()
                    continue
                if raw is None:  # the reader is done with the pipe
                    proc.stdout.close()
                    break
                line = strip_ansi(raw.rstrip("\n"))
                self.log_file.write(line + "\n")
                self.log_file.flush()
                tail = [*tail[-(_TAIL - 1) :], line]
                message = on_line(line) if on_line is not None else None
                if message:
                    self.log(message)
                    reported = time.monotonic()
            _, wait_status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
        finally:
            if proc.returncode is None:  # interrupted (Ctrl-C, an exception in on_line)
                _stop(proc)
        seconds = time.monotonic() - started
        # ru_maxrss is KiB on Linux, bytes on macOS
        peak = rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        self.log_file.write(f"# exit {proc.returncode} after {seconds:.1f} s\n")
        self.log_file.flush()
        run = CommandRun(tuple(argv), proc.returncode, seconds, peak, tuple(tail))
        check_run(run, stage, self.log_path)
        return run


def check_run(run: CommandRun, stage: str, log_path: Path) -> None:
    """Raise StageError with the output's last lines when the command failed."""
    if run.returncode == 0:
        return
    how = (
        f"was killed by signal {-run.returncode}"
        if run.returncode < 0
        else f"exited with status {run.returncode}"
    )
    lines = [line for line in run.tail if line.strip()][-15:]
    raise StageError(
        f"{stage}: `{subprocess.list2cmdline(run.argv)}` {how}; last output:\n"
        + "\n".join(f"  {line}" for line in lines)
        + f"\nfull log: {log_path}"
    )


__all__ = [
    "HEARTBEAT_SECONDS",
    "PEAK_MEMORY_SOURCE",
    "CommandRun",
    "Log",
    "Runner",
    "StageError",
    "check_run",
    "clock",
    "mlx_lm_argv",
    "strip_ansi",
]
