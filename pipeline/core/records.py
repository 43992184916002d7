"""Typed, versioned records between steps: frozen dataclasses with to/from JSON.

A record file carries `kind` and `version`; reading a file of another kind, a newer version or
a missing field is a `RecordError` naming the file, never a silent fallback. Nested dataclass
fields, tuples and dicts of them are converted by their type hints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

from pipeline.core import io
from pipeline.core.errors import BadInput


class RecordError(BadInput):
    """A record file is missing, of another kind or version, or lacks a field."""


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _build(hint: Any, value: Any) -> Any:
    """`value` (plain JSON) as the type `hint` describes."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_build(inner, v) for v in value)
    if origin is list:
        (inner,) = typing.get_args(hint) or (Any,)
        return [_build(inner, v) for v in value]
    if origin is dict:
        _, inner = typing.get_args(hint) or (str, Any)
        return {k: _build(inner, v) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _fields(hint, value, hint.__name__)
    if hint is Path:
        return Path(value)
    return value


def _fields(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _build(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{where}: missing field {f.name!r}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of every record file; subclasses set KIND and VERSION."""

    KIND: ClassVar[str] = "record"
    VERSION: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, "version": self.VERSION, **_plain(self)}

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> Self:
        where = where or cls.KIND
        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a {cls.KIND} record")
        kind, version = data.get("kind"), data.get("version")
        if kind != cls.KIND:
            raise RecordError(f"{where}: a {kind!r} record, not {cls.KIND!r}")
        if not isinstance(version, int) or version > cls.VERSION:
            raise RecordError(
                f"{where}: {cls.KIND} version {version!r}; this routegate reads up to "
                f"{cls.VERSION}: upgrade routegate or rebuild"
            )
        return _fields(cls, data, where)

    def write(self, path: Path) -> Path:
        return io.write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.from_json(io.read_json(path), str(path))
