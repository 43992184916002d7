"""The generator's templates file (fixtures/data_templates.toml), loaded and checked.

Paraphrase templates, value pools and, per tool, what fills its placeholders, how it joins a
chain and what its tool response says: data a user edits to add phrasings or a tool. See the
file's comments for what each entry fills.
"""

from __future__ import annotations

import functools
import hashlib
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.jsonl import DataError
from pipeline.data.values import (
    OWN_LISTS,
    REQUIRED_POOLS,
    Material,
    Reader,
    Slots,
    read_slots,
)

Template = str | tuple[str, dict[str, Any]]
"""A request text with `{param}` placeholders, optionally with fixed arguments (staged=True)."""

DEFAULT_TEMPLATES_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "data_templates.toml"
"""The generator's paraphrase templates and value pools: data a user edits to add phrasings."""

CHAIN_SOURCE = "source"
"""The [chains.values] entry that is the one file a chain works on."""


@dataclass(frozen=True)
class Chain:
    """How a tool joins a chain ([tools.TOOL.chain])."""

    refers: tuple[str, ...] = ()
    """Slots whose values the request must have named for a clause to say "it"; named after."""
    lead: bool = False
    """The first clause needs only the file, so the chain may open with "For FILE: "."""
    set: Slots = ()
    """Slots replaced in a chain; they may refer to the chain's values."""
    export: Mapping[str, str] = field(default_factory=dict)
    """Chain value name -> slot: what later tools of the chain may refer to."""
    values: Slots = ()
    """[chains.values] entries this tool replaces when it is in the chain."""


@dataclass(frozen=True)
class Outcome:
    """What a tool response and the answer to it say; placeholders: the call's arguments,
    {line} and the values (the response's, then the outcome's own)."""

    tool: str
    answer: str
    values: Slots = ()


@dataclass(frozen=True)
class Response:
    """[tools.TOOL.response]: values drawn first, then one outcome (ok with ok_share)."""

    ok: Outcome
    failed: Outcome
    values: Slots = ()


@dataclass(frozen=True)
class ToolTemplates:
    """[tools.TOOL]: what fills the tool's placeholders, its chains and its responses."""

    slots: Slots
    chain: Chain
    response: Response


