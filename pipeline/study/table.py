"""reports/NAME/confounds.md: the study's rows as one table, and which rows collapsed."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.study.records import CLEAN, ConfoundRow

COLLAPSE = 0.5
"""A row whose overall is at most this share of the clean row's is called out under the table."""


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def collapsed(row: ConfoundRow, clean: ConfoundRow | None) -> bool:
    """The row's overall is at most half the clean row's (never for a clean overall of 0)."""
    if clean is None or row is clean or not clean.overall or row.overall is None:
        return False
    return row.overall <= COLLAPSE * clean.overall


def markdown(experiment: str, rows: Sequence[ConfoundRow]) -> str:
    clean = next((r for r in rows if r.confound == CLEAN), None)
    categories = list(dict.fromkeys(c for r in rows for c in r.categories))
    head = ["confound", "preflight failed", "overall", *categories]
    head += ["train loss", "val loss", "minutes"]
    lines = [
        f"# Confound study: {experiment}",
        "",
        "Each row trains the experiment with one confound injected (the clean row: none), "
        "builds it whatever the preflight says and scores the eval at the decision "
        "temperature.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in rows:
        if row.skipped:
            cells = [row.confound, f"skipped: {row.skipped}", *("" for _ in head[2:])]
        else:
            overall = _score(row.overall) + (" (collapsed)" if collapsed(row, clean) else "")
            cells = [
                row.confound,
                ", ".join(row.preflight_failed) or "none",
                overall,
                *(_score(row.categories.get(c)) for c in categories),
                _loss(row.train_loss),
                _loss(row.val_loss),
                f"{row.seconds / 60:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- **{r.confound}**: overall {_score(r.overall)} is at most half the clean row's "
        f"{_score(clean.overall)}."
        for r in rows
        if clean is not None and collapsed(r, clean)
    ]
    injected = [f"- **{r.confound}**: {r.injects}" for r in rows if r.injects]
    if notes:
        lines += ["", *notes]
    if injected:
        lines += ["", "What each row injects:", "", *injected]
    return "\n".join(lines) + "\n"
