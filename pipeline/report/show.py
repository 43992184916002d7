"""How the report shows values: percentages and paths, the same in results.md, results.json
and the chart."""

from __future__ import annotations

from pathlib import Path

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
