"""The heartbeat: a line for every stretch of silence, none while something else speaks."""

from __future__ import annotations

import time

from pipeline.core.progress import Heartbeat, clock


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
