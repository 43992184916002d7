"""Training data in mlx_lm's chat format: read and validate JSONL (generate and convert below).

Every example keeps where it came from (file and line), so a check that fails can name the
exact line a user has to fix.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.calls import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    Call,
    CallParseError,
    find_blocks,
    parse_block,
    render,
    structured_calls,
    unwrap,
    wrap_code,
)
from pipeline.calls import message_calls as read_message_calls
from pipeline.catalog import Catalog, CatalogError, load_catalog
from pipeline.experiment import (
    CallMode,
    CallSyntax,
    Experiment,
    ExperimentError,
    data_dir,
    load_experiment,
    with_overrides,
)
from pipeline.prompts import PromptError, load_prompts, system_prompt

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid")


class DataError(ValueError):
    """A data file is missing or a line is not a valid chat example; names file and line."""


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


def read_jsonl(path: Path) -> list[Example]:
    """All examples of one file; the first bad line raises DataError with file and line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
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
    """Write through a temp file so a crash never leaves a half-written split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


# === generate ================================================================================
# Training data for the catalog's tools, built from paraphrase templates and pools of paths,
# symbols and commands (fixtures/data_templates.toml) with one seeded random.Random, so the same
# experiment and templates always write the same bytes. Four kinds of example, in roughly the
# seed's proportions:
#   single      one request, one call (the call is the trained target)
#   chain       one request that needs 2-4 tools, all called in one assistant turn
#   multi_turn  request, call, tool response, a short answer (the answer is the target)
#   no_tool     a question answered directly, so the model learns when not to call
# The eval's prompt texts (and its file paths and argument values) never appear in user text.

KINDS = ("single", "chain", "multi_turn", "no_tool")
KIND_SHARES = {"single": 0.60, "chain": 0.15, "multi_turn": 0.15, "no_tool": 0.10}
NO_TOOL = "no_tool"
MULTI_TOOL = "multi_tool"
STAMP = "generated.json"
"""Written beside generated splits: the inputs they came from, so stale data is regenerated."""

_Template = str | tuple[str, dict[str, Any]]
"""A request text with `{param}` placeholders, optionally with fixed arguments (staged=True)."""

DEFAULT_TEMPLATES_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "data_templates.toml"
"""The generator's paraphrase templates and value pools: data a user edits to add phrasings."""

# --- templates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """The contents of the templates file (see its comments for what each entry fills)."""

    sha256: str
    src_dirs: tuple[str, ...]
    src_files: tuple[str, ...]
    other_files: tuple[str, ...]
    test_dirs: tuple[str, ...]
    functions: tuple[str, ...]
    classes: tuple[str, ...]
    commands: tuple[str, ...]
    patterns: tuple[str, ...]
    imports: tuple[str, ...]
    write_prefixes: tuple[str, ...]
    domain_chain_files: tuple[str, ...]
    verb_swaps: Mapping[str, str]
    class_swaps: Mapping[str, str]
    writes: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """Groups of (paths, contents) that fit each other; chains use the last group."""
    domain_files: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
    """Per domain tool: (folders, file stems)."""
    domain_issues: Mapping[str, tuple[str, ...]]
    requests: Mapping[str, tuple[_Template, ...]]
    clauses: Mapping[str, tuple[tuple[_Template, ...], tuple[_Template, ...]]]
    """Per tool: (clauses that name the file, clauses for a file already named)."""
    chain_leads: tuple[str, ...]
    chain_recipes: tuple[tuple[str, ...], ...]
    acronym_frames: tuple[str, ...]
    acronyms: tuple[tuple[str, ...], ...]
    """(acronym, meaning) pairs."""
    difference_frames: tuple[str, ...]
    differences: tuple[tuple[str, ...], ...]
    """(a, b, answer) triples."""
    concept_frames: tuple[str, ...]
    concepts: tuple[tuple[str, ...], ...]
    """(concept, answer) pairs."""
    thanks: tuple[str, ...]
    thanks_replies: tuple[str, ...]


_POOLS = (
    "src_dirs",
    "src_files",
    "other_files",
    "test_dirs",
    "functions",
    "classes",
    "commands",
    "patterns",
    "imports",
    "write_prefixes",
    "domain_chain_files",
)


def load_templates(path: str | Path = DEFAULT_TEMPLATES_PATH) -> Templates:
    """Load and check a templates file; cached per resolved path.

    A missing file, invalid TOML or a malformed entry raises DataError naming file and key.
    """
    return _load_templates(Path(path).expanduser().resolve())