@dataclass(frozen=True)
class Templates:
    """The contents of the templates file (see its comments for what each entry fills)."""

    sha256: str
    material: Material
    """Pools, [[writes]] groups, [domain.*] lists and renames the values draw from."""
    requests: Mapping[str, tuple[Template, ...]]
    clauses: Mapping[str, tuple[tuple[Template, ...], tuple[Template, ...]]]
    """Per tool: (clauses that name the file, clauses for a file already named)."""
    tools: Mapping[str, ToolTemplates]
    chain_leads: tuple[str, ...]
    chain_recipes: tuple[tuple[str, ...], ...]
    chain_values: Slots
    """Drawn once per chain, in order: its file (`source`), its symbol, ..."""
    ok_share: float
    """How often a tool response reports success."""
    response_lines: tuple[int, int]
    """The range of a response's {line}."""
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
    questions: tuple[tuple[str, ...], ...] = ()
    """(text, answer) pairs: free-standing questions and remarks no frame fits (why, how many,
    opinions, greetings, closings). Empty in the templates file, so that experiments without a
    phrasings file that adds some draw the data they always drew."""

    @property
    def pools(self) -> Mapping[str, tuple[str, ...]]:
        return self.material.pools

    @property
    def domain_files(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Per domain tool: (folders, file stems)."""
        return {t: (lists["dirs"], lists["names"]) for t, lists in self.material.domain.items()}


def load_templates(
    path: str | Path = DEFAULT_TEMPLATES_PATH, phrasings: Sequence[str | Path] = ()
) -> Templates:
    """Load and check a templates file, its lists extended by each `phrasings` file (an
    experiment's `[data] phrasings`); cached per resolved paths.

    A missing file, invalid TOML or a malformed entry raises DataError naming file and key.
    """
    extra = tuple(Path(p).expanduser().resolve() for p in phrasings)
    return _load_templates(Path(path).expanduser().resolve(), extra)


_EXTENDABLE = ("requests", "no_tool")
"""The tables a phrasings file may extend: what users say, never what fills or answers it."""


def _read_toml(path: Path, what: str) -> tuple[bytes, dict[str, Any]]:
    try:
        source = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError(f"{what} {path} does not exist") from err
    try:
        return source, tomllib.loads(source.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DataError(f"{path}: not valid TOML: {err}") from err


def _extend(base: dict[str, Any], extra: dict[str, Any], path: Path, key: str = "") -> None:
    """Append each list of `extra` to the list of the same name in `base`, in place."""
    for name, value in extra.items():
        dotted = f"{key}.{name}" if key else name
        if not key and name not in _EXTENDABLE:
            raise DataError(
                f"{path}: [{name}] cannot be extended by a phrasings file (only "
                f"{', '.join(f'[{t}]' for t in _EXTENDABLE)})"
            )
        if name not in base:
            raise DataError(f"{path}: {dotted} extends nothing in the templates file")
        if isinstance(value, dict) and isinstance(base[name], dict):
            _extend(base[name], value, path, dotted)
        elif isinstance(value, list) and isinstance(base[name], list):
            base[name] = [*base[name], *value]
        else:
            raise DataError(f"{path}: {dotted} must be a list, as in the templates file")


_TOP = (
    "pools",
    "renames",
    "writes",
    "domain",
    "requests",
    "chains",
    "clauses",
    "tools",
    "responses",
    "no_tool",
)


@functools.cache
def _load_templates(path: Path, phrasings: tuple[Path, ...] = ()) -> Templates:
    source, raw = _read_toml(path, "templates file")
    digest = hashlib.sha256(source)
    for extra in phrasings:
        extra_source, extra_raw = _read_toml(extra, "phrasings file")
        _extend(raw, extra_raw, extra)
        digest.update(b"\0" + str(extra.name).encode() + b"\0" + extra_source)
    r = Reader(path)
    top = r.table(raw, "top level", _TOP)
    material = _material(r, top)
    pools = material.pools
    clauses = {}
    for tool, entry in r.table(top["clauses"], "clauses").items():
        both = r.table(entry, f"clauses.{tool}", ("first", "same"))
        clauses[tool] = (
            _templates(r, both["first"], f"clauses.{tool}.first"),
            _templates(r, both["same"], f"clauses.{tool}.same"),
        )
    chains = r.table(top["chains"], "chains", ("leads", "recipes", "values"))
    recipes = tuple(
        r.strings(recipe, f"chains.recipes[{i}]")
        for i, recipe in enumerate(r.items(chains["recipes"], "chains.recipes"))
    )
    for i, recipe in enumerate(recipes):
        for tool in recipe:
            if tool not in clauses:
                raise r.fail(f"chains.recipes[{i}]", f"tool {tool!r} has no [clauses.{tool}]")
    chain_values = read_slots(r, chains["values"], "chains.values", pools)
    if CHAIN_SOURCE not in [s.name for s in chain_values]:
        raise r.fail("chains.values", f"needs {CHAIN_SOURCE!r}, the file a chain works on")
    responses = r.table(top["responses"], "responses", ("ok_share", "line"))
    lines = r.items(responses["line"], "responses.line")
    if len(lines) != 2:
        raise r.fail("responses.line", "must be [lowest, highest]")
    no_tool = r.table(
        top["no_tool"],
        "no_tool",
        ("acronyms", "differences", "concepts", "thanks"),
        optional=("questions",),
    )
    thanks = r.table(no_tool["thanks"], "no_tool.thanks", ("texts", "replies"))
    # optional: a templates file without it has no questions
    questions = r.table(
        no_tool.get("questions", {"entries": []}), "no_tool.questions", ("entries",)
    )

    def family(name: str, *fields: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
        key = f"no_tool.{name}"
        entry = r.table(no_tool[name], key, ("frames", "entries"))
        frames = r.strings(entry["frames"], f"{key}.frames")
        return frames, r.records(entry["entries"], f"{key}.entries", fields)

    acronym_frames, acronyms = family("acronyms", "acronym", "meaning")
    difference_frames, differences = family("differences", "a", "b", "answer")
    concept_frames, concepts = family("concepts", "a", "answer")

    return Templates(
        sha256=digest.hexdigest(),
        material=material,
        requests={
            tool: _templates(r, texts, f"requests.{tool}")
            for tool, texts in r.table(top["requests"], "requests").items()
        },
        clauses=clauses,
        tools=_tools(r, top["tools"], pools, {s.name for s in chain_values}),
        chain_leads=r.strings(chains["leads"], "chains.leads"),
        chain_recipes=recipes,
        chain_values=chain_values,
        ok_share=r.number(responses["ok_share"], "responses.ok_share"),
        response_lines=(
            r.integer(lines[0], "responses.line[0]"),
            r.integer(lines[1], "responses.line[1]"),
        ),
        acronym_frames=acronym_frames,
        acronyms=acronyms,
        difference_frames=difference_frames,
        differences=differences,
        concept_frames=concept_frames,
        concepts=concepts,
        thanks=r.strings(thanks["texts"], "no_tool.thanks.texts"),
        thanks_replies=r.strings(thanks["replies"], "no_tool.thanks.replies"),
        questions=r.records(
            questions["entries"], "no_tool.questions.entries", ("text", "answer"), empty=True
        ),
    )


def _material(r: Reader, top: dict[str, Any]) -> Material:
    pools = {
        name: r.strings(values, f"pools.{name}")
        for name, values in r.table(top["pools"], "pools").items()
    }
    missing = [p for p in REQUIRED_POOLS if p not in pools]
    if missing:
        raise r.fail("pools", f"needs {', '.join(missing)} (the built-in values draw from them)")
    renames = r.table(top["renames"], "renames", ("verbs", "class_suffixes"))
    writes = []
    for i, item in enumerate(r.items(top["writes"], "writes")):
        group = r.table(item, f"writes[{i}]", ("paths", "contents"))
        paths = r.strings(group["paths"], f"writes[{i}].paths")
        writes.append((paths, r.strings(group["contents"], f"writes[{i}].contents")))
    domain = {}
    for tool, entry in r.table(top["domain"], "domain").items():
        lists = r.table(entry, f"domain.{tool}", OWN_LISTS)
        domain[tool] = {name: r.strings(lists[name], f"domain.{tool}.{name}") for name in OWN_LISTS}
    return Material(
        pools=pools,
        writes=tuple(writes),
        domain=domain,
        verb_swaps=r.mapping(renames["verbs"], "renames.verbs"),
        class_swaps=r.mapping(renames["class_suffixes"], "renames.class_suffixes"),
    )


def _templates(r: Reader, value: Any, key: str) -> tuple[Template, ...]:
    out: list[Template] = []
    for i, item in enumerate(r.items(value, key)):
        where = f"{key}[{i}]"
        if isinstance(item, dict):
            entry = r.table(item, where, ("text", "args"))
            out.append(
                (
                    _format(r, entry["text"], f"{where}.text"),
                    r.table(entry["args"], f"{where}.args"),
                )
            )
        else:
            out.append(_format(r, item, where))
    return tuple(out)


def _format(r: Reader, value: Any, key: str) -> str:
    """A text with {placeholders} for str.format."""
    text = r.string(value, key)
    try:
        list(string.Formatter().parse(text))
    except ValueError as err:
        raise r.fail(key, f"not a valid template ({err}; write {{{{ for a literal brace)") from err
    return text


_TOOL_KEYS = ("like", "slots", "chain", "response")


def _tools(
    r: Reader, raw: Any, pools: Mapping[str, Any], chain_values: set[str]
) -> dict[str, ToolTemplates]:
    """[tools.*], with `like = "OTHER"` filling what a tool leaves out from OTHER."""
    entries = {
        tool: r.table(entry, f"tools.{tool}", (), _TOOL_KEYS)
        for tool, entry in r.table(raw, "tools").items()
    }
    out = {}
    for tool, entry in entries.items():
        key = f"tools.{tool}"
        like = r.string(entry.get("like", tool), f"{key}.like")
        base = entries.get(like, {}) if like != tool else {}
        if like != tool and (not base or "like" in base):
            raise r.fail(f"{key}.like", f"{like!r} is not a [tools] entry of its own (no like)")
        whose = {part: f"tools.{tool if part in entry else like}" for part in _TOOL_KEYS}
        merged = {**base, **entry}
        if "response" not in merged:
            raise r.fail(key, "needs a response (or like = another tool)")
        out[tool] = ToolTemplates(
            slots=read_slots(r, merged.get("slots", {}), f"{whose['slots']}.slots", pools),
            chain=_chain(
                r, merged.get("chain", {}), f"{whose['chain']}.chain", pools, chain_values
            ),
            response=_response(r, merged["response"], f"{whose['response']}.response", pools),
        )
    return out


def _chain(
    r: Reader, raw: Any, key: str, pools: Mapping[str, Any], chain_values: set[str]
) -> Chain:
    t = r.table(raw, key, (), ("refers", "lead", "set", "export", "values"))
    values = read_slots(r, t.get("values", {}), f"{key}.values", pools)
    for slot in values:
        if slot.name not in chain_values:
            raise r.fail(f"{key}.values", f"{slot.name!r} is not one of [chains.values]")
    return Chain(
        refers=r.strings(t.get("refers", []), f"{key}.refers", empty=True),
        lead=r.flag(t.get("lead", False), f"{key}.lead"),
        set=read_slots(r, t.get("set", {}), f"{key}.set", pools),
        export=r.mapping(t.get("export", {}), f"{key}.export"),
        values=values,
    )


def _response(r: Reader, raw: Any, key: str, pools: Mapping[str, Any]) -> Response:
    t = r.table(raw, key)
    values = read_slots(r, t.get("values", {}), f"{key}.values", pools)
    if "ok" in t or "failed" in t:
        t = r.table(t, key, ("ok", "failed"), ("values",))
        ok = _outcome(r, t["ok"], f"{key}.ok", pools)
        return Response(ok, _outcome(r, t["failed"], f"{key}.failed", pools), values)
    only = _outcome(r, {k: v for k, v in t.items() if k != "values"}, key, pools)
    return Response(only, only, values)


def _outcome(r: Reader, raw: Any, key: str, pools: Mapping[str, Any]) -> Outcome:
    t = r.table(raw, key, ("tool", "answer"), ("values",))
    return Outcome(
        tool=_format(r, t["tool"], f"{key}.tool"),
        answer=_format(r, t["answer"], f"{key}.answer"),
        values=read_slots(r, t.get("values", {}), f"{key}.values", pools),
    )
