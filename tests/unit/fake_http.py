"""A loopback HTTP server for the fault tests: real sockets, answers written by each test."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.eval.serve import LOOPBACK

RELEASE_S = 60
"""The longest a handler told to stall waits; the server's end releases it sooner."""


class FakeHandler(BaseHTTPRequestHandler):
    """Quiet, with a helper that sends one JSON body; `released` is set when the server ends,
    so a handler that stalls (`released.wait(RELEASE_S)`) never outlives its test."""

    released: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.send_bytes(status, json.dumps(payload).encode())

    def send_bytes(self, status: int, body: bytes, length: int | None = None) -> None:
        """`length` other than the body's: a Content-Length the body does not keep."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serving(handler: type[FakeHandler]) -> Generator[str]:
    """The URL of a server on a free loopback port answering with `handler`, until the block
    ends; then stalled handlers are released and the port closed."""
    released = threading.Event()
    bound = type(handler.__name__, (handler,), {"released": released})
    httpd = ThreadingHTTPServer((LOOPBACK, 0), bound)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://{LOOPBACK}:{httpd.server_address[1]}"
    finally:
        released.set()
        httpd.shutdown()
        httpd.server_close()


READ_FILE_REPLY = {
    "choices": [
        {
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ]
}


class ReadFileHandler(FakeHandler):
    """A canned model server (one model, "canned") that calls read_file for every request:
    right for some prompts of a set, wrong for most, the same every time."""

    def do_GET(self) -> None:
        self.send_json({"object": "list", "data": [{"id": "canned"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_json(READ_FILE_REPLY)
