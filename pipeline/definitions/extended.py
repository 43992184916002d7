"""The extended eval prompt set, generated from eval-only phrasing templates.

The seed's 27 prompts are too few to decide anything: a category of 3 prompts moves by a third
on one answer. `fixtures/prompts/extended.toml` (`--prompts extended`) has eight prompts per
catalog tool, each in its tool's category, plus chains (multi_tool) and no-tool prompts, written
from `fixtures/eval_templates.toml`: phrasings and values that the training generator's
`fixtures/data_templates.toml` does not have, so the set is held out by construction.

    python -m pipeline.definitions.extended            rewrite fixtures/prompts/extended.toml
    python -m pipeline.definitions.extended --check    exit 1 when the committed file is stale

Deterministic: one `random.Random` seeded from the templates file draws every value, so the
same templates and catalog always give the same bytes (a unit test regenerates and compares).
The output has the schema of `fixtures/prompts/seed.toml` and is checked with `load_prompts`
before it is written.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import tomllib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import PROMPTS_DIR, ROOT
from pipeline.definitions.prompts import NO_TOOL, load_prompts

DEFAULT_TEMPLATES_PATH = ROOT / "fixtures" / "eval_templates.toml"
DEFAULT_OUT_PATH = PROMPTS_DIR / "extended.toml"
MULTI_TOOL = "multi_tool"
"""The catalog's category of chains; it owns no tools."""

_TOP_KEYS = {"seed", "chain_max_tokens", "variants", "pools", "tools", "chains", "no_tool"}
_POOLS = (
    "dirs", "modules", "other_files", "test_dirs", "functions", "classes", "renames",
    "commands", "patterns", "imports", "writes", "scripts", "app_files", "counts", "lines",
    "columns",
)  # fmt: skip
_TOOL_KEYS = {"args", "optional", "prompts", "files"}
_TEMPLATE_KEYS = {"text", "args", "any_value", "optional", "omit", "also"}
_EXPECT_KEYS = {"tool", "args", "any_value", "optional", "omit"}
_RULE = 100


class EvalTemplateError(BadInput):
    """The eval templates file is invalid; the message names the file and the entry."""


def render(templates: Path = DEFAULT_TEMPLATES_PATH, catalog: Catalog | None = None) -> str:
    """The extended prompt set's TOML text (not yet checked by `load_prompts`)."""
    catalog = catalog or load_catalog()
    raw = _read(templates)
    where = str(templates)
    prompts = _Builder(raw, catalog, where).prompts()
    return _toml(prompts, templates)


def generate(
    out: Path = DEFAULT_OUT_PATH,
    templates: Path = DEFAULT_TEMPLATES_PATH,
    catalog: Catalog | None = None,
) -> Path:
    """Write the extended set to `out`, after `load_prompts` accepted every prompt of it."""
    catalog = catalog or load_catalog()
    text = render(templates, catalog)
    check(text, catalog)
    return io.write_text(out, text)


def check(text: str, catalog: Catalog | None = None) -> int:
    """Load `text` as a prompt file (raises `PromptError` on any bad prompt); the prompt count."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DEFAULT_OUT_PATH.name
        path.write_text(text, encoding="utf-8")
        return len(load_prompts(path, catalog or load_catalog()))


# --- building -------------------------------------------------------------------------------


class _Deck:
    """Draws from pools without repeats until a pool runs out (then reshuffles it)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.decks: dict[str, list[Any]] = {}

    def one(self, kind: str, pool: Sequence[Any]) -> Any:
        deck = self.decks.get(kind)
        if not deck:
            deck = self.decks[kind] = list(pool)
            self.rng.shuffle(deck)
        return deck.pop()


