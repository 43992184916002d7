"""What the model is asked: the experiment's system prompt and the eval's prompt set.

Training data and the eval both take the system prompt from here, so the two cannot drift
apart by construction; the preflight still checks data a user brings.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.errors import BadInput
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import Experiment

MatchMode = Literal["any_of", "all_of", "none"]
NO_TOOL = "no_tool"
"""Category of prompts that need no call: reported, kept out of the seed's 27 and overall."""


_EXPECT_KEYS = {"tool", "args", "optional", "any_value"}


class PromptError(BadInput):
    """The prompt file is invalid; the message names the file and the prompt id."""


@dataclass(frozen=True)
class Expectation:
    tool: str
    args: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Allowed values per argument (BFCL-style): the call's value must equal one of them."""
    optional: tuple[str, ...] = ()
    """Arguments that may be left out; when given they must still be allowed values."""
    any_value: tuple[str, ...] = ()
    """Arguments whose value the prompt leaves open ("find the definition of AgentConfig" gives
    no line): judged present, with any non-empty value. Never also in `args`; an argument in
    both `any_value` and `optional` may be left out, and when given must not be empty."""


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    category: str
    text: str
    match: MatchMode
    expect: tuple[Expectation, ...] = ()
    max_tokens: int | None = None


def system_prompt(experiment: Experiment, catalog: Catalog | None = None) -> str:
    """The experiment's system prompt with the catalog filled in (stubs or a tool list)."""
    return fill_system_prompt(experiment.eval.system_prompt, catalog)


def fill_system_prompt(path: Path, catalog: Catalog | None = None) -> str:
    catalog = catalog or load_catalog()
    text = path.read_text(encoding="utf-8").strip()
    return text.replace("{tool_stubs}", catalog.python_stubs()).replace(
        "{tool_list}", catalog.tool_list()
    )


def load_prompts(path: Path, catalog: Catalog | None = None) -> tuple[EvalPrompt, ...]:
    catalog = catalog or load_catalog()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PromptError(f"prompt file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise PromptError(f"{path}: not valid TOML: {err}") from err
    prompts = []
    seen: set[str] = set()
    for i, item in enumerate(raw.get("prompt", [])):
        where = f"{path}: prompt {item.get('id', f'#{i + 1}')!r}"
        prompt = _prompt(item, where, catalog)
        if prompt.id in seen:
            raise PromptError(f"{where}: duplicate id")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise PromptError(f"{path}: no [[prompt]] entries")
    return tuple(prompts)


def _prompt(item: dict[str, Any], where: str, catalog: Catalog) -> EvalPrompt:
    allowed = {"id", "category", "text", "match", "expect", "max_tokens"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise PromptError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("id", "category", "text", "match"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise PromptError(f"{where}: needs a non-empty string {key!r}")
    if item["category"] not in (*catalog.categories, NO_TOOL):
        raise PromptError(f"{where}: unknown category {item['category']!r}")
    if item["match"] not in ("any_of", "all_of", "none"):
        raise PromptError(f"{where}: match must be any_of, all_of or none")
    expect = tuple(_expectation(e, where, catalog) for e in item.get("expect", []))
    if (item["match"] == "none") != (not expect):
        raise PromptError(f"{where}: match 'none' and an empty expect go together")
    max_tokens = item.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise PromptError(f"{where}: max_tokens must be a positive integer")
    return EvalPrompt(item["id"], item["category"], item["text"], item["match"], expect, max_tokens)


def _expectation(raw: dict[str, Any], where: str, catalog: Catalog) -> Expectation:
    name = raw.get("tool")
    try:
        tool = catalog.tool(str(name))
    except KeyError as err:
        raise PromptError(f"{where}: {err.args[0]}") from err
    unknown = sorted(set(raw) - _EXPECT_KEYS)
    if unknown:
        raise PromptError(f"{where}: {name} expectation has unknown key {unknown[0]!r}")
    args = raw.get("args", {})
    properties = tool.parameters.get("properties", {})
    for arg, values in args.items():
        if arg not in properties:
            raise PromptError(f"{where}: {name} has no argument {arg!r}")
        if not isinstance(values, list) or not values:
            raise PromptError(f"{where}: {name}.{arg} needs a non-empty list of allowed values")
    optional = tuple(raw.get("optional", []))
    any_value = _any_value(raw.get("any_value", []), args, properties, f"{where}: {name}")
    missing = [a for a in tool.required if a not in args and a not in any_value]
    if missing:
        raise PromptError(
            f"{where}: {name} expectation leaves out required {missing[0]!r} "
            "(give its allowed values in args, or list it in any_value)"
        )
    return Expectation(tool.name, {k: tuple(v) for k, v in args.items()}, optional, any_value)


def _any_value(
    raw: Any, args: dict[str, Any], properties: dict[str, Any], where: str
) -> tuple[str, ...]:
    """The argument names of `any_value`: parameters of the tool, each once, none in args."""
    if not isinstance(raw, list) or not all(isinstance(a, str) and a for a in raw):
        raise PromptError(f"{where}: any_value must be a list of argument names")
    for arg in raw:
        if arg not in properties:
            raise PromptError(f"{where}: any_value names {arg!r}, which is not an argument")
        if arg in args:
            raise PromptError(
                f"{where}: {arg!r} is both in args and in any_value (allowed values, or any "
                "value: pick one)"
            )
    if len(set(raw)) != len(raw):
        twice = next(a for a in raw if raw.count(a) > 1)
        raise PromptError(f"{where}: any_value lists {twice!r} twice")
    return tuple(raw)
