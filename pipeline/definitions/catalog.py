"""The tool catalog: the coding tools a routed model may call, loaded from `fixtures/tools.json`.

Training data, system prompts and eval scoring all read the tools through this one loader, so a
tool's name, schema and description cannot drift apart between them. Loading is strict: any
structural problem raises `CatalogError` naming the file and the tool, because a schema that is
quietly wrong would train and score the model against tools that do not exist.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import keyword
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInput

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "tools.json"

_PY_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
}
_TOOL_KEYS = {"name", "category", "description", "parameters"}
_TOP_KEYS = {"categories", "wrapper", "tools"}


class CatalogError(BadInput):
    """The catalog file is invalid; the message names the file and the tool or key."""


@dataclass(frozen=True)
class Tool:
    name: str
    category: str
    description: str
    parameters: dict[str, Any]
    """A JSON schema of type "object"; property order is the call signature's order."""

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get("required", ()))

    @property
    def defaults(self) -> dict[str, Any]:
        return {
            name: prop["default"]
            for name, prop in self.parameters["properties"].items()
            if "default" in prop
        }

    def openai(self) -> dict[str, Any]:
        # A copy, because the loaded catalog is cached and shared by every caller.
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    def stub(self) -> str:
        params = []
        for name, prop in self.parameters["properties"].items():
            annotation = _PY_TYPES[prop["type"]]
            if name in self.required:
                params.append(f"{name}: {annotation}")
            elif "default" in prop:
                params.append(f"{name}: {annotation} = {_literal(prop['default'])}")
            else:
                params.append(f"{name}: {annotation} | None = None")
        return f'def {self.name}({", ".join(params)}) -> str:\n    """{_docstring(self)}"""'

    def signature(self) -> str:
        """`name(args)` as a call reads, e.g. `git_diff(path=".", staged=False)`."""
        args = []
        for name, prop in self.parameters["properties"].items():
            if name in self.required:
                args.append(name)
            else:
                args.append(f"{name}={_literal(prop.get('default'))}")
        return f"{self.name}({', '.join(args)})"


@dataclass(frozen=True)
class Catalog:
    categories: dict[str, str]
    """Category -> description, in the order reports list them; some (multi_tool) own no tools."""
    tools: tuple[Tool, ...]
    wrapper: Tool
    """The single code-mode tool (`execute_code`) through which the others are called."""

    def tool(self, name: str) -> Tool:
        for tool in self.tools:
            if tool.name == name:
                return tool
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown tool {name!r}{hint} ({len(self.tools)} tools in the catalog)")

    def names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    def by_category(self) -> dict[str, tuple[Tool, ...]]:
        """Every category, in catalog order, including those that own no tools."""
        return {
            category: tuple(t for t in self.tools if t.category == category)
            for category in self.categories
        }

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai() for tool in self.tools]

    def signatures(self) -> dict[str, list[str]]:
        """Parameter names in order, per tool: how positional arguments in code are named."""
        return {t.name: list(t.parameters.get("properties", {})) for t in self.tools}

    def schemas(self) -> dict[str, dict[str, Any]]:
        """JSON schema per tool and the wrapper: what types XML argument text stands for."""
        return {t.name: t.parameters for t in (*self.tools, self.wrapper)}

    def python_stubs(self) -> str:
        sections = [
            f"# {category}\n" + "\n\n".join(tool.stub() for tool in tools)
            for category, tools in self.by_category().items()
            if tools
        ]
        return "\n\n".join(sections) + "\n"

    def tool_list(self) -> str:
        return "\n".join(f"- {tool.signature()}: {tool.description}" for tool in self.tools)


def load_catalog(path: str | Path = DEFAULT_CATALOG_PATH) -> Catalog:
    """Load and validate a catalog; cached per resolved path, so edit the file between runs."""
    return _load(Path(path).expanduser().resolve())


