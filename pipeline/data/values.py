"""How the templates file says what a placeholder is filled with, and drawing those values.

`fixtures/data_templates.toml` gives every tool a table of slots (placeholder -> value), how it
joins a chain and what its tool response says (`[tools.*]`); the values are small TOML tables
with one operation each (the file's comments list them). This module reads them (`Reader`: a
wrong entry raises DataError naming the file and key) and draws them with the generator's one
seeded random.Random, in the order the file lists them, so the same file and seed always give
the same values. Nothing here knows a tool by name: a new tool needs only data.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.jsonl import DataError

Env = MutableMapping[str, Any]
"""What a value can refer to (earlier slots, chain or response values); parts are written here."""


class Reader:
    """Typed reads of a parsed TOML file; a wrong entry raises DataError with file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> DataError:
        return DataError(f"{self.path}: {key}: {problem}")

    def table(
        self, value: Any, key: str, fields: Sequence[str] = (), optional: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A table; with `fields`, exactly those keys (and any of `optional`)."""
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        if fields or optional:
            missing = [f for f in fields if f not in value]
            unknown = [k for k in value if k not in fields and k not in optional]
            if missing or unknown:
                if fields:
                    wanted = f"needs exactly the keys {', '.join(fields)}"
                    wanted += f" (and optionally {', '.join(optional)})" if optional else ""
                else:
                    wanted = f"may have only the keys {', '.join(optional)}"
                raise self.fail(
                    key,
                    f"{wanted} (missing: {', '.join(missing) or 'none'}; "
                    f"unknown: {', '.join(unknown) or 'none'})",
                )
        return value

    def items(self, value: Any, key: str, empty: bool = False) -> list[Any]:
        if not isinstance(value, list) or not (value or empty):
            raise self.fail(key, f"must be a non-empty array, got {type(value).__name__}")
        return value

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        # bool is an int in Python, never a number in TOML.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"must be {what}, got {type(value).__name__}")
        return value

    def string(self, value: Any, key: str) -> str:
        return self.typed(value, key, str, "a string")

    def strings(self, value: Any, key: str, empty: bool = False) -> tuple[str, ...]:
        return tuple(
            self.string(v, f"{key}[{i}]") for i, v in enumerate(self.items(value, key, empty))
        )

    def mapping(self, value: Any, key: str) -> dict[str, str]:
        return {k: self.string(v, f"{key}.{k}") for k, v in self.table(value, key).items()}

    def number(self, value: Any, key: str) -> float:
        return self.typed(value, key, (int, float), "a number")

    def integer(self, value: Any, key: str) -> int:
        return self.typed(value, key, int, "a whole number")

    def flag(self, value: Any, key: str) -> bool:
        return self.typed(value, key, bool, "true or false")

    def records(
        self, value: Any, key: str, fields: Sequence[str], empty: bool = False
    ) -> tuple[tuple[str, ...], ...]:
        """An array of tables with exactly `fields`, all strings: their values in that order."""
        out = []
        for i, item in enumerate(self.items(value, key, empty)):
            entry = self.table(item, f"{key}[{i}]", fields)
            out.append(tuple(self.string(entry[f], f"{key}[{i}].{f}") for f in fields))
        return tuple(out)


# --- what values are drawn from ---------------------------------------------------------------

OWN_LISTS = ("dirs", "names", "issues")
"""The lists of a tool's [domain.TOOL] table."""
REQUIRED_POOLS = ("src_dirs", "src_files", "test_dirs", "functions", "classes", "write_prefixes")
"""The pools the built-in values (file, test_path, symbol, write) draw from."""


@dataclass(frozen=True)
class Material:
    """The templates file's pools, [[writes]] groups, [domain.*] lists and [renames]."""

    pools: Mapping[str, tuple[str, ...]]
    writes: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """Groups of (paths, contents) that fit each other."""
    domain: Mapping[str, Mapping[str, tuple[str, ...]]]
    """Per tool: its own lists (dirs, names, issues)."""
    verb_swaps: Mapping[str, str]
    class_swaps: Mapping[str, str]


@dataclass
class Draw:
    """Drawing values for one tool (or one chain, tool ""): the rng and what it draws from."""

    rng: random.Random
    material: Material
    tool: str = ""

    def pick(self, pool: str) -> str:
        return self.rng.choice(self.material.pools[pool])

    def own(self, key: str) -> tuple[str, ...]:
        lists = self.material.domain.get(self.tool)
        if lists is None:
            raise DataError(f"tool {self.tool!r} draws from [domain.{self.tool}], which is missing")
        return lists[key]

    def file(self) -> str:
        return f"{self.pick('src_dirs')}/{self.pick('src_files')}"

    def test_path(self, source: str | None = None) -> str:
        rng = self.rng
        if source is None and rng.random() < 0.25:
            return self.pick("test_dirs") + rng.choice(("", "/"))
        stem = Path(source).stem if source else Path(self.pick("src_files")).stem
        return f"{self.pick('test_dirs')}/test_{stem}.py"

    def symbol(self) -> tuple[str, str]:
        """A function (or method) or class name, and which of the three it is."""
        rng = self.rng
        if rng.random() < 0.55:
            return self.pick("functions"), rng.choice(("function", "function", "method"))
        return self.pick("classes"), "class"

    def renamed(self, name: str) -> str:
        """A plausible new name for a symbol: a swapped verb or class suffix, or a variant."""
        rng, m = self.rng, self.material
        if name[0].isupper():
            options = [name.replace(k, v) for k, v in m.class_swaps.items() if name.endswith(k)]
            options += ["Legacy" + name, "Base" + name, name + "V2"]
        else:
            head, _, rest = name.partition("_")
            options = [f"{m.verb_swaps[head]}_{rest}"] if head in m.verb_swaps and rest else []
            options += [name + "_legacy", "_" + name, name + "_v2"]
        return rng.choice(options)


# --- values -----------------------------------------------------------------------------------


class Value:
    def draw(self, d: Draw, env: Env) -> Any:  # pragma: no cover - every value overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Pool(Value):
    name: str

    def draw(self, d: Draw, env: Env) -> Any:
        return d.pick(self.name)


@dataclass(frozen=True)
class Own(Value):
    """One entry of the tool's own [domain.TOOL] list."""

    key: str

    def draw(self, d: Draw, env: Env) -> Any:
        return d.rng.choice(d.own(self.key))


@dataclass(frozen=True)
class OneOf(Value):
    options: tuple[Any, ...]

    def draw(self, d: Draw, env: Env) -> Any:
        return d.rng.choice(self.options)


@dataclass(frozen=True)
class Int(Value):
    low: int
    high: int

    def draw(self, d: Draw, env: Env) -> Any:
        return d.rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Chance(Value):
    share: float
    then: Value
    otherwise: Value

    def draw(self, d: Draw, env: Env) -> Any:
        return (self.then if d.rng.random() < self.share else self.otherwise).draw(d, env)


_AS: dict[str, Callable[[Draw, Any], Any]] = {
    "text": lambda d, v: v,
    "stem": lambda d, v: Path(v).stem,
    "renamed": lambda d, v: d.renamed(v),
    "unslashed": lambda d, v: v.rstrip("/"),
    "utf8_length": lambda d, v: len(v.encode()),
    "count": lambda d, v: len(v),
    "lines": lambda d, v: "\n".join(v),
    "comma_list": lambda d, v: ", ".join(v),
}
"""What `{ ref = "SLOT", as = ... }` makes of the slot's value."""


@dataclass(frozen=True)
class Ref(Value):
    name: str
    as_: str = "text"

    def draw(self, d: Draw, env: Env) -> Any:
        if self.name not in env:
            known = ", ".join(sorted(env)) or "none"
            raise DataError(
                f"tool {d.tool!r}: {{ ref = {self.name!r} }} is unknown (known: {known})"
            )
        return _AS[self.as_](d, env[self.name])


@dataclass(frozen=True)
class Concat(Value):
    parts: tuple[str | Value, ...]

    def draw(self, d: Draw, env: Env) -> Any:
        return "".join(p if isinstance(p, str) else str(p.draw(d, env)) for p in self.parts)


@dataclass(frozen=True)
class ListOf(Value):
    count: Value
    item: Value

    def draw(self, d: Draw, env: Env) -> Any:
        return [self.item.draw(d, env) for _ in range(self.count.draw(d, env))]


@dataclass(frozen=True)
class Builtin(Value):
    """`{ value = KIND, ... }`: a file, test path, symbol, domain file or write."""

    kind: str
    parts: Mapping[str, str]
    """Part of the value (e.g. a symbol's `what`) -> the slot it is stored in."""
    options: Mapping[str, Any]

    def draw(self, d: Draw, env: Env) -> Any:
        value, parts = _BUILTINS[self.kind].draw(self, d, env)
        for part, slot in self.parts.items():
            env[slot] = parts[part]
        return value


@dataclass(frozen=True)
class Modified(Value):
    """A value with `plus` (a number added) or `slash` (a "/" added to a path without a dot)."""

    inner: Value
    plus: int | None = None
    slash: float | None = None

    def draw(self, d: Draw, env: Env) -> Any:
        value = self.inner.draw(d, env)
        if self.plus is not None:
            value += self.plus
        if self.slash is not None and "." not in value and d.rng.random() < self.slash:
            value += "/"
        return value


@dataclass(frozen=True)
class _Kind:
    parts: tuple[str, ...]
    options: Mapping[str, type]
    draw: Callable[[Builtin, Draw, Env], tuple[Any, Mapping[str, Any]]]


def _write(b: Builtin, d: Draw, env: Env) -> tuple[Any, Mapping[str, Any]]:
    rng, writes = d.rng, d.material.writes
    paths, contents = writes[-1] if b.options.get("last_group") else rng.choice(writes)
    prefix = rng.choice(d.material.pools["write_prefixes"]) if b.options.get("prefix", True) else ""
    path = prefix + rng.choice(paths)
    usable = [c for c in contents if "\n" not in c] if b.options.get("one_line") else contents
    return path, {"content": rng.choice(usable)}


def _domain_file(b: Builtin, d: Draw, env: Env) -> tuple[Any, Mapping[str, Any]]:
    path = f"{d.rng.choice(d.own('dirs'))}/{d.rng.choice(d.own('names'))}.py"
    return path, {"name": Path(path).stem.replace("_", " ")}


def _symbol(b: Builtin, d: Draw, env: Env) -> tuple[Any, Mapping[str, Any]]:
    name, what = d.symbol()
    return name, {"what": what}


def _test_path(b: Builtin, d: Draw, env: Env) -> tuple[Any, Mapping[str, Any]]:
    source = b.options.get("for")
    return d.test_path(None if source is None else Ref(source).draw(d, env)), {}


_BUILTINS: dict[str, _Kind] = {
    "file": _Kind((), {}, lambda b, d, env: (d.file(), {})),
    "test_path": _Kind((), {"for": str}, _test_path),
    "symbol": _Kind(("what",), {}, _symbol),
    "domain_file": _Kind(("name",), {}, _domain_file),
    "write": _Kind(("content",), {"last_group": bool, "prefix": bool, "one_line": bool}, _write),
}


# --- reading values ---------------------------------------------------------------------------

_MODIFIERS = ("plus", "slash")
_Read = Callable[[Reader, dict[str, Any], str, Mapping[str, Any]], Value]


def read_value(r: Reader, raw: Any, key: str, pools: Mapping[str, Any]) -> Value:
    """One value table; an unknown operation, option or pool names the key."""
    table = r.table(raw, key)
    ops = [k for k in table if k in _OPS]
    if len(ops) != 1:
        got = ", ".join(table) or "none"
        raise r.fail(key, f"needs exactly one of {', '.join(_OPS)} (got {got})")
    op = ops[0]
    required, optional, read = _OPS[op]
    if op == "value":
        kind = r.string(table["value"], f"{key}.value")
        if kind not in _BUILTINS:
            raise r.fail(f"{key}.value", f"{kind!r} is not one of {', '.join(_BUILTINS)}")
        optional = (*_BUILTINS[kind].parts, *_BUILTINS[kind].options)
    missing = [k for k in required if k not in table]
    if missing:
        raise r.fail(key, f"{op} needs {' and '.join(missing)}")
    allowed = (op, *required, *optional, *_MODIFIERS)
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise r.fail(key, f"unknown key {unknown[0]!r} for {op} (allowed: {', '.join(allowed)})")
    value = read(r, table, key, pools)
    plus, slash = table.get("plus"), table.get("slash")
    if plus is None and slash is None:
        return value
    return Modified(
        value,
        None if plus is None else r.integer(plus, f"{key}.plus"),
        None if slash is None else r.number(slash, f"{key}.slash"),
    )


def _read_pool(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    name = r.string(t["pool"], f"{key}.pool")
    if name not in pools:
        raise r.fail(f"{key}.pool", f"there is no pool {name!r} in [pools]")
    return Pool(name)


def _read_own(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    name = r.string(t["domain"], f"{key}.domain")
    if name not in OWN_LISTS:
        raise r.fail(f"{key}.domain", f"{name!r} is not one of {', '.join(OWN_LISTS)}")
    return Own(name)


def _read_one_of(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    return OneOf(tuple(r.items(t["one_of"], f"{key}.one_of")))


def _read_int(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    bounds = r.items(t["int"], f"{key}.int")
    if len(bounds) != 2:
        raise r.fail(f"{key}.int", "must be [lowest, highest]")
    low, high = (r.integer(b, f"{key}.int[{i}]") for i, b in enumerate(bounds))
    if low > high:
        raise r.fail(f"{key}.int", f"{low} is more than {high}")
    return Int(low, high)


def _read_chance(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    return Chance(
        r.number(t["chance"], f"{key}.chance"),
        read_value(r, t["then"], f"{key}.then", pools),
        read_value(r, t["else"], f"{key}.else", pools),
    )


def _read_ref(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    as_ = r.string(t.get("as", "text"), f"{key}.as")
    if as_ not in _AS:
        raise r.fail(f"{key}.as", f"{as_!r} is not one of {', '.join(_AS)}")
    return Ref(r.string(t["ref"], f"{key}.ref"), as_)


def _read_concat(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    parts = [
        part if isinstance(part, str) else read_value(r, part, f"{key}.concat[{i}]", pools)
        for i, part in enumerate(r.items(t["concat"], f"{key}.concat"))
    ]
    return Concat(tuple(parts))


def _read_list(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    return ListOf(
        read_value(r, t["list"], f"{key}.list", pools), read_value(r, t["of"], f"{key}.of", pools)
    )


def _read_builtin(r: Reader, t: dict[str, Any], key: str, pools: Mapping[str, Any]) -> Value:
    kind = _BUILTINS[t["value"]]
    parts = {p: r.string(t[p], f"{key}.{p}") for p in kind.parts if p in t}
    options = {}
    for name, wanted in kind.options.items():
        if name in t:
            given = t[name]
            if not isinstance(given, wanted):
                raise r.fail(f"{key}.{name}", f"must be a {wanted.__name__}")
            options[name] = given
    return Builtin(t["value"], parts, options)


_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], _Read]] = {
    "pool": ((), (), _read_pool),
    "domain": ((), (), _read_own),
    "one_of": ((), (), _read_one_of),
    "int": ((), (), _read_int),
    "chance": (("then", "else"), (), _read_chance),
    "ref": ((), ("as",), _read_ref),
    "concat": ((), (), _read_concat),
    "list": (("of",), (), _read_list),
    "value": ((), (), _read_builtin),
}
"""Each operation: the keys it needs besides its own, those it may have, and its reader."""


@dataclass(frozen=True)
class Slot:
    name: str
    value: Value
    when: str = ""
    """Only drawn when this name is already known (a chain value an earlier tool exported)."""


Slots = tuple[Slot, ...]


def read_slots(r: Reader, raw: Any, key: str, pools: Mapping[str, Any]) -> Slots:
    """A table of slot -> value, in the file's order; a value may add `when = "NAME"`."""
    out = []
    for name, entry in r.table(raw, key).items():
        where = f"{key}.{name}"
        entry = dict(r.table(entry, where))
        when = r.string(entry.pop("when", ""), f"{where}.when")
        out.append(Slot(name, read_value(r, entry, where, pools), when))
    return tuple(out)


def draw_slots(slots: Slots, d: Draw, scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every slot's value, drawn in order; a value may refer to earlier slots, then `scope`."""
    out: dict[str, Any] = {}
    env = collections.ChainMap(out, dict(scope or {}))
    for slot in slots:
        if slot.when and slot.when not in env:
            continue
        out[slot.name] = slot.value.draw(d, env)
    return out