class _Builder:
    def __init__(self, raw: dict[str, Any], catalog: Catalog, where: str) -> None:
        self.catalog = catalog
        self.where = where
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise EvalTemplateError(f"{where}: unknown key {unknown[0]!r}")
        if not isinstance(raw.get("seed"), int):
            raise EvalTemplateError(f"{where}: needs an integer `seed`")
        self.rng = random.Random(raw["seed"])
        self.chain_max_tokens = raw.get("chain_max_tokens")
        pools = raw.get("pools", {})
        missing = [p for p in _POOLS if not pools.get(p)]
        if missing:
            raise EvalTemplateError(f"{where}: [pools] needs a non-empty {missing[0]!r}")
        self.pools = pools
        self.files = [f"{d}/{m}" for d in pools["dirs"] for m in pools["modules"]]
        variants = raw.get("variants", {})
        self.slash = set(variants.get("slash", ()))
        self.newline = set(variants.get("newline", ()))
        self.tools = raw.get("tools", {})
        self.chains = raw.get("chains", [])
        self.no_tool = raw.get("no_tool", {}).get("prompts", [])
        extra = sorted(set(self.tools) - set(catalog.names()))
        if extra:
            raise EvalTemplateError(f"{where}: [tools.{extra[0]}] is not a catalog tool")
        absent = [t for t in catalog.names() if not self.tools.get(t, {}).get("prompts")]
        if absent:
            raise EvalTemplateError(f"{where}: no [tools.{absent[0]}] prompts for a catalog tool")
        if MULTI_TOOL not in catalog.categories:
            raise EvalTemplateError(f"{where}: the catalog has no {MULTI_TOOL!r} category")

    def prompts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tools in self.catalog.by_category().values():
            for tool in tools:
                out.extend(self._singles(tool.name))
        deck = _Deck(self.rng)
        for i, chain in enumerate(self.chains, 1):
            out.append(self._chain(chain, i, deck))
        for i, text in enumerate(self.no_tool, 1):
            where = f"{self.where}: [no_tool] prompt {i}"
            if not isinstance(text, str) or not text or _fields(text):
                raise EvalTemplateError(f"{where}: needs a plain text without placeholders")
            out.append(
                {"id": f"notool-{i:02d}", "category": NO_TOOL, "text": text, "match": "none"}
            )
        return out

    def _singles(self, name: str) -> list[dict[str, Any]]:
        table = self.tools[name]
        at = f"{self.where}: [tools.{name}]"
        unknown = sorted(set(table) - _TOOL_KEYS)
        if unknown:
            raise EvalTemplateError(f"{at}: unknown key {unknown[0]!r}")
        deck = _Deck(self.rng)
        files = table.get("files") or self.files
        out = []
        for i, template in enumerate(table["prompts"], 1):
            where = f"{at} prompt {i}"
            entry = {"text": template} if isinstance(template, str) else template
            if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
                raise EvalTemplateError(f"{where}: a text, or a table with a `text`")
            unknown = sorted(set(entry) - _TEMPLATE_KEYS)
            if unknown:
                raise EvalTemplateError(f"{where}: unknown key {unknown[0]!r}")
            slots = self._slots(deck, files)
            spec = {
                "tool": name,
                "args": {**table.get("args", {}), **entry.get("args", {})},
                "optional": entry.get("optional", table.get("optional", [])),
                "any_value": entry.get("any_value", []),
                "omit": entry.get("omit", []),
            }
            expect = [self._expectation(spec, slots, where)]
            expect += [self._expectation(e, slots, f"{where} also") for e in entry.get("also", [])]
            out.append(
                {
                    "id": f"{name}-{i:02d}",
                    "category": self.catalog.tool(name).category,
                    "text": _fill(entry["text"], slots, where),
                    "match": "any_of",
                    "expect": expect,
                }
            )
        return out

    def _chain(self, chain: Any, i: int, deck: _Deck) -> dict[str, Any]:
        where = f"{self.where}: [[chains]] {i}"
        if not isinstance(chain, dict) or not isinstance(chain.get("text"), str):
            raise EvalTemplateError(f"{where}: needs a `text`")
        unknown = sorted(set(chain) - {"text", "expect", "max_tokens"})
        if unknown:
            raise EvalTemplateError(f"{where}: unknown key {unknown[0]!r}")
        steps = chain.get("expect", [])
        if not isinstance(steps, list) or len(steps) < 2:
            raise EvalTemplateError(f"{where}: a chain expects at least two calls")
        slots = self._slots(deck, self.files)
        prompt: dict[str, Any] = {
            "id": f"multi-{i:02d}",
            "category": MULTI_TOOL,
            "text": _fill(chain["text"], slots, where),
            "match": "all_of",
        }
        max_tokens = chain.get("max_tokens", self.chain_max_tokens)
        if max_tokens is not None:
            prompt["max_tokens"] = max_tokens
        prompt["expect"] = [
            self._expectation(step, slots, f"{where} call {n}") for n, step in enumerate(steps, 1)
        ]
        return prompt

    def _slots(self, deck: _Deck, files: Sequence[str]) -> dict[str, Any]:
        """One value per placeholder, drawn in a fixed order."""
        p = self.pools
        file = deck.one("file", files)
        stem = Path(file).stem
        test_dir = deck.one("test_dir", p["test_dirs"])
        old_name, new_name = deck.one("rename", p["renames"])
        write_path, content = deck.one("write", p["writes"])
        script_path, script = deck.one("script", p["scripts"])
        return {
            "file": file,
            "name": stem.replace("_", " "),
            "dir": deck.one("dir", p["dirs"]),
            "other": deck.one("other", p["other_files"]),
            "test": f"{test_dir}/test_{stem}.py",
            "test_dir": test_dir,
            "func": deck.one("func", p["functions"]),
            "cls": deck.one("cls", p["classes"]),
            "symbol": deck.one("symbol", [*p["functions"], *p["classes"]]),
            "old_name": old_name,
            "new_name": new_name,
            "line": self.rng.randint(*p["lines"]),
            "column": self.rng.randint(*p["columns"]),
            "count": deck.one("count", p["counts"]),
            "command": deck.one("command", p["commands"]),
            "pattern": deck.one("pattern", p["patterns"]),
            "import_stmt": deck.one("import", p["imports"]),
            "write_path": write_path,
            "content": content,
            "script_path": script_path,
            "script": script,
            "app_file": deck.one("app_file", p["app_files"]),
        }

    def _expectation(self, spec: Any, slots: dict[str, Any], where: str) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise EvalTemplateError(f"{where}: an expectation is a table with a `tool`")
        unknown = sorted(set(spec) - _EXPECT_KEYS)
        if unknown:
            raise EvalTemplateError(f"{where}: unknown key {unknown[0]!r}")
        try:
            tool = self.catalog.tool(str(spec.get("tool")))
        except KeyError as err:
            raise EvalTemplateError(f"{where}: {err.args[0]}") from err
        properties = tool.parameters.get("properties", {})
        any_value = list(spec.get("any_value", []))
        dropped = {*any_value, *spec.get("omit", [])}
        args: dict[str, list[Any]] = {}
        for arg, value in spec.get("args", {}).items():
            if arg in dropped:
                continue
            if arg not in properties:
                raise EvalTemplateError(f"{where}: {tool.name} has no argument {arg!r}")
            kind = properties[arg].get("type")
            allowed: list[Any] = []
            for alternative in value if isinstance(value, list) else [value]:
                typed = _typed(alternative, kind, slots, f"{where}: {tool.name}.{arg}")
                for v in self._variants(alternative, typed):
                    if v not in allowed:
                        allowed.append(v)
            args[arg] = allowed
        out: dict[str, Any] = {"tool": tool.name}
        if args:
            out["args"] = args
        optional = [a for a in spec.get("optional", []) if a in args or a in any_value]
        if optional:
            out["optional"] = optional
        if any_value:
            out["any_value"] = any_value
        return out

    def _variants(self, template: Any, value: Any) -> list[Any]:
        """`value` and the variants [variants] adds when `template` is just one placeholder."""
        out = [value]
        fields = _fields(template) if isinstance(template, str) else []
        if isinstance(value, str) and fields and template == f"{{{fields[0]}}}":
            if fields[0] in self.slash and not value.endswith("/"):
                out.append(value + "/")
            if fields[0] in self.newline and not value.endswith("\n"):
                out.append(value + "\n")
        return out


