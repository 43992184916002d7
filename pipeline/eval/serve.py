"""Serve a model with the real `mlx_lm.server` on a loopback port, and always stop it.

The eval talks to the same server a user would run, so the tool parser, the chat template and
the stop handling under test are mlx_lm's own. The server's log goes to the run folder: the
only place it says "Failed to parse tool call" when a call was cut off.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from pipeline.builder.runner import die_with_parent
from pipeline.core.blas import child_env
from pipeline.core.errors import BadInput, Fault
from pipeline.core.progress import Heartbeat, clock

LOOPBACK = "127.0.0.1"


class ServerError(Fault):
    """The server could not be started or stopped; the message holds the log's last lines."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


@dataclass
class Server:
    """A running `mlx_lm.server` process (or, with `process` None, one someone else runs)."""

    url: str
    model_id: str
    model_dir: Path | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    restarts: int = 0
    startup_timeout_s: float = 180.0
    adapters: str | None = None
    """Adapters the server applies (`--adapter-path`). mlx_lm's server uses them only for a
    request naming its default model, so every request also names them (`adapters`)."""
    batch: int | None = None
    """The requests it decodes and prefills at once (None: mlx_lm's defaults)."""
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        _RUNNING.discard(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Start a fresh process on the same model (after a crash)."""
        if self.model_dir is None or self.log_path is None:
            raise ServerError(
                f"cannot restart the server at {self.url}: routegate did not start it"
            )
        self.stop()
        fresh = start_server(
            self.model_dir,
            self.log_path,
            startup_timeout_s=self.startup_timeout_s,
            adapters=Path(self.adapters) if self.adapters else None,
            batch=self.batch,
        )
        self.url, self.model_id, self.process, self.port = (
            fresh.url,
            fresh.model_id,
            fresh.process,
            fresh.port,
        )
        self._log = fresh._log
        self.restarts += 1


_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A crash or Ctrl-C between start and teardown must not leave a server holding a port.
    for process in list(_RUNNING):
        if process.poll() is None:
            process.kill()


def _silent(_: str) -> None:
    pass


def check_model_folder(folder: Path) -> None:
    """Bad input naming `folder` unless mlx_lm can load it: a config.json object with a
    `model_type` and `model*.safetensors` weights beside it. mlx_lm.server loads the model on
    the first request, so a broken folder would otherwise start, list the model, and answer
    404 to every request, its cause only in server.log."""
    config = folder / "config.json"
    if not folder.is_dir():
        raise BadInput(f"{folder} does not exist; pass a model folder")
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{folder} is not a model folder (no config.json)") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{config} does not load as JSON ({err}); pass a model folder") from err
    if not isinstance(settings, dict) or not isinstance(settings.get("model_type"), str):
        raise BadInput(f"{config} names no model_type: not a model's config; pass a model folder")
    if not any(folder.glob("model*.safetensors")):
        raise BadInput(f"{folder} holds no weights (model*.safetensors); pass a model folder")


def start_server(
    model_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    startup_timeout_s: float = 180.0,
    extra_args: tuple[str, ...] = (),
    adapters: Path | None = None,
    batch: int | None = None,
    log: Callable[[str], None] = _silent,
) -> Server:
    """Start `python -m mlx_lm server` for model_dir and wait until it lists the model,
    saying so through `log` (and every 10 s while the model loads). `batch`: the requests it
    decodes and prefills together (`--decode-concurrency`, `--prompt-concurrency`), as many
    as the eval keeps in flight."""
    check_model_folder(model_dir)
    attempts = 1 if port is not None else 3
    last = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        if not port_is_free(chosen):
            raise ServerError(f"port {chosen} on {LOOPBACK} is already taken")
        args = (*extra_args, "--adapter-path", str(adapters)) if adapters else extra_args
        if batch:
            args = (*args, "--decode-concurrency", str(batch), "--prompt-concurrency", str(batch))
        server = _launch(model_dir, log_path, chosen, args, startup_timeout_s)
        server.adapters = str(adapters) if adapters else None
        server.batch = batch
        log(f"[serve] starting mlx_lm.server on {server.url} ({model_dir.name})")
        try:
            with Heartbeat(log, lambda t: f"[serve] loading the model {clock(t)}"):
                _wait_ready(server, startup_timeout_s)
            log(f"[serve] ready: {server.model_id}")
            return server
        except ServerError as err:
            server.stop()
            last = str(err)
            if port_is_free(chosen):  # not a lost race for the port: a real failure
                break
    raise ServerError(last)


def _launch(
    model_dir: Path, log_path: Path, port: int, extra_args: tuple[str, ...], timeout: float
) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    hub_cache = log_path.parent / "hf-cache"
    hub_cache.mkdir(exist_ok=True)
    # /v1/models answers an empty body when the hub cache folder is missing (shared notes);
    # an empty cache of our own also keeps other downloaded models out of the listing.
    env = {**child_env(), "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm",
        "server",
        "--model",
        str(model_dir),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *extra_args,
    ]
    log = log_path.open("ab")
    log.write(f"\n--- routegate: starting mlx_lm.server on port {port} ---\n".encode())
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    # a SIGTERM to the eval runs no atexit: the server must go with it, not hold its port
    linux = sys.platform.startswith("linux")
    process = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=die_with_parent if linux else None,
    )
    _RUNNING.add(process)
    return Server(
        url=f"http://{LOOPBACK}:{port}",
        model_id="",
        model_dir=model_dir,
        log_path=log_path,
        process=process,
        port=port,
        startup_timeout_s=timeout,
        _log=log,
    )


def _wait_ready(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive:
            raise ServerError(
                f"mlx_lm.server exited with code {server.process and server.process.returncode} "
                f"while starting; log {server.log_path}:\n{log_tail(server.log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError, ServerError):
            server.model_id = first_model_id(server.url, timeout_s=5)
            return
        time.sleep(0.25)
    raise ServerError(
        f"mlx_lm.server did not answer /v1/models within {timeout_s:.0f} s; "
        f"log {server.log_path}:\n{log_tail(server.log_path)}"
    )


def server_root(url: str) -> str:
    """`http://host:port`, from any form users give: with or without `/v1` (the form OpenAI
    clients and vLLM's docs use), with or without a trailing slash. The client appends the
    API paths (`/v1/models`, `/v1/chat/completions`) to this root."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")].rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise BadInput(f"--server-url {url!r}: give http://host:port or http://host:port/v1")
    return root


