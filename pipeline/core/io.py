"""Atomic writes and line-oriented reads that name the file and line when they fail.

Every output routegate writes goes through `write_text`/`write_bytes`/`write_json`/
`write_jsonl`: a temporary file beside the target, then a rename, so a crash never leaves half
a file that a later run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInput

# mkstemp creates files 0600; outputs get the mode a plain open() would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parents made); a folder that cannot be written to is
    a `BadInput` naming it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise BadInput(
            f"cannot write {path}: {err.strerror or err}; make {_existing(path.parent)} "
            "writable or pass --workdir DIR"
        ) from err
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _existing(folder: Path) -> Path:
    """The folder itself, or its nearest ancestor that exists: the one to make writable."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_text(path: Path) -> str:
    """A UTF-8 text file; a missing file or a non-UTF-8 byte is a `BadInput` naming the file,
    the line and the byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise BadInput(f"{path} does not exist") from err
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise BadInput(
            f"{path}:{line}: byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8; "
            "save the file as UTF-8"
        ) from err


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line of a UTF-8 file."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            yield number, line


def read_json(path: Path) -> Any:
    """A JSON file; unreadable or invalid JSON is a `BadInput` naming the file."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
