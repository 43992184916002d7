"""Faults are errors, not verdicts; waits are bounded; a failed run leaves no report looking
current; a server asked again reuses its answers. Through the real eval (`run_eval`,
`python -m pipeline eval`, the pytest gate on tests/eval) against a fake server on a loopback
port that lists one model and answers each chat as a test tells it to, or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import EXIT_BAD_INPUT, EXIT_ERROR
from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.eval.client import (
    FAILURES_IN_A_ROW,
    FLOOR_S,
    NOT_ANSWERED,
    SLOWEST_TOKENS_PER_S,
    STARTUP_S,
    Request,
    ask,
    eval_deadline,
    request_timeout,
)
from pipeline.eval.run import eval_run_dir, run_eval
from pipeline.eval.serve import LOOPBACK, Server, free_port
from pipeline.report import JSON, MARKDOWN, mark_stale, report_run
from pipeline.report.write import STALE_MARKDOWN
from tests.unit.fake_http import RELEASE_S, FakeHandler, serving

Answer = tuple[int, bytes] | None
"""What the fake server answers a chat with: (status, body), or None to never answer."""
STALL = None
REFUSE = "refuse"
"""The server lists its model, then stops listening: every chat is refused."""
TRICKLE = "trickle"
"""The server answers 200 and sends its body a byte every 0.2 s: no single read times out."""
GOOD = (200, json.dumps({"choices": [{"message": {"content": "no"}}]}).encode())


@contextlib.contextmanager
def fake_server(
    answer: Answer | str, model_ids: list[str] | None = None
) -> Generator[tuple[str, list[float]]]:
    """(URL, when each chat arrived) of a server listing model_ids[0] (read at each listing)
    and answering every chat with `answer`."""
    ids = model_ids or ["fake-model"]
    asked: list[float] = []

    class Handler(FakeHandler):
        def do_GET(self) -> None:
            if answer == REFUSE:  # stop listening first; this listing still goes out
                self.server.shutdown()
                self.server.server_close()
            self.send_json({"object": "list", "data": [{"id": ids[0]}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            asked.append(time.monotonic())
            if answer is STALL:
                self.released.wait(RELEASE_S)
            elif answer == TRICKLE:
                self.send_bytes(200, b"", length=1000)
                while not self.released.wait(0.2):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            elif isinstance(answer, tuple):
                self.send_bytes(*answer)

    with serving(Handler) as url:
        yield url, asked


@pytest.fixture(scope="module")
def tiny() -> Experiment:
    """tiny with a 1 s ceiling on each request, so a stalled server times out at once."""
    base = load_experiment("tiny")
    return dataclasses.replace(base, eval=dataclasses.replace(base.eval, timeout_s=1.0))


def pipeline_eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "eval", "--experiment", "tiny", *args],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


# --- faults are errors, not verdicts -----------------------------------------------------------

FAULTS: dict[str, tuple[Answer | str, str]] = {
    # case: (what the server does, the cause the first reason names)
    "connection refused": (REFUSE, "ConnectError: "),
    "no answer (timeout)": (STALL, "no answer within "),
    "HTTP 500": ((500, b"boom"), "HTTP 500 Internal Server Error: 'boom'"),
    "invalid JSON body": ((200, b"{not json"), "a body that is not JSON (JSONDecodeError): "),
    "empty 200": ((200, b""), "HTTP 200 with an empty body"),
    "200 without choices": ((200, b"{}"), "a body without choices: '{}'"),
    "a model that fails to load: 404 on every request, mlx_lm's error in the body": (
        (404, json.dumps({"error": "Model type nope not supported."}).encode()),
        "HTTP 404 Not Found: 'Model type nope not supported.'",
    ),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_fault_is_an_error_whose_first_reason_names_it(
    case: str, tiny: Experiment, tmp_path: Path
) -> None:
    answer, cause = FAULTS[case]
    with fake_server(answer) as (url, asked):
        result = run_eval(tiny, tmp_path / "run", server_url=url, log=lambda line: None)
    first = result.summary.verdict_reasons[0]
    assert result.summary.verdict == "ERROR", result.summary.verdict_reasons
    assert first.startswith(f"30 of 30 request(s) got no usable answer: {cause}"), first
    assert "\n" not in first
    # The eval stopped at the FAILURES_IN_A_ROW-th failure written; only the other workers'
    # requests already in flight then were asked besides (fast 404s once ran past that).
    assert len(asked) <= FAILURES_IN_A_ROW + tiny.eval.concurrency - 1
    unanswered = [s.record.error for s in result.scored if s.record.error.startswith(NOT_ANSWERED)]
    assert len(unanswered) >= 30 - FAILURES_IN_A_ROW - tiny.eval.concurrency
    assert f"after {FAILURES_IN_A_ROW} requests in a row got no usable answer" in unanswered[0]

    written = report_run(result.run_dir, tiny, Workspace.at(tmp_path), chart=False)
    markdown = written.markdown.read_text().splitlines()
    assert markdown[0] == f"# {tiny.name}: ERROR"
    reasons = [line for line in markdown if line.startswith("- ")]
    assert reasons[0] == f"- {first}"
    assert written.verdict.exit_code == EXIT_ERROR


def test_the_eval_door_prints_the_error_first_and_exits_3(tmp_path: Path) -> None:
    with fake_server((500, b"boom")) as (url, _):
        done = pipeline_eval("--server-url", url, "--workdir", str(tmp_path))
    assert done.returncode == EXIT_ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if line and not line.startswith("[eval] ")]
    assert said[:2] == [
        "verdict: ERROR",
        "  30 of 30 request(s) got no usable answer: HTTP 500 Internal Server Error: 'boom'",
    ]
    assert " FAIL" not in done.stdout  # no category judged on answers that never came
    assert done.stderr == ""


def test_an_error_verdict_is_pytest_exit_3_even_though_tests_failed(tmp_path: Path) -> None:
    """The threshold tests fail for want of answers; the session's exit is the ERROR's."""
    with fake_server((500, b"boom")) as (url, _):
        done = gate(tmp_path, url)
    assert done.returncode == EXIT_ERROR, done.stdout[-3000:] + done.stderr[-2000:]
    assert "30 of 30 request(s) got no usable answer: HTTP 500 Internal Server Error" in done.stdout


def gate(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """The eval gate's tests (tests/eval) on the server at `url`: nothing is built."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(CHECKOUT / "tests" / "eval"), "--experiment=tiny", f"--server-url={url}",
         f"--workdir={tmp_path}"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


