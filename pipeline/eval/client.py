"""Chat completions against the served model: bounded concurrency, timeouts, one restart.

Every raw response is appended to responses.jsonl the moment it arrives, keyed by what was
asked, so an interrupted eval resumes where it stopped and a crash loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.eval.serve import Server, ServerError


@dataclass(frozen=True)
class Request:
    """One generation: a prompt, a sample index and a temperature, and the body to send."""

    prompt_id: str
    sample: int
    temperature: float
    body: dict[str, Any] = field(compare=False)

    @property
    def key(self) -> str:
        """Same key <=> same question: resume reuses answers only for identical requests."""
        text = json.dumps(self.body, sort_keys=True)
        return (
            f"{self.prompt_id}/{self.sample}/{self.temperature}/"
            + hashlib.sha256(text.encode()).hexdigest()[:12]
        )


@dataclass
class Record:
    """What came back for one request (a response, or the error that replaced it)."""

    key: str
    prompt_id: str
    sample: int
    temperature: float
    response: dict[str, Any] | None
    error: str = ""
    seconds: float = 0.0
    attempts: int = 1


def chat_body(
    *,
    system: str,
    user: str,
    tools: Sequence[dict[str, Any]] | None,
    temperature: float,
    max_tokens: int,
    stop: Sequence[str],
    seed: int | None,
    chat_template_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if tools:
        body["tools"] = list(tools)
    if stop:
        body["stop"] = list(stop)
    if seed is not None:
        body["seed"] = seed
    if chat_template_kwargs:
        body["chat_template_kwargs"] = chat_template_kwargs
    return body


def read_records(path: Path) -> dict[str, Record]:
    """Answers already on disk (errors are not kept: a rerun asks again)."""
    done: dict[str, Record] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = Record(**json.loads(line))
        except (ValueError, TypeError, RecursionError):
            continue  # a line cut by a crash mid-write (or unreadable): asked again
        if record.response is not None:
            done[record.key] = record
    return done


def run_requests(
    server: Server,
    requests: Sequence[Request],
    out: Path,
    *,
    concurrency: int = 2,
    timeout_s: float = 120.0,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Answer every request, reusing answers in `out`; returns records in request order.

    The workers are daemon threads and nothing waits for them when this is left early: on
    Ctrl-C (or a worker's crash) the exception goes up at once, the answers already appended
    stay in `out`, and a request still in flight is dropped (a rerun asks it again). A thread
    pool would first sit out every request in flight, up to `timeout_s` each.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_records(out)
    pending = [r for r in requests if r.key not in done]
    todo = iter(pending)
    write_lock = threading.Lock()
    restart_lock = threading.Lock()
    take_lock = threading.Lock()
    stopped = threading.Event()
    results: queue.SimpleQueue[Record | BaseException] = queue.SimpleQueue()

    def work() -> None:
        while not stopped.is_set():
            with take_lock:
                request = next(todo, None)
            if request is None:
                return
            try:
                record = _ask(server, request, timeout_s, restart_lock, stopped)
                if stopped.is_set():
                    return  # the run was left: nothing more is written or said
                with write_lock, out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(record)) + "\n")
                if on_record:
                    on_record(record)
            except BaseException as err:
                results.put(err)
                return
            results.put(record)

    for n in range(min(max(1, concurrency), len(pending))):
        threading.Thread(target=work, name=f"eval-request-{n}", daemon=True).start()
    try:
        for _ in pending:
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            done[item.key] = item
    finally:
        stopped.set()
    return [done[r.key] for r in requests]


_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def _ask(
    server: Server,
    request: Request,
    timeout_s: float,
    restart_lock: threading.Lock,
    stopped: threading.Event,
) -> Record:
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        url = f"{server.url}/v1/chat/completions"
        body = {**request.body, "model": server.model_id}
        try:
            response = httpx.post(url, json=body, timeout=timeout_s)
            if response.status_code >= 500 and not server.alive and attempts == 1:
                raise httpx.RemoteProtocolError("server died answering")
            response.raise_for_status()
            return _record(request, response.json(), "", started, attempts)
        except httpx.TimeoutException:
            return _record(request, None, f"no answer within {timeout_s:.0f} s", started, attempts)
        except _TRANSPORT_ERRORS as err:
            if attempts > 1 or not _restart_if_dead(server, restart_lock, stopped):
                return _record(request, None, f"{type(err).__name__}: {err}", started, attempts)
        except (httpx.HTTPStatusError, ValueError, RecursionError) as err:
            # RecursionError: a body nested too deep for the JSON decoder, an invalid body too
            return _record(request, None, f"{type(err).__name__}: {err}", started, attempts)


def _restart_if_dead(server: Server, lock: threading.Lock, stopped: threading.Event) -> bool:
    """Restart a crashed server once per run; True when the request is worth retrying.
    Never once the run was left (`stopped`): the server died because it is being stopped."""
    with lock:
        if stopped.is_set():
            return False
        if server.alive:
            return True  # another worker restarted it already, or it was a passing fault
        if server.restarts >= 1 or server.process is None:
            return False
        try:
            server.restart()
        except ServerError:
            return False
        return True


def _record(
    request: Request,
    response: dict[str, Any] | None,
    error: str,
    started: float,
    attempts: int,
) -> Record:
    return Record(
        key=request.key,
        prompt_id=request.prompt_id,
        sample=request.sample,
        temperature=request.temperature,
        response=response,
        error=error,
        seconds=round(time.monotonic() - started, 3),
        attempts=attempts,
    )
