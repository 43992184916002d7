"""Chat examples in mlx_lm's JSONL format: read and validate, write, and the calls of a message.

Every example keeps where it came from (file and line), so a check that fails can name the
exact line a user has to fix.
"""

from __future__ import annotations

import io as stdio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.definitions.calls import Call, render
from pipeline.definitions.calls import message_calls as read_message_calls
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import CallSyntax

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid")


class DataError(BadInput):
    """A data or templates file is missing or invalid; the message names file and line (or key).

    A `BadInput` (exit code 2) and so a ValueError.
    """


@dataclass(frozen=True)
class Example:
    file: Path
    line: int
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file.name}:{self.line}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.record["messages"]

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.record.get("tools")


def message_problem(record: Any) -> str | None:
    """Why a JSON value is not a chat example mlx_lm can train on, or None if it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'needs a non-empty "messages" list'
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list):
        return '"tools" must be a list'
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] is not an object"
        role = msg.get("role")
        if role not in ROLES:
            return f"messages[{i}].role is {role!r}, not one of {', '.join(ROLES)}"
        content = msg.get("content")
        has_calls = bool(msg.get("tool_calls"))
        if not isinstance(content, str) and not (role == "assistant" and has_calls):
            return f"messages[{i}] ({role}) needs string content"
        if has_calls and role != "assistant":
            return f"messages[{i}] has tool_calls but role {role}"
        if role == "system" and i != 0:
            return f"messages[{i}] is a system message after the first turn"
    non_system = [m["role"] for m in messages if m["role"] != "system"]
    if not non_system or non_system[0] != "user":
        return "the first non-system message must be from the user"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's (it is the trained target)"
    return None


def read_text(path: Path) -> str:
    """A UTF-8 file's text; unreadable or non-UTF-8 (named with line and byte offset) raises."""
    try:
        return io.read_text(path)
    except BadInput as err:
        raise DataError(str(err)) from err


def read_jsonl(path: Path) -> list[Example]:
    """All examples of one file; the first bad line raises DataError with file and line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    examples = []
    # Lines as a text file reads them (universal newlines), never str.splitlines: that would
    # also split at U+2028 and friends, which JSON leaves unescaped inside strings.
    for number, text in enumerate(stdio.StringIO(read_text(path), newline=None), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        problem = message_problem(record)
        if problem:
            raise DataError(f"{path}:{number}: {problem}")
        examples.append(Example(path, number, record))
    return examples


def read_split(folder: Path, split: str) -> list[Example]:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    return read_jsonl(folder / f"{split}.jsonl")


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write atomically, so a crash never leaves a half-written split behind."""
    io.write_jsonl(path, records)


def call_message(calls: Sequence[Call], syntax: CallSyntax, prose: str = "") -> dict[str, Any]:
    """The assistant message that makes `calls`, stored in `syntax`, after optional prose."""
    if syntax == "structured":
        return {"role": "assistant", "content": prose, "tool_calls": [c.openai() for c in calls]}
    text = "\n".join(render(c, syntax) for c in calls)
    return {"role": "assistant", "content": f"{prose}\n{text}" if prose else text}


def message_calls(message: Mapping[str, Any], catalog: Catalog | None = None) -> list[Call]:
    """The calls of one assistant message in any syntax; an unreadable one raises."""
    return read_message_calls(message, (catalog or load_catalog()).schemas(), strict=True)