def first_model_id(url: str, timeout_s: float = 10.0) -> str:
    """The first model the server lists: the one it serves (the seed's Task 5 fix)."""
    url = server_root(url)
    response = httpx.get(f"{url}/v1/models", timeout=timeout_s)
    response.raise_for_status()
    try:
        models = response.json().get("data") or []
    except ValueError as err:
        raise ServerError(f"{url}/v1/models answered no JSON: {response.text[:200]!r}") from err
    if not models:
        raise ServerError(f"{url}/v1/models lists no model")
    return str(models[0]["id"])


def connect(url: str) -> Server:
    """A server someone else runs (`--server-url`): nothing to start or stop."""
    root = server_root(url)
    try:
        return Server(url=root, model_id=first_model_id(root))
    except (httpx.HTTPError, ServerError) as err:
        raise ServerError(f"no OpenAI-compatible server answers at {url}: {err}") from err


def server_roots(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The root of each `--server-url` given (one string or several), each server once and in
    the order given: `http://h:1` and `http://h:1/v1/` are one server, asked once."""
    given = [urls] if isinstance(urls, str) else list(urls)
    if not given:
        raise BadInput("--server-url: give at least one http://host:port")
    return tuple(dict.fromkeys(server_root(url) for url in given))


def same_model(listed: Sequence[tuple[str, str]]) -> str:
    """The one model id that every (root URL, id) pair lists; bad input naming each URL and its
    id when they differ: answers of two models pooled into one score would judge neither."""
    ids = {model_id for _, model_id in listed}
    if len(ids) > 1:
        each = ", ".join(f"{url} serves {model_id!r}" for url, model_id in listed)
        raise BadInput(
            f"--server-url: the servers serve different models ({each}); "
            "give servers of one model, or evaluate each on its own"
        )
    return next(iter(ids), "")


def connect_all(urls: str | Sequence[str]) -> list[Server]:
    """Every server given (`--server-url`, once or several times), checked to serve one
    model: one that does not answer is a fault naming it (as for one server), different
    model ids are bad input naming each."""
    servers = [connect(root) for root in server_roots(urls)]
    same_model([(s.url, s.model_id) for s in servers])
    return servers


def lists_a_model(server: Server, timeout_s: float = 5.0) -> bool:
    """Whether `server` still answers /v1/models: a request that failed by connection on a
    server that still lists its model was a passing fault, not a server that stopped."""
    if not server.alive:
        return False
    try:
        first_model_id(server.url, timeout_s=timeout_s)
    except (httpx.HTTPError, ServerError):
        return False
    return True


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
