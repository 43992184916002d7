"""Rewrite a dataset's tool calls in another syntax (structured, JSON or XML) and nothing else.

Prose in the assistant turn stays as content, other keys stay as they are, and a line that
cannot be converted is copied unchanged and reported with its line number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core import io
from pipeline.data.jsonl import SPLITS, DataError, call_message, message_calls, read_text
from pipeline.definitions.calls import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    Call,
    CallParseError,
    find_blocks,
    parse_block,
    structured_calls,
)
from pipeline.definitions.catalog import Catalog, load_catalog

Target = Literal["structured", "json", "xml"]
TARGETS: tuple[Target, ...] = ("structured", "json", "xml")
_RESPONSE_RE = re.compile(r"\s*<tool_response>\n?(.*?)\n?</tool_response>\s*", re.DOTALL)


class ConvertError(ValueError):
    """One record cannot be converted without changing or losing a call."""


@dataclass(frozen=True)
class Problem:
    file: Path | None
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else f"record {self.line}"
        return f"{where}: {self.message}"


def _calls_key(calls: Sequence[Call]) -> str:
    return json.dumps([[c.name, c.arguments] for c in calls], sort_keys=True)


def _tool_responses(content: Any) -> list[str] | None:
    """The responses of a seed-style user message made only of <tool_response> blocks."""
    if not isinstance(content, str) or "<tool_response>" not in content:
        return None
    pos, out = 0, []
    while pos < len(content):
        match = _RESPONSE_RE.match(content, pos)
        if match is None:
            return None
        out.append(match.group(1))
        pos = match.end()
    return out or None


def _read_assistant(
    message: Mapping[str, Any], index: int, catalog: Catalog, to: Target
) -> tuple[list[Call], str]:
    where = f"messages[{index}]"
    try:
        structured = structured_calls(message)
    except CallParseError as err:
        raise ConvertError(f"{where}: {err}") from err
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ConvertError(f"{where}: content is not a string")
    blocks = find_blocks(content)
    if structured and blocks:
        raise ConvertError(f"{where} has both tool_calls and <tool_call> text; which comes first?")
    if structured:
        return structured, content.strip()
    schemas = catalog.schemas()
    calls, prose, pos = [], [], 0
    for number, block in enumerate(blocks, start=1):
        try:
            call = parse_block(block, schemas)
        except CallParseError as err:
            raise ConvertError(f"{where}: tool call {number}: {err}") from err
        if block.syntax == "xml" and call.name not in schemas and call.arguments:
            raise ConvertError(
                f"{where}: XML call to {call.name!r}, which is not in the catalog: its argument "
                "types are unknown, so converting them could change them"
            )
        calls.append(call)
        prose.append(content[pos : block.start])
        pos = block.start + len(TOOL_CALL_START) + len(block.inner) + len(TOOL_CALL_END)
    prose.append(content[pos:])
    return calls, "".join(prose).strip()


def convert_record(record: Any, to: Target, catalog: Catalog | None = None) -> dict[str, Any]:
    """One record with its calls in `to`'s syntax; raises ConvertError when that would lose data."""
    if to not in TARGETS:
        raise ValueError(f"cannot convert to {to!r}; choose one of {', '.join(TARGETS)}")
    catalog = catalog or load_catalog()
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ConvertError('not a chat example (needs an object with a "messages" list)')
    before: list[str] = []
    messages: list[Any] = []
    for i, message in enumerate(record["messages"]):
        if not isinstance(message, dict):
            raise ConvertError(f"messages[{i}] is not an object")
        role = message.get("role")
        if role == "assistant":
            calls, prose = _read_assistant(message, i, catalog, to)
            if not calls:
                messages.append(message)
                continue
            before.append(_calls_key(calls))
            new = {k: v for k, v in message.items() if k not in ("content", "tool_calls")}
            new.update(call_message(calls, to, prose))
            if to == "structured" and message.get("tool_calls"):
                for tc, old in zip(new["tool_calls"], message["tool_calls"], strict=True):
                    if isinstance(old, dict) and "id" in old:
                        tc["id"] = old["id"]
            messages.append(new)
        elif role == "user" and to == "structured":
            responses = _tool_responses(message.get("content"))
            if responses is None:
                messages.append(message)
            else:
                messages.extend({"role": "tool", "content": r} for r in responses)
        else:
            messages.append(message)
    out = dict(record)
    out["messages"] = messages
    after = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant":
            try:
                calls = message_calls(message, catalog)
            except CallParseError as err:  # pragma: no cover - rendering guards against it
                raise ConvertError(
                    f"messages[{i}]: the converted call does not parse: {err}"
                ) from err
            if calls:
                after.append(_calls_key(calls))
    if after != before:
        raise ConvertError(
            f"converting to {to} would change a call's arguments (e.g. a value whose type the "
            "XML form cannot carry)"
        )
    return out


def convert(
    records: Iterable[Any], to: Target, catalog: Catalog | None = None
) -> tuple[list[Any], list[Problem]]:
    """Every record converted to `to`; one that cannot be is kept unchanged and reported."""
    catalog = catalog or load_catalog()
    out: list[Any] = []
    problems: list[Problem] = []
    for number, record in enumerate(records, start=1):
        try:
            out.append(convert_record(record, to, catalog))
        except ConvertError as err:
            out.append(record)
            problems.append(Problem(None, number, str(err)))
    return out, problems


def convert_file(
    src: Path, dst: Path, to: Target, catalog: Catalog | None = None
) -> tuple[int, list[Problem]]:
    """Convert one JSONL file line by line; returns (lines converted, problems).

    Output line N is input line N, converted, or copied unchanged when it could not be.
    """
    catalog = catalog or load_catalog()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src} does not exist")
    lines = read_text(src).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out_lines: list[str] = []
    problems: list[Problem] = []
    converted = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            out_lines.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(src, number, f"not valid JSON ({err.msg}); copied unchanged"))
            out_lines.append(line)
            continue
        try:
            new = convert_record(record, to, catalog)
        except ConvertError as err:
            problems.append(Problem(src, number, f"{err}; copied unchanged"))
            out_lines.append(line)
            continue
        out_lines.append(json.dumps(new, ensure_ascii=False))
        converted += 1
    io.write_text(dst, "".join(line + "\n" for line in out_lines))
    return converted, problems


def convert_path(
    src: Path, dst: Path, to: Target, catalog: Catalog | None = None
) -> tuple[dict[Path, int], list[Problem]]:
    """Convert a .jsonl file, or a folder's train/valid(/test).jsonl, into dst."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        missing = [s for s in SPLITS if not (src / f"{s}.jsonl").is_file()]
        if missing:
            raise DataError(f"data folder {src} has no {missing[0]}.jsonl")
        if dst.exists() and not dst.is_dir():
            raise DataError(f"{dst} is a file; converting the folder {src} needs a folder")
        pairs = [(src / f"{s}.jsonl", dst / f"{s}.jsonl") for s in (*SPLITS, "test")]
        pairs = [(a, b) for a, b in pairs if a.is_file()]
    elif src.is_file():
        pairs = [(src, dst / src.name if dst.is_dir() else dst)]
    else:
        raise DataError(f"{src} does not exist")
    counts: dict[Path, int] = {}
    problems: list[Problem] = []
    for a, b in pairs:
        counts[b], found = convert_file(a, b, to, catalog)
        problems += found
    return counts, problems