class _Reader:
    """Typed reads of a parsed TOML file; a wrong entry raises DataError with file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> DataError:
        return DataError(f"{self.path}: {key}: {problem}")

    def table(self, value: Any, key: str, fields: Sequence[str] = ()) -> dict[str, Any]:
        """A table; with `fields`, exactly those keys."""
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        if fields:
            missing = [f for f in fields if f not in value]
            unknown = [k for k in value if k not in fields]
            if missing or unknown:
                raise self.fail(
                    key,
                    f"needs exactly the keys {', '.join(fields)} (missing: "
                    f"{', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'})",
                )
        return value

    def items(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty array, got {type(value).__name__}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(self.items(value, key)))

    def mapping(self, value: Any, key: str) -> dict[str, str]:
        return {k: self.string(v, f"{key}.{k}") for k, v in self.table(value, key).items()}

    def templates(self, value: Any, key: str) -> tuple[_Template, ...]:
        out: list[_Template] = []
        for i, item in enumerate(self.items(value, key)):
            where = f"{key}[{i}]"
            if isinstance(item, dict):
                entry = self.table(item, where, ("text", "args"))
                out.append(
                    (
                        self.string(entry["text"], f"{where}.text"),
                        self.table(entry["args"], f"{where}.args"),
                    )
                )
            else:
                out.append(self.string(item, where))
        return tuple(out)

    def records(self, value: Any, key: str, fields: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """An array of tables with exactly `fields`, all strings: their values in that order."""
        out = []
        for i, item in enumerate(self.items(value, key)):
            entry = self.table(item, f"{key}[{i}]", fields)
            out.append(tuple(self.string(entry[f], f"{key}[{i}].{f}") for f in fields))
        return tuple(out)


@functools.cache
def _load_templates(path: Path) -> Templates:
    try:
        source = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError(f"templates file {path} does not exist") from err
    try:
        raw = tomllib.loads(source.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DataError(f"{path}: not valid TOML: {err}") from err
    r = _Reader(path)
    top = r.table(
        raw,
        "top level",
        ("pools", "renames", "writes", "domain", "requests", "chains", "clauses", "no_tool"),
    )
    pools = r.table(top["pools"], "pools", _POOLS)
    renames = r.table(top["renames"], "renames", ("verbs", "class_suffixes"))
    writes = []
    for i, item in enumerate(r.items(top["writes"], "writes")):
        group = r.table(item, f"writes[{i}]", ("paths", "contents"))
        paths = r.strings(group["paths"], f"writes[{i}].paths")
        writes.append((paths, r.strings(group["contents"], f"writes[{i}].contents")))
    domain = {
        tool: r.table(entry, f"domain.{tool}", ("dirs", "names", "issues"))
        for tool, entry in r.table(top["domain"], "domain").items()
    }
    clauses = {}
    for tool, entry in r.table(top["clauses"], "clauses").items():
        both = r.table(entry, f"clauses.{tool}", ("first", "same"))
        clauses[tool] = (
            r.templates(both["first"], f"clauses.{tool}.first"),
            r.templates(both["same"], f"clauses.{tool}.same"),
        )
    chains = r.table(top["chains"], "chains", ("leads", "recipes"))
    recipes = tuple(
        r.strings(recipe, f"chains.recipes[{i}]")
        for i, recipe in enumerate(r.items(chains["recipes"], "chains.recipes"))
    )
    for i, recipe in enumerate(recipes):
        for tool in recipe:
            if tool not in clauses:
                raise r.fail(f"chains.recipes[{i}]", f"tool {tool!r} has no [clauses.{tool}]")
    no_tool = r.table(top["no_tool"], "no_tool", ("acronyms", "differences", "concepts", "thanks"))
    thanks = r.table(no_tool["thanks"], "no_tool.thanks", ("texts", "replies"))

    def family(name: str, *fields: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
        key = f"no_tool.{name}"
        entry = r.table(no_tool[name], key, ("frames", "entries"))
        frames = r.strings(entry["frames"], f"{key}.frames")
        return frames, r.records(entry["entries"], f"{key}.entries", fields)

    acronym_frames, acronyms = family("acronyms", "acronym", "meaning")
    difference_frames, differences = family("differences", "a", "b", "answer")
    concept_frames, concepts = family("concepts", "a", "answer")

    def pool(name: str) -> tuple[str, ...]:
        return r.strings(pools[name], f"pools.{name}")

    return Templates(
        sha256=hashlib.sha256(source).hexdigest(),
        src_dirs=pool("src_dirs"),
        src_files=pool("src_files"),
        other_files=pool("other_files"),
        test_dirs=pool("test_dirs"),
        functions=pool("functions"),
        classes=pool("classes"),
        commands=pool("commands"),
        patterns=pool("patterns"),
        imports=pool("imports"),
        write_prefixes=pool("write_prefixes"),
        domain_chain_files=pool("domain_chain_files"),
        verb_swaps=r.mapping(renames["verbs"], "renames.verbs"),
        class_swaps=r.mapping(renames["class_suffixes"], "renames.class_suffixes"),
        writes=tuple(writes),
        domain_files={
            tool: (
                r.strings(entry["dirs"], f"domain.{tool}.dirs"),
                r.strings(entry["names"], f"domain.{tool}.names"),
            )
            for tool, entry in domain.items()
        },
        domain_issues={
            tool: r.strings(entry["issues"], f"domain.{tool}.issues")
            for tool, entry in domain.items()
        },
        requests={
            tool: r.templates(texts, f"requests.{tool}")
            for tool, texts in r.table(top["requests"], "requests").items()
        },
        clauses=clauses,
        chain_leads=r.strings(chains["leads"], "chains.leads"),
        chain_recipes=recipes,
        acronym_frames=acronym_frames,
        acronyms=acronyms,
        difference_frames=difference_frames,
        differences=differences,
        concept_frames=concept_frames,
        concepts=concepts,
        thanks=r.strings(thanks["texts"], "no_tool.thanks.texts"),
        thanks_replies=r.strings(thanks["replies"], "no_tool.thanks.replies"),
    )


_GIT_TOOLS = ("git_status", "git_diff", "git_log")
_SYMBOL_TOOLS = ("goto_definition", "find_references", "hover", "cst_rename")
_FILE_ONLY_FIRST = (
    "read_file",
    "typecheck",
    "ruff_check",
    "document_symbols",
    "cst_find_pattern",
    "cst_add_import",
)
"""Tools (besides the domain tools) whose first chain clause needs nothing but the file."""

# --- the generator ----------------------------------------------------------------------------


@dataclass
class _Spec:
    """One example before rendering: what the user says and what the assistant does."""

    kind: str
    user: str
    calls: list[Any]
    answer: str = ""
    response: str = ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


class _Generator:
    def __init__(self, experiment: Experiment, catalog: Catalog) -> None:
        self.catalog = catalog
        self.rng = random.Random(experiment.data.seed)
        self.templates = load_templates()
        templates = self.templates
        missing = [
            t for t in catalog.names() if t not in templates.requests or t not in templates.clauses
        ]
        if missing:
            raise DataError(
                f"the generator has no templates for tool {missing[0]!r} of the catalog (add "
                f"[requests] and [clauses.{missing[0]}] for it in {DEFAULT_TEMPLATES_PATH})"
            )
        prompts = load_prompts(experiment.eval.prompts, catalog)
        self.eval_texts = [_norm(p.text) for p in prompts]
        avoid: list[str] = []
        for prompt in prompts:
            for expectation in prompt.expect:
                for values in expectation.args.values():
                    for value in values:
                        text = str(value).removeprefix("./")
                        if isinstance(value, str) and len(text) >= 4 and text not in avoid:
                            avoid.append(text)
        self.avoid = avoid
        self.seen: set[str] = set()

    # -- uniqueness and leakage

    def _ok(self, spec: _Spec) -> bool:
        key = _norm(spec.user)
        if key in self.seen or any(e in key for e in self.eval_texts):
            return False
        if any(a in spec.user for a in self.avoid):
            return False
        for call in spec.calls:
            for value in call.arguments.values():
                if isinstance(value, str) and value.removeprefix("./") in self.avoid:
                    return False
        self.seen.add(key)
        return True

    def _unique(self, make: Callable[[], _Spec], what: str) -> _Spec:
        for _ in range(2000):
            spec = make()
            if self._ok(spec):
                return spec
        raise DataError(f"could not generate another unique {what} example (pools exhausted)")

    # -- slots

    def _file(self) -> str:
        rng, t = self.rng, self.templates
        return f"{rng.choice(t.src_dirs)}/{rng.choice(t.src_files)}"

    def _test_path(self, source: str | None = None) -> str:
        rng = self.rng
        if source is None and rng.random() < 0.25:
            return rng.choice(self.templates.test_dirs) + rng.choice(("", "/"))
        stem = Path(source).stem if source else Path(rng.choice(self.templates.src_files)).stem
        return f"{rng.choice(self.templates.test_dirs)}/test_{stem}.py"

    def _symbol(self) -> tuple[str, str]:
        rng, t = self.rng, self.templates
        if rng.random() < 0.55:
            return rng.choice(t.functions), rng.choice(("function", "function", "method"))
        return rng.choice(t.classes), "class"

    def _renamed(self, name: str) -> str:
        rng = self.rng
        if name[0].isupper():
            swaps = self.templates.class_swaps
            options = [name.replace(k, v) for k, v in swaps.items() if name.endswith(k)]
            options += ["Legacy" + name, "Base" + name, name + "V2"]
        else:
            head, _, rest = name.partition("_")
            verbs = self.templates.verb_swaps
            options = [f"{verbs[head]}_{rest}"] if head in verbs and rest else []
            options += [name + "_legacy", "_" + name, name + "_v2"]
        return rng.choice(options)

    def _domain_file(self, tool: str) -> str:
        dirs, names = self.templates.domain_files[tool]
        return f"{self.rng.choice(dirs)}/{self.rng.choice(names)}.py"

    def _slots(self, tool: str) -> dict[str, Any]:
        rng = self.rng
        if tool == "read_file":
            path = self._file() if rng.random() < 0.7 else rng.choice(self.templates.other_files)
            return {"path": path}
        if tool == "write_file":
            paths, contents = rng.choice(self.templates.writes)
            return {
                "path": rng.choice(self.templates.write_prefixes) + rng.choice(paths),
                "content": rng.choice(contents),
            }
        if tool == "run_command":
            return {"command": rng.choice(self.templates.commands)}
        if tool in ("typecheck", "ruff_check"):
            path = self._file() if rng.random() < 0.7 else rng.choice(self.templates.src_dirs)
            return {"path": path + ("/" if "." not in path and rng.random() < 0.3 else "")}
        if tool == "pytest_run":
            return {"path": self._test_path()}
        if tool in ("goto_definition", "find_references", "hover"):
            symbol, what = self._symbol()
            return {
                "file_path": self._file(),
                "line": rng.randint(1, 600),
                "column": rng.randint(1, 48),
                "symbol": symbol,
                "what": what,
            }
        if tool == "document_symbols":
            return {"file_path": self._file()}
        if tool == "workspace_symbols":
            return {"query": self._symbol()[0]}
        if tool in ("git_status", "git_diff", "git_log"):
            path = rng.choice(self.templates.src_dirs) if rng.random() < 0.8 else self._file()
            return {"path": path, "count": rng.choice((3, 5, 8, 10, 15, 20, 25, 30))}
        if tool == "cst_find_pattern":
            return {"file_path": self._file(), "pattern": rng.choice(self.templates.patterns)}
        if tool == "cst_rename":
            old, what = self._symbol()
            return {
                "file_path": self._file(),
                "old_name": old,
                "new_name": self._renamed(old),
                "what": what,
            }
        if tool == "cst_add_import":
            return {"file_path": self._file(), "import_stmt": rng.choice(self.templates.imports)}
        if tool in self.templates.domain_files:
            path = self._domain_file(tool)
            return {"file_path": path, "name": Path(path).stem.replace("_", " ")}
        raise DataError(f"no argument generator for tool {tool!r}")  # pragma: no cover

    def _fill(self, tool: str, template: _Template, slots: dict[str, Any]) -> tuple[str, Call]:
        text, fixed = (template, {}) if isinstance(template, str) else template
        schema = self.catalog.tool(tool).parameters
        args: dict[str, Any] = {}
        for param in schema["properties"]:
            if param in fixed:
                args[param] = fixed[param]
            elif "{" + param + "}" in text or param in schema.get("required", ()):
                args[param] = slots[param]
        return text.format(**slots), Call(tool, args)

    def _choose(self, templates: Sequence[_Template], slots: dict[str, Any]) -> _Template:
        content = slots.get("content")
        multiline = isinstance(content, str) and "\n" in content
        usable = [t for t in templates if not multiline or ":\n{content}" in _text(t)]
        return self.rng.choice(usable or list(templates))

    # -- kinds

    def single(self, tool: str) -> _Spec:
        def make() -> _Spec:
            slots = self._slots(tool)
            text, call = self._fill(tool, self._choose(self.templates.requests[tool], slots), slots)
            return _Spec("single", text, [call])

        return self._unique(make, tool)

    def multi_turn(self, tool: str) -> _Spec:
        spec = self.single(tool)
        response, answer = self._response(spec.calls[0])
        return _Spec("multi_turn", spec.user, spec.calls, answer=answer, response=response)

    def chain(self, recipe: Sequence[str]) -> _Spec:
        return self._unique(lambda: self._chain(recipe), "chain " + "+".join(recipe))

    def _chain(self, recipe: Sequence[str]) -> _Spec:
        rng = self.rng
        domain = any(t in self.templates.domain_files for t in recipe)
        source = rng.choice(self.templates.domain_chain_files) if domain else self._file()
        symbol, what = self._symbol()
        shared = {
            "line": rng.randint(1, 600),
            "column": rng.randint(1, 48),
            "symbol": symbol,
            "what": what,
            "old_name": symbol,
            "new_name": self._renamed(symbol),
        }
        git_path = rng.choice(self.templates.src_dirs)
        mentioned: list[str] = []
        clauses: list[str] = []
        calls: list[Call] = []
        lead = ""
        # "For FILE: read it, lint it, ..." only when the first clause needs nothing but the file.
        if rng.random() < 0.25 and (
            recipe[0] in _FILE_ONLY_FIRST or recipe[0] in self.templates.domain_files
        ):
            lead = rng.choice(self.templates.chain_leads).format(f=source)
            mentioned.append(source)
        previous: dict[str, Any] = {}
        for tool in recipe:
            slots = self._slots(tool)
            if tool in ("read_file", "typecheck", "ruff_check"):
                slots["path"] = source
            elif tool == "pytest_run":
                slots["path"] = self._test_path(source)
            elif "file_path" in slots:
                slots["file_path"] = source
            if tool in ("goto_definition", "find_references", "hover", "cst_rename"):
                slots.update(shared)
            if tool in ("git_status", "git_diff", "git_log"):
                slots["path"] = git_path
            if tool == "run_command" and previous.get("write_file"):
                slots["command"] = f"bash {previous['write_file']}"
            if tool == "write_file":
                paths, contents = self.templates.writes[-1]
                slots["path"] = rng.choice(paths)
                slots["content"] = rng.choice([c for c in contents if "\n" not in c])
                previous["write_file"] = slots["path"]
            target = slots.get("file_path", slots.get("path"))
            first, same = self.templates.clauses[tool]
            # A clause may say "it" for the file (and "its" for the symbol) once both are named.
            named = (
                isinstance(target, str)
                and target in mentioned
                and tool not in _GIT_TOOLS
                and (tool not in _SYMBOL_TOOLS or symbol in mentioned)
            )
            clause, call = self._fill(tool, self._choose(same if named else first, slots), slots)
            if isinstance(target, str) and tool not in _GIT_TOOLS:
                mentioned.append(target)
            if tool in _SYMBOL_TOOLS:
                mentioned.append(symbol)
            clauses.append(clause)
            calls.append(call)
        return _Spec("chain", lead + _join(clauses, rng, bool(lead)), calls)

    def no_tool(self) -> _Spec:
        def make() -> _Spec:
            rng, t = self.rng, self.templates
            family = rng.random()
            if family < 0.3:
                acronym, meaning = rng.choice(t.acronyms)
                text = rng.choice(t.acronym_frames).format(a=acronym)
                return _Spec("no_tool", text, [], answer=f"{acronym} stands for {meaning}")
            if family < 0.55:
                a, b, answer = rng.choice(t.differences)
                text = rng.choice(t.difference_frames).format(a=a, b=b)
                return _Spec("no_tool", text, [], answer=answer)
            if family < 0.85:
                concept, answer = rng.choice(t.concepts)
                text = rng.choice(t.concept_frames).format(a=concept)
                return _Spec("no_tool", text, [], answer=answer)
            return _Spec("no_tool", rng.choice(t.thanks), [], answer=rng.choice(t.thanks_replies))

        return self._unique(make, "no-tool")

    # -- tool responses for multi-turn examples

    def _response(self, call: Call) -> tuple[str, str]:
        rng = self.rng
        a = call.arguments
        tool = call.name
        ok = rng.random() < 0.5
        line = rng.randint(2, 180)
        if tool == "read_file":
            func = rng.choice(self.templates.functions)
            return (
                f'"""Helpers for {Path(a["path"]).stem}."""\n\nimport logging\n\n\n'
                f'def {func}(value):\n    logging.debug("{func} %s", value)\n'
                "    return value\n",
                f"{a['path']} imports logging and defines one function, `{func}`, which "
                "logs its argument and returns it unchanged.",
            )
        if tool == "write_file":
            size = len(a["content"].encode()) + 1
            return (
                f"wrote {size} bytes to {a['path']}",
                f"Done: {a['path']} now holds the new text.",
            )
        if tool == "run_command":
            if ok:
                return (
                    f"$ {a['command']}\n(exit code 0)",
                    f"`{a['command']}` finished successfully with exit code 0.",
                )
            return (
                f"$ {a['command']}\nerror: step failed at line {line}\n(exit code 1)",
                f"`{a['command']}` failed with exit code 1: it reports an error at line {line}.",
            )
        if tool == "typecheck":
            if ok:
                return "Success: no issues found", f"No type errors in {a['path']}."
            func = rng.choice(self.templates.functions)
            return (
                f'{a["path"]}:{line}: error: Argument 1 to "{func}" has incompatible type '
                '"str"; expected "int"\nFound 1 error',
                f"One type error: at line {line}, `{func}` gets a str where it expects an int.",
            )
        if tool == "ruff_check":
            if ok:
                return "All checks passed!", f"Ruff found nothing to fix in {a['path']}."
            module = rng.choice(("os", "sys", "json", "re", "typing.Any"))
            return (
                f"{a['path']}:{line}:1: F401 `{module}` imported but unused\nFound 1 error.",
                f"Ruff reports one issue: `{module}` is imported but unused (line {line}).",
            )
        if tool == "pytest_run":
            passed = rng.randint(3, 60)
            if ok:
                return (
                    f"{passed} passed in {rng.randint(1, 9)}.{rng.randint(10, 99)}s",
                    f"All {passed} tests passed.",
                )
            name = f"test_{rng.choice(self.templates.functions)}"
            return (
                f"FAILED {a['path'].rstrip('/')}::{name} - AssertionError\n"
                f"1 failed, {passed} passed",
                f"One test fails ({name}, an AssertionError); the other {passed} pass.",
            )
        if tool == "goto_definition":
            where = self._file()
            return (
                f"{where}:{line}:5: {a['symbol']}",
                f"`{a['symbol']}` is defined in {where} at line {line}.",
            )
        if tool == "find_references":
            places = [f"{self._file()}:{rng.randint(2, 400)}" for _ in range(rng.randint(2, 4))]
            return (
                "\n".join(places),
                f"`{a['symbol']}` is used in {len(places)} places: {', '.join(places)}.",
            )
        if tool == "hover":
            kind = rng.choice(("int", "str", "bool", "dict[str, Any]", "None"))
            return (
                f"def {a['symbol']}(value: str, strict: bool = False) -> {kind}",
                f"`{a['symbol']}` takes a str (and an optional `strict` flag) and returns {kind}.",
            )
        if tool == "document_symbols":
            cls, func = rng.choice(self.templates.classes), rng.choice(self.templates.functions)
            return (
                f"class {cls} (line {line})\n  def __init__ (line {line + 1})\n"
                f"def {func} (line {line + 20})",
                f"It defines class `{cls}` (line {line}) and function `{func}` (line {line + 20}).",
            )
        if tool == "workspace_symbols":
            where = self._file()
            return (f"{a['query']}  {where}:{line}", f"`{a['query']}` is in {where}, line {line}.")
        if tool == "git_status":
            if ok:
                return "nothing to commit, working tree clean", "The working tree is clean."
            changed = self._file()
            return (
                f" M {changed}\n?? notes.txt",
                f"{changed} is modified and notes.txt is untracked.",
            )
        if tool == "git_diff":
            if ok:
                return "(no changes)", "There are no changes to show."
            changed = self._file()
            return (
                f"--- a/{changed}\n+++ b/{changed}\n@@ -{line} +{line} @@\n-    retries = 3\n"
                "+    retries = 5",
                f"One change in {changed}: `retries` goes from 3 to 5 at line {line}.",
            )
        if tool == "git_log":
            who = rng.choice(("alice", "bob", "chen", "dana"))
            return (
                f"a1b2c3d Fix pagination bug ({who})\n9f8e7d6 Add retry settings ({who})",
                f"The latest commits are 'Fix pagination bug' and 'Add retry settings', "
                f"both by {who}.",
            )
        if tool == "cst_find_pattern":
            if ok:
                return "no matches", f"Nothing in {a['file_path']} matches `{a['pattern']}`."
            return (
                f"{a['file_path']}:{line}\n{a['file_path']}:{line + 14}",
                f"Two matches for `{a['pattern']}`, at lines {line} and {line + 14}.",
            )
        if tool == "cst_rename":
            count = rng.randint(2, 9)
            return (
                f"renamed {count} occurrences",
                f"Renamed `{a['old_name']}` to `{a['new_name']}` in {a['file_path']} "
                f"({count} occurrences).",
            )
        if tool == "cst_add_import":
            if ok:
                return "import added", f"Added `{a['import_stmt']}` to {a['file_path']}."
            return ("already imported", f"{a['file_path']} already has `{a['import_stmt']}`.")
        issue = rng.choice(self.templates.domain_issues[tool])
        if ok:
            return "OK: no problems found", f"No problems found in {a['file_path']}."
        return (
            f"1 problem:\n  line {line}: {issue}",
            f"{a['file_path']} has one problem at line {line}: {issue}.",
        )


def _text(template: _Template) -> str:
    return template if isinstance(template, str) else template[0]


def _join(clauses: Sequence[str], rng: random.Random, has_lead: bool) -> str:
    """Clauses as one request; after a lead ("For FILE: ") only forms without an opener."""
    if len(clauses) == 2:
        forms = ["{0}, then {1}.", "{0} and then {1}.", "{0}; after that, {1}."]
        forms += (
            []
            if has_lead
            else [
                "First {0}, then {1}.",
                "Please {0} and {1}.",
                "Can you {0} and then {1}?",
                "{0}, and once that's done, {1}.",
            ]
        )
        form = rng.choice(forms)
    else:
        last = rng.choice((", then ", ", and then ", ", and finally ", " and "))
        head = ", ".join(f"{{{i}}}" for i in range(len(clauses) - 1))
        opener = "" if has_lead else rng.choice(("", "First ", "Please ", "Could you "))
        form = opener + head + last + f"{{{len(clauses) - 1}}}"
        form += "?" if opener == "Could you " else "."
    text = form.format(*clauses)
    return text if has_lead else text[0].upper() + text[1:]


def _plan(count: int) -> dict[str, int]:
    plan = {kind: round(count * KIND_SHARES[kind]) for kind in KINDS if kind != "no_tool"}
    plan["no_tool"] = count - sum(plan.values())
    if plan["no_tool"] < 0:  # pragma: no cover - the shares sum to 1
        raise DataError(f"cannot split {count} examples into kinds")
    return plan


def _cycle(items: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` items, each used equally often (give or take one), in shuffled rounds."""
    out: list[str] = []
    while len(out) < count:
        batch = list(items)
        rng.shuffle(batch)
        out.extend(batch)
    return out[:count]


