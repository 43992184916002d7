"""How the report shows values: percentages, paths and check costs, the same in results.md,
results.json, results.html and the chart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.workspace import CHECKOUT


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def show_path(path: Path | str | None) -> str:
    """Paths under the checkout are shown relative to it, others as they are."""
    if path is None:
        return ""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(CHECKOUT))
    except ValueError:
        return str(p)


def shown_target(path: str) -> Path:
    """The file a path from `show_path` names."""
    return Path(path) if Path(path).is_absolute() else CHECKOUT / path


COST_HEADERS = ("check", "here", "confound ignored", "prompts", "cost [95%]", "decision")
"""The columns of the table of what ignoring each preflight check cost."""


def cost_cells(row: Mapping[str, Any]) -> list[str]:
    """A measured check cost (the report's preflight `costs` row) as COST_HEADERS' cells:
    this run's verdict on the check, and the cost in points (row - clean) with its interval."""
    return [
        row["check"],
        {"fail": "FAILED", "pass": "passed"}.get(row["here"], "-"),
        row["confound"],
        f"{row['prompts']} ({row['scored']})",
        cost_points(row),
        row["decision"],
    ]


def cost_points(row: Mapping[str, Any]) -> str:
    return f"{100 * row['difference']:+.1f} [{100 * row['lo']:+.1f}, {100 * row['hi']:+.1f}]"