MODEL_FOLDERS: dict[str, tuple[str | None, str]] = {
    # case: (its config.json, None for no folder; what the one line says after the folder)
    "a folder that does not exist": (None, " does not exist"),
    "config.json that is not JSON": ("{broken", "config.json does not load as JSON"),
    "config.json without model_type": ('{"hidden_size": 8}', "config.json names no model_type"),
    "no weights": ('{"model_type": "qwen3"}', " holds no weights (model*.safetensors)"),
}


@pytest.mark.parametrize("case", list(MODEL_FOLDERS))
def test_a_broken_model_folder_is_named_before_the_server_starts(case: str, tmp_path: Path) -> None:
    config, said = MODEL_FOLDERS[case]
    folder = tmp_path / "model"
    if config is not None:
        folder.mkdir()
        (folder / "config.json").write_text(config)
    done = pipeline_eval("--model", str(folder), "--workdir", str(tmp_path / "work"))
    assert done.returncode == EXIT_BAD_INPUT, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {folder}") and said in line, line
    assert "[serve]" not in done.stdout


# --- bounded waits -----------------------------------------------------------------------------


def request(max_tokens: int, n: int = 0) -> Request:
    return Request(f"p{n}", 0, 0.0, {"messages": [], "max_tokens": max_tokens})


def test_a_request_waits_by_its_max_tokens_between_a_floor_and_the_ceiling() -> None:
    assert request_timeout(request(96), 120.0) == STARTUP_S + 96 / SLOWEST_TOKENS_PER_S
    assert request_timeout(request(4), 120.0) == FLOOR_S
    assert request_timeout(request(512), 120.0) == 120.0
    assert request_timeout(request(96), 0.5) == 0.5


def test_a_server_that_never_stops_sending_is_given_up_by_its_progress(tmp_path: Path) -> None:
    """A byte every 0.2 s: no read waits 1 s, yet no request is ever answered, so each is
    given up once its server has answered nothing for its window (1 s, one in flight)."""
    requests = [request(8, n) for n in range(3)]
    with fake_server(TRICKLE) as (url, _):
        started = time.monotonic()
        records = ask(
            Server(url, "fake-model"), requests, tmp_path / "r.jsonl", concurrency=1, timeout_s=1.0
        ).records
        took = time.monotonic() - started
    assert took < 3 * 1.0 + 5
    for record in records:
        assert record.error.startswith("no answer within 1 s (the server answered no request"), (
            record.error
        )


def test_the_eval_deadline_is_every_request_in_turn_and_the_longest_again() -> None:
    assert eval_deadline([1.0, 2.0, 3.0]) == 9.0
    assert eval_deadline([]) == 0.0


