"""The heartbeat: a line for every stretch of silence, none while something else speaks."""

from __future__ import annotations

import io
import time

from pipeline.core import progress
from pipeline.core.progress import Heartbeat, Transient, clock


def test_silence_gets_a_line_every_interval() -> None:
    said: list[str] = []
    with Heartbeat(said.append, lambda t: f"waiting {t:.2f}", every=0.05):
        time.sleep(0.32)
    assert 4 <= len(said) <= 7, said
    assert all(line.startswith("waiting ") for line in said)


def test_a_beat_resets_the_silence() -> None:
    said: list[str] = []
    with Heartbeat(said.append, lambda t: "waiting", every=0.1) as beat:
        for _ in range(20):
            time.sleep(0.02)
            beat()
    assert said == []


def test_clock() -> None:
    assert [clock(s) for s in (7, 754, 3723)] == ["0:07", "12:34", "1:02:03"]


# --- where progress lines go: a terminal rewrites them, a log keeps what is new ---------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


STEP_10 = "[train] step 10/300  loss 1.120  val 2.355  22 tok/s  elapsed 1:40  ETA 48:33"
STEP_10_LATER = "[train] step 10/300  loss 1.120  val 2.355  22 tok/s  elapsed 1:50  ETA 48:40"
STEP_20 = "[train] step 20/300  loss 0.657  val 2.355  24 tok/s  elapsed 3:35  ETA 50:57"


def test_a_log_keeps_each_new_step_and_a_heartbeat_only_after_a_quiet_minute(monkeypatch) -> None:
    clock_now = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock_now)
    out = io.StringIO()
    console = progress.Console(out, tty=False)
    timeline = [
        (0, Transient(STEP_10)),
        (10, Transient(STEP_10_LATER)),  # the same figures, 10 s later: a heartbeat
        (20, "[train] val loss 0.501 after step 19/300  elapsed 3:00"),
        (30, Transient(STEP_20)),
        *((30 + 10 * i, Transient(STEP_20)) for i in range(1, 7)),  # heartbeats to 90 s
    ]
    for at, line in timeline:
        clock_now.now = 1000.0 + at
        console(line)
    assert out.getvalue().splitlines() == [
        STEP_10,
        "[train] val loss 0.501 after step 19/300  elapsed 3:00",
        STEP_20,
        STEP_20,  # 60 s of nothing else: one heartbeat says the run is alive
    ]


def test_a_terminal_rewrites_the_progress_line_in_place() -> None:
    out = io.StringIO()
    console = progress.Console(out, tty=True)
    console(Transient(STEP_10))
    console(Transient(STEP_10_LATER))
    console("[train] checkpoint at step 10/300")
    console(Transient(STEP_20))
    assert out.getvalue() == (
        f"\r\033[K{STEP_10}\r\033[K{STEP_10_LATER}\r\033[K[train] checkpoint at step 10/300\n"
        f"\r\033[K{STEP_20}"
    )


def test_the_heartbeat_says_transient_lines() -> None:
    said: list[str] = []
    with Heartbeat(said.append, lambda t: "waiting", every=0.05):
        time.sleep(0.12)
    assert said and all(isinstance(line, Transient) for line in said)