def _messages(spec: _Spec, system: str, syntax: CallSyntax, mode: CallMode) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": spec.user},
    ]
    if not spec.calls:
        messages.append({"role": "assistant", "content": spec.answer})
        return messages
    calls = [wrap_code(spec.calls)] if mode == "code" else spec.calls
    messages.append(_call_message(calls, syntax))
    if spec.kind == "multi_turn":
        messages.append({"role": "tool", "content": spec.response})
        messages.append({"role": "assistant", "content": spec.answer})
    return messages


def _call_message(calls: Sequence[Call], syntax: CallSyntax, prose: str = "") -> dict[str, Any]:
    if syntax == "structured":
        return {"role": "assistant", "content": prose, "tool_calls": [c.openai() for c in calls]}
    text = "\n".join(render(c, syntax) for c in calls)
    return {"role": "assistant", "content": f"{prose}\n{text}" if prose else text}


def generate_records(
    experiment: Experiment,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
    catalog: Catalog | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The train and valid records generate() writes, in memory."""
    catalog = catalog or load_catalog()
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    gen = _Generator(experiment, catalog)
    rng = gen.rng
    system = system_prompt(experiment, catalog)
    tools = catalog.openai_tools() if mode == "direct" else None
    splits: dict[str, list[dict[str, Any]]] = {}
    sizes = {"train": experiment.data.train_count, "valid": experiment.data.valid_count}
    for split, count in sizes.items():
        plan = _plan(count)
        specs = [gen.single(t) for t in _cycle(catalog.names(), plan["single"], rng)]
        specs += [
            gen.chain(r) for r in _cycle_recipes(gen.templates.chain_recipes, plan["chain"], rng)
        ]
        specs += [gen.multi_turn(t) for t in _cycle(catalog.names(), plan["multi_turn"], rng)]
        specs += [gen.no_tool() for _ in range(plan["no_tool"])]
        rng.shuffle(specs)
        records = []
        for spec in specs:
            record: dict[str, Any] = {"messages": _messages(spec, system, syntax, mode)}
            if tools is not None:
                record["tools"] = tools
            records.append(record)
        splits[split] = records
    return splits


def _cycle_recipes(
    recipes: Sequence[tuple[str, ...]], count: int, rng: random.Random
) -> list[tuple[str, ...]]:
    order = _cycle([str(i) for i in range(len(recipes))], count, rng)
    return [recipes[int(i)] for i in order]


def _stamp(experiment: Experiment, syntax: CallSyntax, mode: CallMode) -> dict[str, Any]:
    """What a generated dataset depends on; a different stamp means regenerate."""
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(load_templates().sha256.encode())
    digest.update(system_prompt(experiment).encode())
    digest.update(json.dumps(load_catalog().openai_tools(), sort_keys=True).encode())
    digest.update(experiment.eval.prompts.read_bytes())
    return {
        "seed": experiment.data.seed,
        "train_count": experiment.data.train_count,
        "valid_count": experiment.data.valid_count,
        "syntax": syntax,
        "mode": mode,
        "inputs_sha256": digest.hexdigest(),
    }


def generate(
    experiment: Experiment,
    out: Path,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
) -> dict[str, int]:
    """Write out/train.jsonl and out/valid.jsonl for the experiment; returns lines per split.

    Deterministic: the same experiment (seed, counts, system prompt, catalog, eval prompts)
    writes the same bytes. `syntax` and `mode` default to the experiment's data settings.
    """
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    splits = generate_records(experiment, syntax=syntax, mode=mode)
    out = Path(out)
    for split, records in splits.items():
        write_jsonl(out / f"{split}.jsonl", records)
    stamp = out / STAMP
    stamp.write_text(json.dumps(_stamp(experiment, syntax, mode), indent=2) + "\n")
    return {split: len(records) for split, records in splits.items()}


def ensure_data(experiment: Experiment) -> Path:
    """The experiment's data folder, generated first when it is the default one and not current.

    A folder the user named (data.path) is never written to: missing files there raise.
    """
    folder = data_dir(experiment)
    files = [folder / f"{split}.jsonl" for split in SPLITS]
    if experiment.data.path:
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(
                f"data folder {folder} (data.path of {experiment.source}) has no "
                f"{' or '.join(missing)}"
            )
        return folder
    stamp = folder / STAMP
    if all(f.is_file() for f in files):
        if not stamp.is_file():
            return folder  # placed there by hand: leave it alone
        try:
            current = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            current = None
        if current == _stamp(experiment, experiment.data.syntax, experiment.data.mode):
            return folder
    generate(experiment, folder)
    return folder


# --- describe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Description:
    kind: str
    """single, chain, multi_turn or no_tool."""
    category: str
    """The called tool's category; multi_tool for chains; no_tool without calls."""
    tools: tuple[str, ...]
    """The calls of the example (code mode unwrapped), in order."""


def message_calls(message: Mapping[str, Any], catalog: Catalog | None = None) -> list[Call]:
    """The calls of one assistant message in any syntax; an unreadable one raises."""
    return read_message_calls(message, (catalog or load_catalog()).schemas(), strict=True)


def describe(record: Mapping[str, Any], catalog: Catalog | None = None) -> Description:
    """What kind of example a record is and which tools it calls (any syntax, either mode)."""
    catalog = catalog or load_catalog()
    signatures = catalog.signatures()
    categories = {t.name: t.category for t in catalog.tools}
    per_message = [
        unwrap(message_calls(m, catalog), signatures)
        for m in record["messages"]
        if m.get("role") == "assistant"
    ]
    called = [c.name for calls in per_message for c in calls]
    if not called:
        return Description(NO_TOOL, NO_TOOL, ())
    last = per_message[-1]
    if last:
        kind = "single" if len(last) == 1 else "chain"
        names = tuple(c.name for c in last)
    else:
        kind, names = "multi_turn", tuple(called)
    cats = {categories.get(n, "unknown") for n in names}
    category = cats.pop() if len(cats) == 1 and len(names) == 1 else MULTI_TOOL
    return Description(kind, category, names)


def summarize(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], catalog: Catalog | None = None
) -> dict[str, dict[str, Counter[str]]]:
    """Per split: counts by kind, by category, and by the final trained call's tool."""
    catalog = catalog or load_catalog()
    out: dict[str, dict[str, Counter[str]]] = {}
    for split, records in splits.items():
        kinds: Counter[str] = Counter()
        categories: Counter[str] = Counter()
        finals: Counter[str] = Counter()
        for record in records:
            try:
                d = describe(record, catalog)
            except (CallParseError, KeyError, TypeError, AttributeError):
                kinds["unreadable"] += 1
                continue
            kinds[d.kind] += 1
            categories[d.category] += 1
            if d.kind == "single":
                finals[d.tools[0]] += 1
        out[split] = {"kind": kinds, "category": categories, "tool": finals}
    return out


