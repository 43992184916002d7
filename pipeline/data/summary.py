"""What a training example is (single, chain, multi_turn, no_tool) and counts over a dataset.

Reads any syntax in either mode, so it describes generated and hand-made data alike; the
categories are the catalog's (fixtures/tools.json).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.data.jsonl import message_calls
from pipeline.definitions.calls import CallParseError, unwrap
from pipeline.definitions.catalog import Catalog, load_catalog

KINDS = ("single", "chain", "multi_turn", "no_tool")
NO_TOOL = "no_tool"
MULTI_TOOL = "multi_tool"


@dataclass(frozen=True)
class Description:
    kind: str
    """single, chain, multi_turn or no_tool."""
    category: str
    """The called tool's category; multi_tool for chains; no_tool without calls."""
    tools: tuple[str, ...]
    """The calls of the example (code mode unwrapped), in order."""


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


def format_summary(summary: Mapping[str, Mapping[str, Counter[str]]]) -> str:
    """The summary as three aligned tables (kind, category, tool), one column per split."""
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
