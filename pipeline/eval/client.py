"""Chat completions against the served model: bounded concurrency, bounded waits, one restart.

Every raw response is appended to responses.jsonl the moment it arrives, keyed by what was
asked, so an interrupted eval resumes where it stopped and a crash loses nothing.

Waits follow the server's progress, so no concurrency turns a working server into an ERROR
and a server that stops answering still ends the eval as one. A request is given up when its
server has answered nothing for `request_timeout` per request in flight there (`_Progress`):
a server that batches or queues n requests answers one of them within n single requests'
time, however slow each is. Every answer restarts that clock for the rest. The whole eval is
bounded by `eval_deadline`, and `FAILURES_IN_A_ROW` requests in a row without a usable answer
stop it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.eval.serve import Server, ServerError, lists_a_model

STARTUP_S = 15.0
"""Before the first token: prompt processing, and on the first request the model's load
(mlx_lm.server loads it lazily)."""
SLOWEST_TOKENS_PER_S = 2.0
"""A conservative generation speed: a third of the ~6 tokens/s 5-bit SmolLM2-135M generates
on 2 CPU cores (README), the slowest model routegate serves."""
FLOOR_S = 30.0
FAILURES_IN_A_ROW = 5
"""This many requests in a row without a usable answer stop the eval: the server is down or
broken, and asking the rest would only repeat the fault."""
NOT_ANSWERED = "not answered: "
"""How the error of a request left without an answer when the eval stopped begins."""


def first_cause(errors: Sequence[str]) -> str:
    """The error a verdict names first: the first that is a request's own, before any request
    left unasked when the eval stopped (with many in flight, one of those can come first in
    request order); "" for none."""
    own = [e for e in errors if e and not e.startswith(NOT_ANSWERED)]
    return next(iter(own or [e for e in errors if e]), "")


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
    server: str = ""
    """The root URL of the server that answered (or failed); "" in records written before
    it was kept, and for requests never asked."""


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


def request_timeout(request: Request, ceiling_s: float) -> float:
    """How long one request may take: STARTUP_S, then its max_tokens at SLOWEST_TOKENS_PER_S;
    at least FLOOR_S, at most `ceiling_s` (the experiment's `[eval] timeout_s`)."""
    tokens = int(request.body.get("max_tokens") or 0)
    return min(ceiling_s, max(FLOOR_S, STARTUP_S + tokens / SLOWEST_TOKENS_PER_S))


def eval_deadline(timeouts: Sequence[float]) -> float:
    """How long the whole eval may take: every request taking its whole timeout one after
    another (a server may answer a batch no faster than one by one: mlx's CPU quantized matmul
    gains nothing from batching), plus the longest once more. It bounds a server that answers
    each request just before it would be given up."""
    if not timeouts:
        return 0.0
    return sum(timeouts) + max(timeouts)


POLL_S = 0.25
"""How often a waiting request looks at its server's progress."""


class _Progress:
    """One server's requests in flight and when it last answered one.

    A request is given up when the server has answered nothing, since the request was sent or
    since its last answer (whichever is later), for `request_timeout` times the requests in
    flight there: a server that works through them at least as fast as one by one never gets
    there, whatever the concurrency; a stalled one does within that window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._answered_at = float("-inf")

    def sent(self) -> None:
        with self._lock:
            self._in_flight += 1

    def settled(self, answered: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            if answered:
                self._answered_at = time.monotonic()

    def overdue(self, sent_at: float, single_s: float) -> tuple[float, int] | None:
        """(the window, the requests in flight) once the server has been quiet past the
        window for a request sent at `sent_at`; None while it has not."""
        with self._lock:
            in_flight = max(1, self._in_flight)
            quiet_since = max(sent_at, self._answered_at)
        window = single_s * in_flight
        return (window, in_flight) if time.monotonic() - quiet_since > window else None


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


@dataclass(frozen=True)
class Stopped:
    """A server that stopped answering mid-run while others still did: its requests went to
    them."""

    url: str
    why: str
    """The connection error that ended it."""
    after: int
    """Requests it answered in this run before it stopped."""
    in_flight: int
    """Requests it was asked and never answered, handed to the other servers."""
    queued: int
    """Requests not yet asked when it stopped (the other servers took them)."""

    def said(self) -> str:
        """When it is found gone (its other requests in flight may not have failed yet)."""
        return (
            f"server {self.url} stopped answering after {self.after} request(s) ({self.why}); "
            "the other server(s) take its requests"
        )

    def note(self) -> str:
        """After the run: where its requests went."""
        return (
            f"server {self.url} stopped answering after {self.after} request(s) ({self.why}); "
            f"its {self.in_flight} in flight and the {self.queued} not yet asked went to the "
            "other server(s)"
        )


@dataclass(frozen=True)
class Asked:
    """What `ask` returns: a record per request, in request order, and the servers that
    stopped answering while others still did."""

    records: list[Record]
    stopped: tuple[Stopped, ...] = ()


def ask(
    servers: Server | Sequence[Server],
    requests: Sequence[Request],
    out: Path,
    *,
    concurrency: int = 2,
    timeout_s: float = 120.0,
    on_record: Callable[[Record], None] | None = None,
    on_stopped: Callable[[Stopped], None] | None = None,
) -> Asked:
    """Answer every request, reusing answers in `out`, spread across `servers`.

    Each server gets `concurrency` workers, all taking from one queue, so a faster server
    takes more. A request that fails by connection on a server that no longer lists its model,
    while another server still answers, goes back to the queue for the others, and that
    server's workers stop (`on_stopped` hears it); the last server standing records such a
    failure as an error, exactly as a single server does.

    A request is given up when its server has answered nothing for `request_timeout(request,
    timeout_s)` per request in flight there (`_Progress`). Past `eval_deadline`, or after
    FAILURES_IN_A_ROW failed requests in a row, the eval stops: every request without a
    record gets one whose error (NOT_ANSWERED ...) says why, and none of those is written to `out`.

    The workers are daemon threads and nothing waits for them when this is left early: on
    Ctrl-C (or a worker's crash) the exception goes up at once, the answers already appended
    stay in `out`, and a request still in flight is dropped (a rerun asks it again). A thread
    pool would first sit out every request in flight, up to its timeout each.
    """
    pool = [servers] if isinstance(servers, Server) else list(servers)
    if not pool:
        raise ValueError("ask needs at least one server")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_records(out)
    pending = [r for r in requests if r.key not in done]
    workers = min(max(1, concurrency), len(pending))
    deadline_s = eval_deadline([request_timeout(r, timeout_s) for r in pending])
    deadline = time.monotonic() + deadline_s
    work = _Work(pending, pool)
    write_lock = threading.Lock()
    restart_locks = {id(server): threading.Lock() for server in pool}
    progress = {id(server): _Progress() for server in pool}
    stopped = threading.Event()
    streak = _Streak()
    results: queue.SimpleQueue[Record | BaseException] = queue.SimpleQueue()

    def serve(server: Server) -> None:
        while not stopped.is_set():
            request = work.take(server, stopped)
            if request is None:
                return
            try:
                wait_s = request_timeout(request, timeout_s)
                lock = restart_locks[id(server)]
                watch = progress[id(server)]
                record, by_connection = _ask(server, request, wait_s, lock, stopped, watch)
                if stopped.is_set():
                    return  # the run was left: nothing more is written or said
                if by_connection and len(pool) > 1:
                    handed, lost = work.lost(server, request, record.error)
                    if lost is not None and on_stopped:
                        with write_lock:
                            on_stopped(lost)
                    if handed:
                        continue  # take() ends this worker: its server is gone
                record, line = _jsonl_line(record)
                with write_lock:  # one at a time: on_record prints, and print is not atomic
                    with out.open("a", encoding="utf-8") as fh:
                        fh.write(line + "\n")
                    if on_record:
                        on_record(record)
                    if streak.ended_by(record):
                        stopped.set()  # under the lock: no worker takes another request
                work.finished(server, record)
            except BaseException as err:
                results.put(err)
                return
            results.put(record)

    # Started in turn across the servers: when there are no more requests than workers, each
    # server's first workers take the first requests rather than one server taking them all.
    for n in range(workers):
        for number, server in enumerate(pool):
            name = f"eval-request-{n}" if len(pool) == 1 else f"eval-server{number}-request-{n}"
            threading.Thread(target=serve, args=(server,), name=name, daemon=True).start()
    why = ""
    try:
        for _ in pending:
            try:
                item = results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                why = f"the eval's deadline passed ({deadline_s:.0f} s for {len(pending)} requests)"
                break
            if isinstance(item, BaseException):
                raise item
            done[item.key] = item
            if streak.why:
                why = streak.why
                break
    finally:
        stopped.set()
    for request in requests:
        if request.key not in done:
            done[request.key] = _record(request, None, NOT_ANSWERED + why, time.monotonic(), 0)
    return Asked([done[r.key] for r in requests], work.stopped())


class _Streak:
    """Requests in a row without a usable answer, counted as each one is written (under the
    write lock), so the one that makes FAILURES_IN_A_ROW stops the run before any worker takes
    another request; counted where results are read instead, fast failures (an HTTP 404 each)
    let the workers run ahead of the count."""

    def __init__(self) -> None:
        self.in_a_row = 0
        self.why = ""

    def ended_by(self, record: Record) -> bool:
        self.in_a_row = self.in_a_row + 1 if record.error else 0
        if self.in_a_row >= FAILURES_IN_A_ROW and not self.why:
            self.why = (
                f"the eval stopped after {self.in_a_row} requests in a row got no usable "
                f"answer (the last: {record.error})"
            )
        return bool(self.why)


class _Work:
    """The one queue every server's workers take from, and which servers are gone.

    A worker waits while the queue is empty but requests are still in flight: a server that
    stops hands its requests back, and someone must be left to take them."""

    def __init__(self, pending: Sequence[Request], servers: Sequence[Server]) -> None:
        self._todo: deque[Request] = deque(pending)
        self._busy = 0
        self._changed = threading.Condition()
        self._servers = list(servers)
        self._gone: dict[int, tuple[str, int, int]] = {}
        """id(server) -> (why, answers before, requests queued) when it was found gone."""
        self._answered: Counter[int] = Counter()
        self._handed: Counter[int] = Counter()

    def take(self, server: Server, stopped: threading.Event) -> Request | None:
        with self._changed:
            while True:
                if id(server) in self._gone or stopped.is_set():
                    return None
                if self._todo:
                    self._busy += 1
                    return self._todo.popleft()
                if self._busy == 0:
                    return None  # nothing queued and nothing can come back: all done
                self._changed.wait(0.5)  # (0.5: `stopped` is an Event, not this condition)

    def finished(self, server: Server, record: Record) -> None:
        with self._changed:
            self._busy -= 1
            if record.response is not None:
                self._answered[id(server)] += 1
            self._changed.notify_all()

    def lost(self, server: Server, request: Request, why: str) -> tuple[bool, Stopped | None]:
        """After `request` failed by connection on `server`: whether it went back to the queue
        (the server is gone and another still answers), and the Stopped when this failure
        found the server gone (the first of its workers to; the others hand back only).
        Not handed back: this failure is the request's record, as with a single server."""
        with self._changed:
            if id(server) in self._gone:
                self._hand_back(server, request)
                return True, None
            if not self._others(server):
                return False, None
        # Probed outside the lock: up to its timeout, and the other workers carry on meanwhile.
        if lists_a_model(server):
            return False, None  # a passing fault: the server still answers
        with self._changed:
            if id(server) in self._gone:
                self._hand_back(server, request)
                return True, None
            if not self._others(server):
                return False, None  # the others went while this one was probed
            self._gone[id(server)] = (why, self._answered[id(server)], len(self._todo))
            self._hand_back(server, request)
            return True, self._stopped(server)

    def _others(self, server: Server) -> list[Server]:
        return [s for s in self._servers if s is not server and id(s) not in self._gone]

    def _hand_back(self, server: Server, request: Request) -> None:
        self._todo.appendleft(request)  # first in line: it has waited longest
        self._busy -= 1
        self._handed[id(server)] += 1
        self._changed.notify_all()

    def _stopped(self, server: Server) -> Stopped:
        why, after, queued = self._gone[id(server)]
        return Stopped(server.url, why, after, self._handed[id(server)], queued)

    def stopped(self) -> tuple[Stopped, ...]:
        with self._changed:
            return tuple(self._stopped(s) for s in self._servers if id(s) in self._gone)


_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


class _Overdue(Exception):
    """The server answered nothing within the window of a request in flight (`_Progress`)."""

    def __init__(self, window_s: float, in_flight: int, single_s: float) -> None:
        super().__init__(
            f"no answer within {window_s:g} s (the server answered no request meanwhile; "
            f"{in_flight} in flight, {single_s:g} s each)"
        )


def _post(
    url: str,
    body: dict[str, Any],
    single_s: float,
    watch: _Progress,
    stopped: threading.Event,
) -> httpx.Response:
    """POST `body`, waiting while the server makes progress (`_Progress.overdue`).

    The request runs on a daemon thread, so a wait can end before the socket does: httpx
    cannot be interrupted, and a server that trickles bytes never trips its read timeout.
    A request given up is left to finish or time out there; its answer is dropped."""
    box: list[httpx.Response | BaseException] = []
    done = threading.Event()
    # The socket's own bound: every request this worker could be queued behind, and one more.
    cap = single_s * (1 + _MAX_QUEUE)

    def send() -> None:
        try:
            box.append(httpx.post(url, json=body, timeout=cap))
        except BaseException as err:  # handed to the waiting worker below
            box.append(err)
        finally:
            done.set()

    sent_at = time.monotonic()
    watch.sent()
    answered = False
    try:
        threading.Thread(target=send, name="eval-post", daemon=True).start()
        while not done.wait(POLL_S):
            if stopped.is_set():
                raise httpx.ReadError("the eval was left")
            late = watch.overdue(sent_at, single_s)
            if late is not None:
                raise _Overdue(*late, single_s)
        (outcome,) = box
        if isinstance(outcome, BaseException):
            raise outcome
        answered = True
        return outcome
    finally:
        watch.settled(answered)


_MAX_QUEUE = 64
"""The most requests a socket's own timeout assumes ahead of it (`_post`); a server that
stalls is given up by `_Progress` long before."""


def _ask(
    server: Server,
    request: Request,
    timeout_s: float,
    restart_lock: threading.Lock,
    stopped: threading.Event,
    watch: _Progress,
) -> tuple[Record, bool]:
    """The record of `request` asked of `server`, and whether it failed by connection (the
    server may be gone: another server may take the request). `timeout_s` is one request's
    wait, per request in flight on `server` (`watch`) since its last answer."""
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        url = f"{server.url}/v1/chat/completions"
        body = {**request.body, "model": server.model_id}
        if server.adapters:
            body["adapters"] = server.adapters
        try:
            response = _post(url, body, timeout_s, watch, stopped)
            if response.status_code >= 500 and not server.alive and attempts == 1:
                raise httpx.RemoteProtocolError("server died answering")
            answer, error = _answer(response)
            return _record(request, answer, error, started, attempts, server), False
        except _Overdue as late:
            return _record(request, None, str(late), started, attempts, server), False
        except httpx.TimeoutException:
            error = f"no answer within {timeout_s * (1 + _MAX_QUEUE):g} s"
            return _record(request, None, error, started, attempts, server), False
        except _TRANSPORT_ERRORS as err:
            if attempts > 1 or not _restart_if_dead(server, restart_lock, stopped):
                error = f"{type(err).__name__}: {err}"
                return _record(request, None, error, started, attempts, server), True
        except httpx.HTTPError as err:  # any other transport fault is this request's, not the run's
            error = f"{type(err).__name__}: {err}"
            return _record(request, None, error, started, attempts, server), False


def _answer(response: httpx.Response) -> tuple[dict[str, Any] | None, str]:
    """The completion in `response`, or None and why it is no usable answer, in one line
    that names the cause: the status and the server's own error text (mlx_lm.server answers
    404 with the exception when the model fails to load), or what the body is instead."""
    if not response.is_success:
        return (
            None,
            f"HTTP {response.status_code} {response.reason_phrase}: {_server_error(response)}",
        )
    if not response.content.strip():
        return None, f"HTTP {response.status_code} with an empty body"
    try:
        answer = response.json()
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep to decode
        return None, f"a body that is not JSON ({type(err).__name__}): {_excerpt(response.text)}"
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        return None, f"a body without choices: {_excerpt(response.text)}"
    return answer, ""


def _server_error(response: httpx.Response) -> str:
    """The server's error text: OpenAI's {"error": {"message": ...}}, mlx_lm's {"error": str}."""
    with contextlib.suppress(ValueError, RecursionError, KeyError, TypeError):
        error = response.json()["error"]
        return _excerpt(str(error.get("message", error) if isinstance(error, dict) else error))
    return _excerpt(response.text) if response.text.strip() else "(no body)"


def _excerpt(text: str, limit: int = 200) -> str:
    """`text` on one line and cut short: an error is one line of the report."""
    return repr(" ".join(text[: 4 * limit].split())[:limit])


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


def _jsonl_line(record: Record) -> tuple[Record, str]:
    """The record and its line in responses.jsonl. A body JSON reads but cannot write back
    (nested deeper than the encoder recurses) is not kept: the record says so instead, as a
    request without a usable answer (a crash here would end the whole eval, and a body kept
    that no rerun can read would be asked again forever)."""
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    try:  # the fields one level deep: dataclasses.asdict recurses in Python, twice per level
        return record, json.dumps(fields)
    except (RecursionError, ValueError) as err:
        kept = dataclasses.replace(
            record,
            response=None,
            error=f"a body nested too deep to keep ({type(err).__name__}); the server's reply "
            "is not a chat completion",
        )
        return kept, json.dumps(asdict(kept))


def _record(
    request: Request,
    response: dict[str, Any] | None,
    error: str,
    started: float,
    attempts: int,
    server: Server | None = None,
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
        server=server.url if server is not None else "",
    )
