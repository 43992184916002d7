"""The report's views of the scored answers: one row per prompt, the distribution of score
values, and the temperature sweep. Category figures are the summary's (computed by the
eval); the report never re-scores, it only counts the lines of scores.jsonl."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.eval.records import EvalSummary

_SWEPT = ("mean", "lo", "hi", "n", "passed", "fragile")
"""The fields of a category row the sweep shows at each temperature."""


def at(scores: Sequence[Mapping[str, Any]], temperature: float) -> list[Mapping[str, Any]]:
    return [s for s in scores if s["temperature"] == temperature]


def prompt_rows(scores: Sequence[Mapping[str, Any]], temperature: float) -> list[dict[str, Any]]:
    """One row per prompt at `temperature`: its samples' values, time, and first failure."""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for s in at(scores, temperature):
        by_id.setdefault(s["prompt_id"], []).append(s)
    rows = []
    for pid, samples in by_id.items():
        samples = sorted(samples, key=lambda s: s["sample"])
        values = [float(s["value"]) for s in samples]
        wrong = [s for s in samples if s["error"] or float(s["value"]) < 1.0]
        reason = _reason_of(wrong[0] if wrong else samples[0])
        others = {_reason_of(s) for s in wrong} - {reason}
        per_sample = [s["calls"] or [] for s in samples]
        rows.append(
            {
                "id": pid,
                "category": samples[0]["category"],
                "query": samples[0]["text"],
                "mean": sum(values) / len(values),
                "values": values,
                "seconds": sum(float(s["seconds"]) for s in samples) / len(samples),
                "reason": reason + _more(len(others), "other failure mode"),
                "calls": per_sample,
                "calls_text": calls_text(per_sample),
                "truncated": sum(bool(s["truncated"]) for s in samples),
                "errors": sum(bool(s["error"]) for s in samples),
            }
        )
    return rows


def _more(n: int, what: str) -> str:
    return f" (+{n} {what}{'s' if n > 1 else ''})" if n else ""


def _reason_of(s: Mapping[str, Any]) -> str:
    return f"error: {s['error']}" if s["error"] else str(s["reason"])


def format_call(call: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in (call.get("arguments") or {}).items())
    return f"{call.get('name')}({args})"


def calls_text(per_sample: Sequence[Sequence[Mapping[str, Any]]]) -> str:
    """The extracted calls of every sample; identical samples are counted, not repeated."""
    texts = [", ".join(format_call(c) for c in calls) or "(no call)" for calls in per_sample]
    counted = Counter(texts)
    if len(counted) == 1:
        return texts[0] if len(texts) == 1 else f"{texts[0]} (all {len(texts)} samples)"
    return "; ".join(f"{t} x{n}" for t, n in counted.items())


def _value_key(v: float) -> str:
    return f"{round(v, 3):g}"


def distribution(
    scores: Sequence[Mapping[str, Any]], temperature: float, categories: Sequence[str]
) -> dict[str, Any]:
    """Counts of each score value per category (the seed scheme: 1, 0.5, 0.1, 0), the
    catalog's categories first, in its order."""
    per: dict[str, Counter[str]] = {}
    for s in at(scores, temperature):
        per.setdefault(s["category"], Counter())[_value_key(float(s["value"]))] += 1
    order = [c for c in categories if c in per] + sorted(set(per) - set(categories))
    values = sorted({v for c in per.values() for v in c} | {"1", "0"}, key=float, reverse=True)
    return {
        "temperature": temperature,
        "values": values,
        "categories": {c: {v: per[c][v] for v in values} for c in order},
    }


def sweep(summary: EvalSummary, scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each category at every temperature of the run, and each prompt's mean per temperature."""
    temps = list(summary.temperatures)
    names: list[str] = []
    for row in summary.temperatures.values():
        names += [n for n in row.categories if n not in names]
    rows = []
    for name in names:
        by_t = {}
        for t in temps:
            cat = summary.temperatures[t].categories.get(name)
            if cat is not None:
                by_t[t] = {k: getattr(cat, k) for k in _SWEPT}
        rows.append({"category": name, "by_temperature": by_t, "flips": name in summary.flips})
    prompt_means: dict[str, dict[str, float]] = {}
    for t in temps:
        sums: dict[str, list[float]] = {}
        for s in at(scores, summary.temperatures[t].temperature):
            sums.setdefault(s["prompt_id"], []).append(float(s["value"]))
        prompt_means[t] = {pid: sum(v) / len(v) for pid, v in sums.items()}
    return {
        "temperatures": temps,
        "categories": rows,
        "flips": list(summary.flips),
        "passed": {t: row.passed for t, row in summary.temperatures.items()},
        "errors": {t: row.errors for t, row in summary.temperatures.items()},
        "truncated": {t: row.truncated for t, row in summary.temperatures.items()},
        "anomalies": {t: dict(row.anomalies) for t, row in summary.temperatures.items()},
        "prompts": prompt_means,
    }