@functools.cache
def _load(path: Path) -> Catalog:
    if not path.is_file():
        raise CatalogError(f"tool catalog {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CatalogError(
            f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the top level must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    missing = sorted(_TOP_KEYS - set(raw))
    if unknown or missing:
        raise CatalogError(
            f"{path}: top-level keys must be {', '.join(sorted(_TOP_KEYS))} "
            f"(unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'})"
        )

    categories = raw["categories"]
    if not isinstance(categories, dict) or not all(
        isinstance(v, str) and v for v in categories.values()
    ):
        raise CatalogError(f"{path}: categories must map each name to a non-empty description")

    wrapper = _tool(raw["wrapper"], path, "wrapper", categories, needs_category=False)
    if not isinstance(raw["tools"], list):
        raise CatalogError(f"{path}: tools must be a list, got {type(raw['tools']).__name__}")
    tools = tuple(
        _tool(entry, path, f"tools[{i}]", categories) for i, entry in enumerate(raw["tools"])
    )

    seen = {wrapper.name}
    for tool in tools:
        if tool.name in seen:
            raise CatalogError(f"{path}: tool {tool.name!r} is defined more than once")
        seen.add(tool.name)
    return Catalog(categories=dict(categories), tools=tools, wrapper=wrapper)


def _tool(
    raw: Any, path: Path, key: str, categories: dict[str, str], *, needs_category: bool = True
) -> Tool:
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: {key} must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    # Names become Python functions in code mode, so they must be usable identifiers.
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise CatalogError(f"{path}: {key} has name {name!r}, which is not a Python identifier")
    where = f"{path}: tool {name!r}"

    allowed = _TOOL_KEYS if needs_category else _TOOL_KEYS - {"category"}
    unknown = sorted(set(raw) - allowed)
    missing = sorted(allowed - set(raw))
    if unknown:
        raise CatalogError(f"{where} has unknown key {unknown[0]!r}")
    if missing:
        raise CatalogError(f"{where} is missing key {missing[0]!r}")

    category = raw.get("category", "")
    if needs_category and category not in categories:
        raise CatalogError(
            f"{where} has category {category!r}, which is not in categories "
            f"({', '.join(categories)})"
        )
    description = raw["description"]
    # Descriptions are rendered one per line in `tool_list`, so a newline would split a tool.
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise CatalogError(f"{where} needs a non-empty one-line description")
    _check_schema(raw["parameters"], where)
    return Tool(name=name, category=category, description=description, parameters=raw["parameters"])


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise CatalogError(f"{where}: parameters is not an object schema (needs type 'object')")
    props = schema.get("properties")
    if not isinstance(props, dict):
        raise CatalogError(f"{where}: parameters.properties must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise CatalogError(f"{where}: parameters.required must be a list of names")
    for name in required:
        if name not in props:
            raise CatalogError(f"{where}: required parameter {name!r} is not in properties")

    defaulted: str | None = None
    for name, prop in props.items():
        at = f"{where}: parameter {name!r}"
        if not name.isidentifier() or keyword.iskeyword(name):
            raise CatalogError(f"{at} is not a Python identifier")
        if not isinstance(prop, dict) or "type" not in prop:
            raise CatalogError(f"{at} has no type")
        if prop["type"] not in _PY_TYPES:
            raise CatalogError(f"{at} has type {prop['type']!r}, not one of {', '.join(_PY_TYPES)}")
        if not isinstance(prop.get("description"), str) or not prop["description"].strip():
            raise CatalogError(f"{at} needs a description")
        if "default" in prop:
            if name in required:
                raise CatalogError(f"{at} is required but has a default")
            if not _matches(prop["default"], prop["type"]):
                raise CatalogError(
                    f"{at} has default {prop['default']!r}, which is not of type {prop['type']}"
                )
        # The stub must compile, and Python forbids a parameter without a default after one
        # with; failing here keeps the stub's order equal to the schema's.
        if name in required and defaulted is not None:
            raise CatalogError(f"{at} is required but follows optional parameter {defaulted!r}")
        if name not in required:
            defaulted = name


def _matches(value: Any, json_type: str) -> bool:
    # bool is an int subclass in Python but a separate type in JSON schema.
    if isinstance(value, bool):
        return json_type == "boolean"
    # json accepts NaN and Infinity, which have no Python literal to put in a stub.
    if isinstance(value, float) and not math.isfinite(value):
        return False
    expected = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "array": list,
        "object": dict,
    }[json_type]
    return isinstance(value, expected)


def _literal(value: Any) -> str:
    """A Python literal for a JSON value; strings double-quoted to match the stub style."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)}: {_literal(v)}" for k, v in value.items()) + "}"


def _docstring(tool: Tool) -> str:
    # A backslash, a triple quote or a trailing quote in a description would break the stub.
    text = tool.description.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return text[:-1] + '\\"' if text.endswith('"') else text


__all__ = [
    "DEFAULT_CATALOG_PATH",
    "Catalog",
    "CatalogError",
    "Tool",
    "load_catalog",
]
