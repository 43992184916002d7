"""Two runs side by side: per-category and per-prompt differences of two reports, at their
decision temperatures (`compare`), and as text for the terminal (`render_compare`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.report.record import ReportRecord


def compare(a: ReportRecord, b: ReportRecord) -> dict[str, Any]:
    """Per-category and per-prompt differences of two reports, at their decision temperatures."""
    notes = []
    for key, what in (("experiment", "experiments"), ("score", "primary scores")):
        if getattr(a, key) != getattr(b, key):
            notes.append(f"different {what}: {getattr(a, key)} vs {getattr(b, key)}")
    if a.decision_temperature != b.decision_temperature:
        notes.append(
            f"different decision temperatures: {a.decision_temperature:g} vs "
            f"{b.decision_temperature:g}"
        )
    if a.settings.get("samples") != b.settings.get("samples"):
        notes.append(f"different samples: {a.samples} vs {b.samples}")
    ca = {c["category"]: c for c in a.criteria}
    cb = {c["category"]: c for c in b.criteria}
    categories = []
    for name in [*ca, *(n for n in cb if n not in ca)]:
        ma = ca[name]["mean"] if name in ca else None
        mb = cb[name]["mean"] if name in cb else None
        categories.append(
            {
                "category": name,
                "a": ma,
                "b": mb,
                "delta": None if ma is None or mb is None else mb - ma,
                "passed_a": ca.get(name, {}).get("passed"),
                "passed_b": cb.get(name, {}).get("passed"),
            }
        )
    pa = {p["id"]: p for p in a.prompts}
    pb = {p["id"]: p for p in b.prompts}
    prompts = []
    for pid in [*pa, *(i for i in pb if i not in pa)]:
        x, y = pa.get(pid), pb.get(pid)
        ma = x["mean"] if x else None
        mb = y["mean"] if y else None
        prompts.append(
            {
                "id": pid,
                "category": (x or y or {}).get("category", ""),
                "a": ma,
                "b": mb,
                "delta": None if ma is None or mb is None else mb - ma,
                "calls_a": x["calls_text"] if x else None,
                "calls_b": y["calls_text"] if y else None,
                "calls_changed": (x["calls"] if x else None) != (y["calls"] if y else None),
            }
        )
    return {
        "a": _run_head(a),
        "b": _run_head(b),
        "notes": notes,
        "categories": categories,
        "prompts": prompts,
    }


def _run_head(r: ReportRecord) -> dict[str, Any]:
    return {
        k: getattr(r, k)
        for k in ("run_dir", "experiment", "score", "verdict", "decision_temperature", "samples")
    } | {"fingerprint": r.settings.get("fingerprint")}


def render_compare(cmp: Mapping[str, Any]) -> str:
    lines = []
    for side in ("a", "b"):
        h = cmp[side]
        lines.append(
            f"{side.upper()}: {h['run_dir']} ({h['experiment']}, score {h['score']}, "
            f"T={h['decision_temperature']:g}, {h['samples']} sample(s), {h['verdict']})"
        )
    lines += [f"note: {n}" for n in cmp["notes"]]
    lines += ["", "categories:"]
    rows = [
        [c["category"], _opt(c["a"]), _opt(c["b"]), _delta(c["delta"]), _flip(c)]
        for c in cmp["categories"]
    ]
    lines += _text_table(["category", "A", "B", "delta", ""], rows)
    changed = [p for p in cmp["prompts"] if p["delta"] != 0 or p["calls_changed"]]
    lines += [
        "",
        f"prompts: {len(changed)} of {len(cmp['prompts'])} differ in score or extracted calls",
    ]
    if changed:
        prow = []
        for p in changed:
            calls = ""
            if p["calls_changed"]:
                calls = f"{p['calls_a'] or '(not asked)'}  ->  {p['calls_b'] or '(not asked)'}"
            prow.append([p["id"], _opt(p["a"], 2), _opt(p["b"], 2), _delta(p["delta"], 2), calls])
        lines += _text_table(["id", "A", "B", "delta", "extracted calls A -> B"], prow)
    return "\n".join(lines)


def _flip(c: Mapping[str, Any]) -> str:
    a, b = c.get("passed_a"), c.get("passed_b")
    if a is None or b is None or a == b:
        return ""
    return "now passes" if b else "now fails"


def _opt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    fmt = [f"{{:<{w}}}" for w in widths]
    out = ["  " + "  ".join(f.format(h) for f, h in zip(fmt, headers, strict=True)).rstrip()]
    out += [
        "  " + "  ".join(f.format(str(c)) for f, c in zip(fmt, row, strict=True)).rstrip()
        for row in rows
    ]
    return out