# === convert =================================================================================
# Rewrites the tool calls of an existing dataset in another syntax and nothing else: prose in
# the assistant turn stays as content, other keys stay as they are, and a line that cannot be
# converted is copied unchanged and reported with its line number.

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
            new.update(_call_message(calls, to, prose))
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
    try:
        text = src.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{src}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    lines = text.split("\n")
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
    _write_lines(dst, out_lines)
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


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        for line in lines:
            fh.write(line + "\n")
    tmp.replace(path)


# === command line ============================================================================


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline data",
        description="Generate, convert (and check) training data in mlx_lm's chat format.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,convert,check}")
    gen = sub.add_parser("generate", help="write train.jsonl/valid.jsonl for an experiment")
    gen.add_argument("--experiment", required=True, help="experiment name or TOML path")
    gen.add_argument(
        "--out", type=Path, default=None, help="output folder [the experiment's data folder]"
    )
    gen.add_argument(
        "--syntax",
        choices=("structured", "json", "xml"),
        default=None,
        help="how calls are stored [the experiment's data.syntax]",
    )
    gen.add_argument(
        "--mode",
        choices=("direct", "code"),
        default=None,
        help="tools called directly or through execute_code [data.mode]",
    )
    gen.set_defaults(func=_cmd_generate)
    conv = sub.add_parser("convert", help="rewrite a dataset's tool calls in another syntax")
    conv.add_argument("--to", required=True, choices=TARGETS)
    conv.add_argument("src", metavar="IN", type=Path, help="a .jsonl file or a data folder")
    conv.add_argument("dst", metavar="OUT", type=Path, help="the output file or folder")
    conv.set_defaults(func=_cmd_convert)
    check = sub.add_parser("check", help="run the preflight on a data folder, with counts")
    check.add_argument("folder", metavar="DIR", type=Path, help="folder with train/valid.jsonl")
    check.add_argument("--experiment", default="tiny", help="experiment name or TOML path")
    check.add_argument("--base-model", default=None, help="hub id or folder for models.base")
    check.add_argument("--reference-model", default=None, help="hub id or folder (reference)")
    check.set_defaults(func=_cmd_check)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    """The preflight's checks (the same code as tests/preflight) on the given folder."""
    from pipeline import preflight  # preflight reads data through this module

    experiment = with_overrides(
        load_experiment(args.experiment),
        base_model=args.base_model,
        reference_model=args.reference_model,
        data=str(args.folder),
    )
    splits = {s: [e.record for e in read_split(args.folder, s)] for s in SPLITS}
    print(format_summary(summarize(splits)))
    findings = preflight.run_preflight(experiment)
    print(preflight.explain(findings))
    return 1 if any(f.failed for f in findings) else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment)
    if args.out is None and experiment.data.path:
        raise DataError(
            f"{experiment.source} names its own data folder (data.path = {experiment.data.path}),"
            " which generate never overwrites: pass --out to generate elsewhere"
        )
    out = args.out if args.out is not None else data_dir(experiment)
    start = time.perf_counter()
    counts = generate(experiment, out, syntax=args.syntax, mode=args.mode)
    seconds = time.perf_counter() - start
    syntax = args.syntax or experiment.data.syntax
    mode = args.mode or experiment.data.mode
    print(
        f"wrote {out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" ({syntax} calls, {mode} mode, seed {experiment.data.seed}, {seconds:.2f} s)"
    )
    splits = {s: [e.record for e in read_split(out, s)] for s in SPLITS}
    print(format_summary(summarize(splits)))
    return 0


def format_summary(summary: Mapping[str, Mapping[str, Counter[str]]]) -> str:
    splits = list(summary)
    lines = []
    for table in ("kind", "category", "tool"):
        keys: list[str] = []
        for split in splits:
            keys += [k for k in summary[split][table] if k not in keys]
        if table == "kind":
            keys = [k for k in KINDS if k in keys] + [k for k in keys if k not in KINDS]
        else:
            keys.sort()
        title = "tool (single calls)" if table == "tool" else table
        width = max([len(title), *map(len, keys)])
        lines.append(f"{title:<{width}}  " + "  ".join(f"{s:>6}" for s in splits))
        for key in keys:
            row = "  ".join(f"{summary[s][table][key]:>6}" for s in splits)
            lines.append(f"{key:<{width}}  {row}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _cmd_convert(args: argparse.Namespace) -> int:
    counts, problems = convert_path(args.src, args.dst, args.to)
    for path, count in counts.items():
        print(f"wrote {path}: {count} lines converted to {args.to}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} line(s) could not be converted (copied unchanged)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline data {generate,convert} ...`; 0 ok, 1 problems found, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ExperimentError, CatalogError, PromptError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
