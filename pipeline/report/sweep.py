"""The system-prompt sweep's table: the same model and prompts under each system prompt.

BFCL v4 reports format sensitivity as the spread of accuracy across prompt formats; here each
category's score under every system prompt given (`--system-prompt PATH`, repeatable; the
experiment's own first), and per category the spread (highest - lowest). Written to
`reports/<experiment>/system_prompts.{json,md}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.eval.records import EvalSummary
from pipeline.report.show import pct, show_path


def sweep_table(variants: Sequence[tuple[Path, EvalSummary]]) -> dict[str, Any]:
    """Per system prompt, each category's mean at the decision temperature; per category the
    spread across them, and the widest."""
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    for path, summary in variants:
        cats = summary.decision().categories
        names += [n for n in cats if n not in names]
        rows.append(
            {
                "system_prompt": show_path(path),
                "run_dir": show_path(Path(summary.model or "")) if summary.model else "",
                "categories": {n: cats[n].mean for n in cats},
                "n": {n: cats[n].n for n in cats},
            }
        )
    spread = {}
    for name in names:
        values = [r["categories"][name] for r in rows if name in r["categories"]]
        spread[name] = max(values) - min(values) if values else 0.0
    widest = max(spread, key=lambda n: spread[n]) if spread else None
    return {"variants": rows, "categories": names, "spread": spread, "widest": widest}


def render_sweep(table: Mapping[str, Any], experiment: str) -> str:
    names = table["categories"]
    lines = [
        f"# {experiment}: the same model under each system prompt",
        "",
        "Each category's score at the decision temperature; the spread is the highest minus "
        "the lowest (BFCL v4's format sensitivity). The first row is the experiment's own.",
        "",
        "| system prompt | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in table["variants"]:
        cells = [pct(row["categories"].get(n)) if n in row["categories"] else "-" for n in names]
        lines.append(f"| `{row['system_prompt']}` | " + " | ".join(cells) + " |")
    lines.append("| **spread** | " + " | ".join(pct(table["spread"][n]) for n in names) + " |")
    if table.get("widest"):
        w = table["widest"]
        lines += ["", f"Widest spread: {w}, {pct(table['spread'][w])}."]
    return "\n".join(lines) + "\n"


def write_sweep(table: Mapping[str, Any], experiment: str, json_path: Path, md_path: Path) -> Path:
    io.write_json(json_path, dict(table))
    return io.write_text(md_path, render_sweep(table, experiment))
