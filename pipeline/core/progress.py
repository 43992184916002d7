"""A heartbeat for long waits: a line at least every `every` seconds while nothing else spoke.

The build's subprocess runner reports from its own loop; waits that have no loop of their own
(a server loading its model, requests in flight) use this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

HEARTBEAT_SECONDS = 10.0


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
                self._say(self._text(time.monotonic() - self._started))
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
