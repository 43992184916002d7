"""The trained calls: do they parse with the base model's server parser, and which tools does
the loss see (mask-prompt trains the last assistant message alone)?"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.data import Example
from pipeline.definitions.calls import (
    CODE_WRAPPER,
    TOOL_CALL_START,
    Call,
    CallParseError,
    find_blocks,
    message_calls,
    unwrap,
)
from pipeline.definitions.catalog import Catalog
from pipeline.preflight.findings import Finding, clip
from pipeline.preflight.inputs import Rendered, Side, trained_messages, trained_text

ToolCounts = dict[str, dict[str, int]]
"""Per tool: examples that train its call ("trained"), and that hold it only in masked turns."""


def stored_syntax(message: dict[str, Any]) -> str | None:
    """How a data file writes an assistant turn's calls: structured, json, xml, or code."""
    if message.get("tool_calls"):
        names = {(tc.get("function") or tc).get("name") for tc in message["tool_calls"]}
        return "code" if names == {CODE_WRAPPER} else "structured"
    content = message.get("content") or ""
    if TOOL_CALL_START not in content:
        return None
    syntaxes = {b.syntax for b in find_blocks(content)}
    if f"<function={CODE_WRAPPER}>" in content or f'"name": "{CODE_WRAPPER}"' in content:
        return "code"
    return next(iter(sorted(s for s in syntaxes if s))) if syntaxes - {None} else "unknown"


def check_call_syntax(
    base: Side, rendered: Sequence[Rendered], catalog: Catalog, mask_prompt: bool
) -> Finding:
    syntaxes: Counter[str] = Counter()
    for r in rendered:
        for m in trained_messages(r.example, mask_prompt):
            if (syntax := stored_syntax(m)) is not None:
                syntaxes[syntax] += 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(syntaxes.items())) or "no calls"
    known = {*catalog.names(), CODE_WRAPPER}
    parse = _server_parser(base.parser)
    tools = [*catalog.openai_tools(), catalog.wrapper.openai()]
    calls = failures = 0
    first = ""
    for r in rendered:
        if r.error:
            continue
        for block in find_blocks(trained_text(r, mask_prompt)):
            calls += 1
            problem = _parse_problem(block.inner, block.closed, parse, tools, known, base.parser)
            if problem:
                failures += 1
                first = (
                    first or f"first: {r.example.id}: {problem}\n  call text: {clip(block.inner)}"
                )
    figure = f"{calls - failures}/{calls} trained calls parse with {base.parser} ({counts})"
    if calls == 0:
        return Finding(
            "call-syntax",
            "train",
            "fail",
            figure,
            "no trained target contains a tool call: the model would never learn to "
            "call (check the data and the mask setting)",
        )
    if failures:
        return Finding(
            "call-syntax",
            "train",
            "fail",
            figure,
            f"{first}\nmlx_lm's server for {base.ref} uses the {base.parser!r} parser: write "
            "the calls structurally (tool_calls) so the template renders its own syntax, or "
            "convert them: python -m pipeline data convert --to structured IN OUT",
        )
    return Finding("call-syntax", "train", "pass", figure)


def _server_parser(name: str | None) -> Callable[..., Any] | None:
    if name is None:
        return None
    return importlib.import_module(f"mlx_lm.tool_parsers.{name}").parse_tool_call


def _parse_problem(
    inner: str,
    closed: bool,
    parse: Callable[..., Any] | None,
    tools: list[dict[str, Any]],
    known: set[str],
    parser: str | None,
) -> str:
    if parse is None:
        return "the base template gives mlx_lm no tool parser: its server returns no tool_calls"
    if not closed:
        return "the call is cut off before </tool_call>"
    try:
        parsed = parse(inner, tools)
    except Exception as err:  # parsers raise ValueError, JSONDecodeError, KeyError...
        return f"{parser} cannot parse it ({type(err).__name__}: {err})"
    for call in parsed if isinstance(parsed, list) else [parsed]:
        name = call.get("name") if isinstance(call, dict) else None
        if name not in known:
            return f"{parser} reads a call to {name!r}, which is not in the catalog"
    return ""


def check_masking(
    examples: Sequence[Example], catalog: Catalog, mask_prompt: bool
) -> tuple[Finding, ToolCounts]:
    """Per tool: examples that train its call, and calls that sit only in masked turns."""
    signatures = catalog.signatures()
    schemas = catalog.schemas()
    per_tool = {name: {"trained": 0, "masked_only": 0} for name in catalog.names()}
    training_examples = masked_only_calls = 0
    for ex in examples:
        trained_msgs = trained_messages(ex, mask_prompt)
        trained = _tool_names(trained_msgs, signatures, schemas)
        masked = _tool_names(
            [m for m in ex.messages if m["role"] == "assistant" and m not in trained_msgs],
            signatures,
            schemas,
        )
        training_examples += bool(trained)
        for name in trained & per_tool.keys():
            per_tool[name]["trained"] += 1
        for name in (masked - trained) & per_tool.keys():
            per_tool[name]["masked_only"] += 1
            masked_only_calls += 1
    never = [n for n, c in per_tool.items() if c["trained"] == 0]
    figure = (
        f"{len(per_tool) - len(never)}/{len(per_tool)} tools trained; {training_examples}/"
        f"{len(examples)} examples train a call; {masked_only_calls} calls only in masked turns"
    )
    if never:
        hidden = [n for n in never if per_tool[n]["masked_only"]]
        detail = f"never trained: {', '.join(never)}"
        if hidden:
            detail += (
                f"\nonly in masked turns (mask_prompt={mask_prompt} trains the last assistant "
                f"message alone): {', '.join(hidden)}. End examples with the call, or split "
                "multi-turn examples so each call is a last assistant message."
            )
        return Finding("masking", "train", "fail", figure, detail), per_tool
    return Finding("masking", "train", "pass", figure), per_tool


def check_tool_trained(tool: str, counts: dict[str, int], mask_prompt: bool) -> Finding:
    """One tool of the catalog: is its call ever in a trained turn of train.jsonl?"""
    if counts["trained"] > 0:
        return Finding("tool-trained", tool, "pass", f"trained in {counts['trained']} examples")
    return Finding(
        "tool-trained",
        tool,
        "fail",
        f"{tool} is never a trained call in train.jsonl ({counts['masked_only']} examples hold "
        f"it only in masked turns; mask_prompt={mask_prompt})",
        "The model cannot learn to call it: add examples whose last assistant message calls "
        "it, or split multi-turn examples so each call is a last assistant message.",
    )


def _tool_names(
    messages: Iterable[dict[str, Any]],
    signatures: dict[str, list[str]],
    schemas: dict[str, dict[str, Any]],
) -> set[str]:
    names: set[str] = set()
    for m in messages:
        try:
            calls: list[Call] = unwrap(message_calls(m, schemas), signatures)
        except CallParseError:
            continue
        names.update(c.name for c in calls)
    return names
