"""The eval spread across several servers (`--server-url` given more than once): the requests
shared out, each answer naming its server, one report; a server that dies mid-run hands its
requests to the others; servers of different models stop the run as bad input.

Real servers are two `mlx_lm.server` processes on the untrained tiny model (as in
test_serve.py); the faults use test_faults.py's fake server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import pytest

from pipeline.cli.eval import format_summary
from pipeline.core.errors import EXIT_BAD_INPUT
from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.eval.client import read_records
from pipeline.eval.records import eval_files
from pipeline.eval.run import eval_run_dir, run_eval
from pipeline.eval.serve import Server, start_server
from pipeline.report import report_run
from tests.unit.eval.test_faults import GOOD, REFUSE, fake_server, pipeline_eval

REQUESTS = 30
"""tiny's eval: 30 prompts, one greedy sample each."""
CHAT = '"POST /v1/chat/completions HTTP/1.1" 200'
"""The line mlx_lm.server logs for each chat it answered."""


@pytest.fixture
def two_servers(model_dir: Path, tmp_path: Path) -> Generator[list[Server]]:
    """Two real mlx_lm.server processes on the tiny model, each with its own log."""
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            servers.append(start_server(model_dir, tmp_path / f"server-{name}.log"))
        yield servers
    finally:
        for server in servers:
            server.stop()


def chats(server: Server) -> int:
    """Chats the server's own log says it answered."""
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace").count(CHAT)


def quiet(line: str) -> None:
    pass


# --- real servers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_eval_is_spread_across_two_servers_into_one_report(
    tiny: Experiment, two_servers: list[Server], tmp_path: Path
) -> None:
    a, b = two_servers
    workspace = Workspace.at(tmp_path / "work")
    urls = [a.url, f"{b.url}/v1/"]  # either form of a URL names the same server
    run_dir = eval_run_dir(tiny, workspace, server_url=urls)
    started = time.monotonic()
    result = run_eval(tiny, run_dir, server_url=urls, log=quiet)
    print(f"two servers: {REQUESTS} requests in {time.monotonic() - started:.1f} s")

    assert chats(a) > 0 and chats(b) > 0, "each server's log shows requests"
    assert chats(a) + chats(b) == REQUESTS
    records = read_records(eval_files(run_dir)["responses"])
    by_server = Counter(r.server for r in records.values())
    assert by_server == {a.url: chats(a), b.url: chats(b)}, "each answer names its server"
    assert [(s.url, s.answered, s.stopped) for s in result.summary.servers] == [
        (a.url, chats(a), ""),
        (b.url, chats(b), ""),
    ]
    assert result.summary.verdict != "ERROR", result.summary.verdict_reasons

    written = report_run(run_dir, tiny, workspace, chart=False)
    markdown = written.markdown.read_text()
    assert written.markdown == workspace.reports(tiny.name) / "results.md"  # one report
    servers = dict(table_rows(markdown, "| server |"))
    assert servers == {a.url: str(chats(a)), b.url: str(chats(b))}
    assert f"--server-url {a.url} --server-url {b.url}" in written.report.repeat

    # The same servers, in the other order: the same run folder, every answer reused.
    again = eval_run_dir(tiny, workspace, server_url=[b.url, a.url])
    assert again == run_dir
    asked_before = chats(a) + chats(b)
    rerun = run_eval(tiny, again, server_url=[b.url, a.url], log=quiet)
    assert chats(a) + chats(b) == asked_before
    assert [r.score for r in rerun.scored] == [r.score for r in result.scored]


@pytest.mark.slow
def test_a_server_killed_mid_run_hands_its_requests_to_the_other(
    tiny: Experiment, two_servers: list[Server], tmp_path: Path
) -> None:
    a, b = two_servers
    said: list[str] = []
    answered_by_a = 0

    def log(line: str) -> None:
        nonlocal answered_by_a
        said.append(line)
        if line.endswith(f" @ {a.url}"):
            answered_by_a += 1
            if answered_by_a == 3 and a.process is not None:
                a.process.kill()  # mid-run: its next requests fail by connection

    result = run_eval(tiny, tmp_path / "run", server_url=[a.url, b.url], log=log)

    assert result.summary.verdict != "ERROR", result.summary.verdict_reasons
    assert [s.record.error for s in result.scored] == [""] * REQUESTS, "a complete report"
    row_a, row_b = result.summary.servers
    assert row_a.answered >= 3 and row_a.answered + row_b.answered == REQUESTS
    note = row_a.stopped
    assert re.fullmatch(
        rf"server {re.escape(a.url)} stopped answering after {row_a.answered} request\(s\) "
        r"\(\w+Error: .*\); its \d+ in flight and the \d+ not yet asked went to the other "
        r"server\(s\)",
        note,
    ), note
    assert row_b.stopped == ""
    when = note.split("; ")[0]
    assert f"[eval] {when}; the other server(s) take its requests" in said, "said at the time"
    written = report_run(result.run_dir, tiny, Workspace.at(tmp_path), chart=False)
    markdown = written.markdown.read_text()
    assert f"- warning: {note}" in markdown
    assert dict(table_rows(markdown, "| server |")) == {
        a.url: str(row_a.answered),
        b.url: str(row_b.answered),
    }