@contextlib.contextmanager
def one_at_a_time(seconds: float) -> Generator[tuple[str, list[float]]]:
    """A server that answers every chat, one after another, each in `seconds`: as a server
    whose batch is no faster than its requests in turn (a 5-bit model on mlx's CPU)."""
    lock = threading.Lock()
    answered: list[float] = []

    class Handler(FakeHandler):
        def do_GET(self) -> None:
            self.send_json({"object": "list", "data": [{"id": "fake-model"}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                time.sleep(seconds)
                answered.append(time.monotonic())
            self.send_bytes(*GOOD)

    with serving(Handler) as url:
        yield url, answered


def test_a_server_working_through_a_long_queue_is_never_given_up(tmp_path: Path) -> None:
    """16 in flight, answered one by one every 0.25 s: the last waits ~4 s, four times one
    request's wait (1 s), and is answered, since the server answers something every 0.25 s."""
    requests = [request(8, n) for n in range(16)]
    with one_at_a_time(0.25) as (url, answered):
        records = ask(
            Server(url, "fake-model"), requests, tmp_path / "r.jsonl", concurrency=16, timeout_s=1.0
        ).records
    assert [r.error for r in records] == [""] * 16
    assert len(answered) == 16
    assert max(r.seconds for r in records) > 3.0  # longer than any one request may wait alone


def test_a_stalled_server_is_given_up_within_its_window_at_any_concurrency(
    tmp_path: Path,
) -> None:
    """Nothing answered: every request in flight is given up after its wait per request in
    flight (0.5 s x 16), and the eval stops on the failures in a row."""
    requests = [request(8, n) for n in range(32)]
    with fake_server(STALL) as (url, asked):
        started = time.monotonic()
        records = ask(
            Server(url, "fake-model"), requests, tmp_path / "r.jsonl", concurrency=16, timeout_s=0.5
        ).records
        took = time.monotonic() - started
    # Given up on its first window, not after a second one (a bound a loaded machine, as
    # CI's two cores behind a training, still keeps).
    window = 0.5 * 16
    assert window <= took < 2 * window
    # The eval stopped at the FAILURES_IN_A_ROW-th failure written: each worker whose request
    # was given up before that may have asked one more (one did on CI's loaded cores), no more.
    assert 16 <= len(asked) <= 16 + FAILURES_IN_A_ROW - 1 < len(requests)
    # Each request given up waited 0.5 s per request in flight when it was (16 at most; how
    # many depends on when each worker polled: a loaded machine gave up the first at 10).
    given_up = [r.error for r in records if r.error.startswith("no answer within ")]
    windows = [
        re.match(r"no answer within ([\d.]+) s \(.*; (\d+) in flight, 0\.5 s each\)", e)
        for e in given_up
    ]
    assert given_up and all(w is not None for w in windows), given_up
    assert all(float(w[1]) == 0.5 * int(w[2]) and int(w[2]) <= 16 for w in windows if w)
    assert all(r.error for r in records)
    assert any(r.error.startswith(NOT_ANSWERED) for r in records)  # and the eval stopped
    assert all(r.error for r in records)


# --- stale reports -----------------------------------------------------------------------------


def old_pass_report(workspace: Workspace) -> Path:
    """reports/tiny/ as an earlier passing run left it."""
    out = workspace.reports("tiny")
    out.mkdir(parents=True)
    (out / JSON).write_text(json.dumps({"verdict": "PASS"}))
    (out / MARKDOWN).write_text("# tiny: PASS\n\n![chart](results.png)\n")
    (out / "results.png").write_bytes(b"png")
    return out


def test_a_run_that_fails_before_its_report_marks_the_last_one_stale(tmp_path: Path) -> None:
    out = old_pass_report(Workspace.at(tmp_path))
    dead = f"http://{LOOPBACK}:{free_port()}"
    done = pipeline_eval("--server-url", dead, "--workdir", str(tmp_path))
    assert done.returncode == EXIT_ERROR, done.stderr
    note = (out / MARKDOWN).read_text()
    assert note.startswith("# tiny: ERROR\n\nThe latest run failed before its report: ")
    assert f"no OpenAI-compatible server answers at {dead}" in note
    assert not (out / JSON).exists()  # nothing reads the old PASS as current
    assert json.loads((out / "results.stale.json").read_text()) == {"verdict": "PASS"}
    assert (out / STALE_MARKDOWN).read_text() == "# tiny: PASS\n\n![chart](results.stale.png)\n"
    assert (out / "results.stale.png").read_bytes() == b"png"


def test_a_second_failure_keeps_the_last_real_report(tmp_path: Path) -> None:
    workspace = Workspace.at(tmp_path)
    out = old_pass_report(workspace)
    mark_stale("tiny", "first failure", workspace)
    mark_stale("tiny", "second failure\nwith a log line", workspace)
    assert (out / STALE_MARKDOWN).read_text().startswith("# tiny: PASS")
    note = (out / MARKDOWN).read_text()
    assert "second failure" in note and "```\nwith a log line\n```" in note
    assert "first failure" not in note
    assert mark_stale("other", "no report of it", workspace) is None


def test_a_gate_whose_eval_cannot_run_marks_the_last_report_stale(tmp_path: Path) -> None:
    out = old_pass_report(Workspace.at(tmp_path))
    done = gate(tmp_path, f"http://{LOOPBACK}:{free_port()}")
    assert done.returncode != 0
    note = (out / MARKDOWN).read_text()
    assert note.startswith("# tiny: ERROR\n\nThe latest run failed before its report: ")
    assert "no OpenAI-compatible server answers at" in note, note
    assert not (out / JSON).exists()
    assert f"no report from this run; {out / MARKDOWN} says why" in done.stdout


# --- --server-url answers reused ---------------------------------------------------------------


def test_the_same_server_and_model_asked_again_reuses_the_answers(
    tiny: Experiment, tmp_path: Path
) -> None:
    workspace = Workspace.at(tmp_path)
    ids = ["fake-model"]
    with fake_server(GOOD, ids) as (url, asked):
        first = eval_run_dir(tiny, workspace, server_url=url)
        run_eval(tiny, first, server_url=url, log=lambda line: None)
        assert len(asked) == 30
        time.sleep(1.1)  # (a folder named by the second would change now)
        again = eval_run_dir(tiny, workspace, server_url=f"{url}/v1/")
        assert again == first
        result = run_eval(tiny, again, server_url=url, log=lambda line: None)
        assert len(asked) == 30  # every answer came from the first run's responses.jsonl
        assert result.summary.verdict != "ERROR"
        ids[0] = "another-model"  # the same server now serves another model: asked afresh
        assert eval_run_dir(tiny, workspace, server_url=url) != first


# --- the hub: bounded, and offline at once -----------------------------------------------------


def fetch(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`resolve` of a hub id nobody has, in a fresh process (the hub reads its settings from
    the environment at import), with an empty hub cache; and how long it took."""
    code = (
        "from pipeline.models.refs import resolve; from pipeline.definitions.experiment import "
        "load_experiment; resolve('someone/model', load_experiment('tiny'), tokenizer_only=True)"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ |= {"HF_HUB_CACHE": str(tmp_path / "hub"), **env}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=CHECKOUT, env=environ, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    return done, time.monotonic() - started


def test_a_hub_that_accepts_and_never_answers_is_given_up_on(tmp_path: Path) -> None:
    with socket.socket() as stalled:  # connections complete in the backlog; none is read
        stalled.bind((LOOPBACK, 0))
        stalled.listen(16)
        endpoint = f"http://{LOOPBACK}:{stalled.getsockname()[1]}"
        done, took = fetch(tmp_path, HF_ENDPOINT=endpoint, HF_HUB_ETAG_TIMEOUT="2")
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith(
        f"pipeline.models.ModelError: cannot fetch tokenizer files for hub id 'someone/model' "
        f"from {endpoint} ("
    ), said
    assert "ReadTimeout" in said
    assert took < 30, f"{took:.0f} s"


def test_hub_offline_mode_fails_at_once_and_says_so(tmp_path: Path) -> None:
    done, took = fetch(tmp_path, HF_HUB_OFFLINE="1")
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith(
        "pipeline.models.ModelError: HF_HUB_OFFLINE is set and tokenizer files for hub id "
        f"'someone/model' are not in the hub cache ({tmp_path / 'hub'}): unset HF_HUB_OFFLINE"
    ), said
    assert took < 30


def test_a_record_whose_body_cannot_be_written_back_keeps_the_reason_instead() -> None:
    """A body JSON read, nested past what the encoder recurses, is not kept (a crash here ended
    the whole eval): the line says why, as a request without a usable answer."""
    from pipeline.eval.client import Record, _jsonl_line

    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    record = Record(key="k", prompt_id="p", sample=0, temperature=0.0, response={"a": deep})
    kept, line = _jsonl_line(record)
    assert kept.response is None
    assert kept.error.startswith("a body nested too deep to keep (RecursionError)"), kept.error
    assert json.loads(line)["error"] == kept.error
    shallow = Record(key="k", prompt_id="p", sample=0, temperature=0.0, response={"a": [[1]]})
    assert _jsonl_line(shallow) == (shallow, json.dumps(dataclasses.asdict(shallow)))
