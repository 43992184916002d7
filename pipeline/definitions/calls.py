"""Tool calls in every syntax the gate meets: find, parse and render them.

One module so that the data converter, the preflight and the scorer agree on what a call is.
Only text inside `<tool_call>` tags, a server's structured `tool_calls`, or a call expression
inside `execute_code`'s Python counts as a call: prose that names a tool never does.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Syntax = Literal["json", "xml"]

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
CODE_WRAPPER = "execute_code"

_BLOCK_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_XML_FUNCTION_RE = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|\Z)", re.DOTALL)
_XML_PARAMETER_RE = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.DOTALL)


class CallParseError(ValueError):
    """A tool call was found but could not be read; the message says why."""


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def openai(self) -> dict[str, Any]:
        """The structured form chat templates and mlx_lm's server use (arguments a mapping)."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Block:
    """The text of one `<tool_call>` block, as a model wrote it."""

    inner: str
    closed: bool
    start: int

    @property
    def syntax(self) -> Syntax | None:
        body = self.inner.strip()
        if body.startswith("{"):
            return "json"
        if body.startswith("<function="):
            return "xml"
        return None


def find_blocks(text: str) -> list[Block]:
    """Every `<tool_call>` block in text, including one cut off before its end tag."""
    return [
        Block(m.group(1), m.group(0).endswith(TOOL_CALL_END), m.start())
        for m in _BLOCK_RE.finditer(text)
    ]


def parse_block(block: Block, schemas: Mapping[str, Mapping[str, Any]] | None = None) -> Call:
    """Read one block in whichever syntax it is written; `schemas` types XML values."""
    if not block.closed:
        raise CallParseError("tool call is cut off before </tool_call>")
    if block.syntax == "json":
        return parse_json(block.inner)
    if block.syntax == "xml":
        return parse_xml(block.inner, schemas)
    raise CallParseError(f"tool call is neither JSON nor XML: {block.inner.strip()[:60]!r}")


def parse_json(inner: str) -> Call:
    try:
        obj = json.loads(inner.strip())
    except json.JSONDecodeError as err:
        raise CallParseError(f"tool call is not valid JSON ({err})") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise CallParseError('JSON tool call needs an object with a string "name"')
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as err:
            raise CallParseError(f"arguments of {obj['name']} are not valid JSON") from err
    if not isinstance(args, dict):
        raise CallParseError(f"arguments of {obj['name']} are not an object")
    return Call(obj["name"], args)


def parse_xml(inner: str, schemas: Mapping[str, Mapping[str, Any]] | None = None) -> Call:
    match = _XML_FUNCTION_RE.search(inner)
    if match is None:
        raise CallParseError("XML tool call has no <function=NAME>")
    name, body = match.group(1), match.group(2)
    properties = (schemas or {}).get(name, {}).get("properties", {})
    arguments = {}
    for arg, raw in _XML_PARAMETER_RE.findall(body):
        value = raw.removeprefix("\n").removesuffix("\n")
        arguments[arg] = _typed(value, properties.get(arg, {}).get("type"))
    return Call(name, arguments)


def _typed(value: str, json_type: str | None) -> Any:
    """XML carries text; the tool's schema says what the text stands for."""
    if json_type in (None, "string"):
        return value
    if json_type == "boolean":
        return value.strip().lower() == "true"
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def render(call: Call, syntax: Syntax) -> str:
    """A call as raw text, the way the Qwen3 (json) and Qwen3-Coder (xml) templates write it."""
    if syntax == "json":
        payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        return f"{TOOL_CALL_START}\n{payload}\n{TOOL_CALL_END}"
    params = "".join(
        f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
        for k, v in call.arguments.items()
    )
    return f"{TOOL_CALL_START}\n<function={call.name}>\n{params}</function>\n{TOOL_CALL_END}"


# --- code mode --------------------------------------------------------------------------------

NON_LITERAL = "<non-literal>"


def code_calls(code: str, signatures: Mapping[str, Sequence[str]]) -> list[Call]:
    """Calls to known tools inside Python code, in source order, with literal arguments.

    Positional arguments are named by the tool's parameter order; an argument that is not a
    literal is kept as NON_LITERAL so a scorer can tell "wrong value" from "computed value".
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise CallParseError(
            f"execute_code's Python does not parse: {err.msg} (line {err.lineno})"
        ) from err
    calls = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        name = node.func.id
        if name not in signatures:
            continue
        params = list(signatures[name])
        arguments: dict[str, Any] = {}
        for i, arg in enumerate(node.args):
            key = params[i] if i < len(params) else f"_{i}"
            arguments[key] = _literal(arg)
        for kw in node.keywords:
            if kw.arg is not None:
                arguments[kw.arg] = _literal(kw.value)
        calls.append((node.lineno, node.col_offset, Call(name, arguments)))
    return [c for _, _, c in sorted(calls, key=lambda t: (t[0], t[1]))]


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return NON_LITERAL


def render_code(calls: Sequence[Call]) -> str:
    """Python that makes the calls, one per line, with keyword arguments."""
    return "\n".join(
        f"{c.name}({', '.join(f'{k}={v!r}' for k, v in c.arguments.items())})" for c in calls
    )


def wrap_code(calls: Sequence[Call]) -> Call:
    return Call(CODE_WRAPPER, {"code": render_code(calls)})


def unwrap(calls: Sequence[Call], signatures: Mapping[str, Sequence[str]]) -> list[Call]:
    """Replace each execute_code call by the tool calls its code makes."""
    out: list[Call] = []
    for call in calls:
        if call.name == CODE_WRAPPER:
            out.extend(code_calls(str(call.arguments.get("code", "")), signatures))
        else:
            out.append(call)
    return out


def structured_calls(message: Mapping[str, Any]) -> list[Call]:
    """The calls of an OpenAI-style assistant message's `tool_calls` (arguments map or JSON)."""
    out = []
    for i, tc in enumerate(message.get("tool_calls") or []):
        fn = tc.get("function", tc) if isinstance(tc, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise CallParseError(f"tool_calls[{i}] has no function name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as err:
                raise CallParseError(f"tool_calls[{i}] arguments are not valid JSON") from err
        if not isinstance(args, dict):
            raise CallParseError(f"tool_calls[{i}] arguments are not an object")
        out.append(Call(fn["name"], args))
    return out


def message_calls(
    message: Mapping[str, Any],
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    strict: bool = False,
) -> list[Call]:
    """The calls of one chat message: structured ones, then raw blocks in content (not unwrapped).

    With `strict`, a block that cannot be read raises CallParseError; otherwise it is left out
    (checks that care report unreadable calls separately).
    """
    calls = structured_calls(message)
    content = message.get("content")
    if isinstance(content, str) and TOOL_CALL_START in content:
        for block in find_blocks(content):
            try:
                calls.append(parse_block(block, schemas))
            except CallParseError:
                if strict:
                    raise
    return calls