# --- fake servers ------------------------------------------------------------------------------


def test_servers_of_different_models_stop_the_run_with_one_clear_error(tmp_path: Path) -> None:
    with (
        fake_server(GOOD, ["model-a"]) as (one, asked_one),
        fake_server(GOOD, ["model-b"]) as (two, asked_two),
    ):
        done = pipeline_eval("--server-url", one, "--server-url", two, "--workdir", str(tmp_path))
    assert done.returncode == EXIT_BAD_INPUT, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = done.stderr.splitlines()
    assert line == (
        f"error: --server-url: the servers serve different models ({one} serves 'model-a', "
        f"{two} serves 'model-b'); give servers of one model, or evaluate each on its own"
    )
    assert asked_one == asked_two == [], "nothing was asked"


def test_a_server_gone_from_the_start_leaves_every_request_to_the_other(
    tmp_path: Path,
) -> None:
    # REFUSE lists its model (the check passes), then stops listening: every chat it is asked
    # fails by connection, and the other server answers all of them.
    tiny = load_experiment("tiny")
    with fake_server(REFUSE) as (gone, _), fake_server(GOOD) as (good, asked):
        result = run_eval(tiny, tmp_path / "run", server_url=[gone, good], log=quiet)
    assert len(asked) == REQUESTS
    assert result.summary.verdict != "ERROR", result.summary.verdict_reasons
    first, second = result.summary.servers
    assert (first.answered, second.answered) == (0, REQUESTS)
    assert first.stopped.startswith(f"server {gone} stopped answering after 0 request(s) (")
    records = read_records(eval_files(tmp_path / "run")["responses"])
    assert {r.server for r in records.values()} == {good}
    printed = format_summary(result.summary).splitlines()  # what `python -m pipeline eval` prints
    assert f"server {good}: {REQUESTS} answered, 0 without an answer" in printed
    assert any(line.startswith(f"server {gone}: 0 answered") for line in printed)


def test_every_server_gone_is_the_error_path(tmp_path: Path) -> None:
    tiny = load_experiment("tiny")
    with fake_server(REFUSE) as (one, _), fake_server(REFUSE) as (two, _):
        result = run_eval(tiny, tmp_path / "run", server_url=[one, two], log=quiet)
    assert result.summary.verdict == "ERROR"
    first = result.summary.verdict_reasons[0]
    assert first.startswith(f"{REQUESTS} of {REQUESTS} request(s) got no usable answer: "), first
    assert "ConnectError" in first
    assert sum(bool(s.stopped) for s in result.summary.servers) == 1, "the last one is the error"


def test_pytest_takes_several_server_urls(tmp_path: Path) -> None:
    """`pytest -m eval --server-url A --server-url B`: the eval gate asks both."""
    with fake_server(GOOD) as (one, asked_one), fake_server(GOOD) as (two, asked_two):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
             str(CHECKOUT / "tests" / "eval"), "--experiment=tiny", "--server-url", one,
             "--server-url", two, f"--workdir={tmp_path}"],
            cwd=CHECKOUT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert len(asked_one) + len(asked_two) == REQUESTS, done.stdout[-3000:] + done.stderr[-2000:]
    assert asked_one and asked_two
    (summary,) = (tmp_path / "runs" / "tiny").glob("server-*/eval/summary.json")
    servers = json.loads(summary.read_text())["servers"]
    assert [s["url"] for s in servers] == [one, two]


def table_rows(markdown: str, header: str) -> list[tuple[str, str]]:
    """(first cell, second cell) of each row of the table whose header starts with `header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], cells[1]))
    return rows
