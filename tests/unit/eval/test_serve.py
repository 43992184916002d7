"""Reliability of the eval's transport, on the real mlx_lm.server with the untrained tiny model.

The untrained model never stops on its own (it babbles until max_tokens), which is exactly the
"reply that never ends" case.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.errors import BadInput
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment
from pipeline.definitions.prompts import load_prompts
from pipeline.eval.client import Record, ask, read_records
from pipeline.eval.run import build_requests, settings_for
from pipeline.eval.serve import (
    LOOPBACK,
    Server,
    ServerError,
    connect,
    free_port,
    server_root,
    start_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def server(model_dir: Path, tmp_path: Path):
    running = start_server(model_dir, tmp_path / "server.log")
    yield running
    running.stop()


def _requests(tiny: Experiment, n: int, max_tokens: int = 24):
    catalog = load_catalog()
    prompts = load_prompts(tiny.eval.prompts, catalog)[:n]
    requests = build_requests(tiny, prompts, settings_for(tiny), catalog)
    for r in requests:
        r.body["max_tokens"] = max_tokens
    return requests


def test_server_lists_the_model_and_stops(server: Server) -> None:
    assert server.model_dir is not None and server.model_id.endswith(server.model_dir.name)
    process = server.process
    server.stop()
    assert process is not None and process.poll() is not None
    assert not _port_open(server.port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_goes_with_an_eval_killed_by_sigterm(model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM runs no atexit: the server still stops, not left holding its port."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipeline.eval.serve import start_server\n"
        "s = start_server(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print(s.process.pid, s.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    evaluator = subprocess.Popen(
        [sys.executable, "-c", script, str(model_dir), str(tmp_path / "server.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert evaluator.stdout is not None
    pid, port = map(int, evaluator.stdout.readline().split())
    evaluator.send_signal(signal.SIGTERM)
    evaluator.wait(timeout=30)
    # a dying server can show as a zombie while its threads still close its socket: wait for
    # both the process and its port to go
    deadline = time.monotonic() + 30
    while (_alive(pid) or _port_open(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphaned = _alive(pid)
    if orphaned:
        os.kill(pid, signal.SIGKILL)  # not left running by a failing test either
    assert not orphaned, f"mlx_lm.server {pid} outlived the eval that started it"
    assert not _port_open(port)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split()[2] == "Z")


def test_killed_server_is_restarted_and_nothing_is_lost(
    server: Server, tiny: Experiment, tmp_path: Path
) -> None:
    requests = _requests(tiny, 6)
    out = tmp_path / "responses.jsonl"
    seen: list[Record] = []

    def kill_after_second(record: Record) -> None:
        seen.append(record)
        if len(seen) == 2 and server.process is not None:
            server.process.kill()

    records = ask(server, requests, out, concurrency=1, on_record=kill_after_second).records
    assert server.restarts == 1
    assert [r.error for r in records] == [""] * len(requests)
    assert len(read_records(out)) == len(requests)
    assert "starting mlx_lm.server" in (tmp_path / "server.log").read_text()


def test_rerun_resumes_from_responses_on_disk(
    server: Server, tiny: Experiment, tmp_path: Path
) -> None:
    requests = _requests(tiny, 4)
    out = tmp_path / "responses.jsonl"
    ask(server, requests[:2], out, concurrency=2)
    asked: list[str] = []
    ask(server, requests, out, concurrency=2, on_record=lambda r: asked.append(r.key))
    assert sorted(asked) == sorted(r.key for r in requests[2:]), "only unanswered ones are asked"
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["response"] for line in lines)


def test_reply_that_never_ends_is_bounded(server: Server, tiny: Experiment, tmp_path) -> None:
    by_tokens = ask(server, _requests(tiny, 1, max_tokens=16), tmp_path / "a.jsonl").records
    assert by_tokens[0].response is not None
    assert by_tokens[0].response["choices"][0]["finish_reason"] == "length"
    by_time = ask(
        server, _requests(tiny, 1, max_tokens=4000), tmp_path / "b.jsonl", timeout_s=0.5
    ).records
    assert by_time[0].response is None and "no answer within" in by_time[0].error


def test_port_already_taken_is_named(model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} .* already taken"):
            start_server(model_dir, tmp_path / "server.log", port=port)


def test_dead_server_url_is_named() -> None:
    port = free_port()
    with pytest.raises(ServerError, match=f"no OpenAI-compatible server answers at .*:{port}"):
        connect(f"http://{LOOPBACK}:{port}")


def test_not_a_model_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is not a model folder"):
        start_server(tmp_path, tmp_path / "server.log")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_server_url_forms_reach_the_same_server(server: Server, suffix: str) -> None:
    # http://host:port and http://host:port/v1 (OpenAI clients' and vLLM's form), with or
    # without a trailing slash, must all ask /v1/models and /v1/chat/completions once.
    given = connect(f"{server.url}{suffix}")
    assert given.url == server.url
    assert given.model_id == server.model_id


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080"),
        (" https://host/v1 ", "https://host"),
    ],
)
def test_server_root_of_each_url_form(given: str, root: str) -> None:
    assert server_root(given) == root


def test_server_url_without_a_scheme_is_bad_input() -> None:
    with pytest.raises(BadInput, match="give http://host:port"):
        server_root("127.0.0.1:8080")


def test_sixteen_in_flight_end_in_a_verdict_not_an_error(
    model_dir: Path, tiny: Experiment, tmp_path: Path
) -> None:
    """--concurrency 16 on a real server: the eval's server batches 16, and every request is
    answered (the untrained 4-bit tiny model, served through its float32 expansion here)."""
    from mlx_lm.convert import convert

    from pipeline.eval.run import run_eval

    quantized = tmp_path / "quantized"
    convert(hf_path=str(model_dir), mlx_path=str(quantized), quantize=True, q_bits=5)
    result = run_eval(
        tiny, tmp_path / "run", model_dir=quantized, concurrency=16, log=lambda line: None
    )
    summary = result.summary
    assert summary.verdict in ("PASS", "FAIL"), summary.verdict_reasons
    assert [s.record.error for s in result.scored] == [""] * len(result.scored)
    assert summary.concurrency == 16 and summary.served is not None
    assert summary.served.batch == 16
    assert summary.served.weights == "float32 expansion"  # mlx's CPU backend, a 5-bit folder
    assert "--decode-concurrency 16" in (tmp_path / "run" / "eval" / "server.log").read_text()