def _typed(value: Any, kind: str | None, slots: dict[str, Any], where: str) -> Any:
    """A template's allowed value with its placeholders filled, as the schema's type."""
    if not isinstance(value, str):
        ok = {
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        }.get(kind or "", False)
        if not ok:
            raise EvalTemplateError(f"{where}: {value!r} is not of the argument's type {kind}")
        return value
    text = _fill(value, slots, where)
    if kind == "integer":
        try:
            return int(text)
        except ValueError as err:
            raise EvalTemplateError(f"{where}: {text!r} is not an integer") from err
    if kind not in ("string", None):
        raise EvalTemplateError(f"{where}: write a {kind} argument as a literal, not {text!r}")
    return text


def _fields(text: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]


def _fill(text: str, slots: dict[str, Any], where: str) -> str:
    unknown = [f for f in _fields(text) if f not in slots]
    if unknown:
        known = ", ".join(sorted(slots))
        raise EvalTemplateError(f"{where}: unknown placeholder {{{unknown[0]}}} (known: {known})")
    return text.format_map(slots)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise EvalTemplateError(f"eval templates file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise EvalTemplateError(f"{path}: not valid TOML: {err}") from err


# --- writing TOML ---------------------------------------------------------------------------


def _toml(prompts: list[dict[str, Any]], templates: Path) -> str:
    counts = Counter(p["category"] for p in prompts)
    try:
        source = templates.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        source = templates.name
    lines = [
        f"# Generated by `python -m pipeline.definitions.extended` from {source}:",
        "# edit the templates and regenerate, not this file. The schema of",
        "# fixtures/prompts/seed.toml, plus any_value: arguments whose value the prompt leaves",
        "# open (judged present with any non-empty value).",
        f"# {len(prompts)} prompts: "
        + ", ".join(f"{category} {n}" for category, n in counts.items())
        + ".",
    ]
    category = None
    for prompt in prompts:
        if prompt["category"] != category:
            category = prompt["category"]
            head = f"# --- {category} ({counts[category]}) "
            lines += ["", head + "-" * max(3, _RULE - len(head))]
        lines += ["[[prompt]]"]
        lines += [f"{k} = {_value(prompt[k])}" for k in prompt if k != "expect"]
        for exp in prompt.get("expect", []):
            lines += ["[[prompt.expect]]"]
            lines += [f"{k} = {_value(v)}" for k, v in exp.items()]
        lines += [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.definitions.extended", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES_PATH)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_PATH)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when --out differs from a regeneration"
    )
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog()
        text = render(args.templates, catalog)
        n = check(text, catalog)
        if args.check:
            current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
            if current != text:
                print(
                    f"{args.out} is stale: run python -m pipeline.definitions.extended",
                    file=sys.stderr,
                )
                return 1
            print(f"{args.out}: up to date ({n} prompts)")
            return 0
        io.write_text(args.out, text)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {args.out} ({n} prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
