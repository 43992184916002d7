"""Progress: a heartbeat for long waits, and where progress lines go (a terminal or a log).

The build's subprocess runner reports from its own loop; waits that have no loop of their own
(a server loading its model, requests in flight) use `Heartbeat`. A line that the next one
supersedes (a heartbeat, a training step) is a `Transient`: on a terminal it is rewritten in
place (`Console`); in a log (`LogLines`) it is kept only when it says something new, or, as
a heartbeat, when nothing was written for `LOG_QUIET_SECONDS`.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

HEARTBEAT_SECONDS = 10.0
LOG_QUIET_SECONDS = 60.0
"""In a log, a heartbeat repeating the last progress line is written only after this long
without any other line."""
_CLOCKS = re.compile(r"\b\d+:\d\d(?::\d\d)?\b")


class Transient(str):
    """A progress line the next one supersedes (a heartbeat, a training step's figures)."""


class LogLines:
    """Which lines a log keeps: every lasting line; a transient one when it says something
    new (its text without clocks differs from the last transient's), or when nothing was
    written for `quiet_s` seconds (a heartbeat that shows the run is alive)."""

    def __init__(self, quiet_s: float = LOG_QUIET_SECONDS) -> None:
        self.quiet_s = quiet_s
        self._key: str | None = None
        self._last = -math.inf

    def keep(self, line: str) -> bool:
        now = time.monotonic()
        if not isinstance(line, Transient):
            self._last = now
            return True
        key = _CLOCKS.sub("", line)
        if key != self._key or now - self._last >= self.quiet_s:
            self._key, self._last = key, now
            return True
        return False


class Console:
    """Progress lines on a stream: on a terminal a transient line is rewritten in place and
    a lasting one printed below it; elsewhere (a log file, a pipe) `LogLines` decides."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = tty
        self._open = False
        self._lines = LogLines()

    def __call__(self, line: str) -> None:
        out = self._stream or sys.stdout
        tty = out.isatty() if self._tty is None else self._tty
        if tty and isinstance(line, Transient):
            out.write("\r\033[K" + line)
            self._open = True
        elif tty:
            out.write(("\r\033[K" if self._open else "") + line + "\n")
            self._open = False
        elif self._lines.keep(line):
            out.write(line + "\n")
        out.flush()


class Heartbeat:
    """`with Heartbeat(say, lambda elapsed: "...") as beat:` says the line every `every`
    seconds of silence; `beat()` marks that something else was just said."""

    def __init__(
        self,
        say: Callable[[str], None],
        text: Callable[[float], str],
        every: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._say, self._text, self._every = say, text, every
        self._started = self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __call__(self) -> None:
        self._last = time.monotonic()

    def _loop(self) -> None:
        while not self._done.wait(max(0.05, self._last + self._every - time.monotonic())):
            if time.monotonic() - self._last >= self._every:
                self._say(Transient(self._text(time.monotonic() - self._started)))
                self._last = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
