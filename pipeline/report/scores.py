"""The report's views of the scored answers: one row per prompt, the distribution of score
values, the failure types, and the temperature sweep. Category figures are the summary's
(computed by the eval); the report never re-scores, it only counts the lines of scores.jsonl."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.eval.records import EvalSummary
from pipeline.eval.scoring import FAILURES

_FAILURE_TEXT: dict[str, str] = dict(FAILURES)

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
                "failure": (wrong[0] if wrong else samples[0]).get("failure"),
                "outcome": "error"
                if any(s["error"] for s in samples)
                else ("wrong" if wrong else "right"),
                "expected": samples[0].get("expected"),
                "match": samples[0].get("match"),
                "reply": (wrong[0] if wrong else samples[0]).get("reply"),
                "finish_reason": (wrong[0] if wrong else samples[0]).get("finish_reason"),
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


def failures(
    scores: Sequence[Mapping[str, Any]],
    temperature: float,
    categories: Sequence[str],
    baseline: Sequence[Mapping[str, Any]] | None = None,
    baseline_temperature: float | None = None,
) -> dict[str, Any]:
    """Answers per failure type (pipeline.eval.scoring.FAILURES) in each category, the
    catalog's categories first; with a baseline run's scores, each type's count there and the
    change, over the prompts both runs scored. Lines written before failure types were kept
    count as `unrecorded`."""
    rows = at(scores, temperature)
    per: dict[str, Counter[str]] = {}
    for s in rows:
        per.setdefault(s["category"], Counter())
        kind = s.get("failure", "unrecorded")
        if kind:
            per[s["category"]][kind] += 1
    order = [c for c in categories if c in per] + sorted(set(per) - set(categories))
    seen = {k for c in per.values() for k in c}
    types = [k for k in FAILURES if k in seen] + sorted(seen - set(FAILURES))
    total: Counter[str] = Counter()
    for counts in per.values():
        total.update(counts)
    out: dict[str, Any] = {
        "temperature": temperature,
        "types": types,
        "meaning": {k: _FAILURE_TEXT.get(k, "not recorded when it was scored") for k in types},
        "categories": {c: {k: per[c][k] for k in types if per[c][k]} for c in order},
        "answers": {c: sum(1 for s in rows if s["category"] == c) for c in order},
        "total": {k: total[k] for k in types},
        "shift": None,
    }
    if baseline is not None:
        t = temperature if baseline_temperature is None else baseline_temperature
        base_rows = at(baseline, t)
        common = {s["prompt_id"] for s in rows} & {s["prompt_id"] for s in base_rows}
        now = Counter(s.get("failure", "unrecorded") for s in rows if s["prompt_id"] in common)
        then = Counter(
            s.get("failure", "unrecorded") for s in base_rows if s["prompt_id"] in common
        )
        kinds = [k for k in FAILURES if now[k] or then[k]]
        kinds += sorted((set(now) | set(then)) - set(FAILURES) - {None})
        out["shift"] = {
            "prompts": len(common),
            "rows": [
                {"type": k, "baseline": then[k], "this": now[k], "change": now[k] - then[k]}
                for k in kinds
            ],
        }
    return out


_POLITE = re.compile(r"^(could|can|would|will|please|mind|kindly)\b", re.IGNORECASE)
_WANT = re.compile(r"^(i need|i want|i'd like|i would like|let's|lets|we need|i'm|i am)\b", re.I)


def phrasing_family(text: str) -> str:
    """How a request is put, by its surface: "polite" (could you, please, ...), "question"
    (ends with a question mark), "want" (I need, let's, ...) or "imperative" (the rest)."""
    words = text.strip()
    if _POLITE.match(words):
        return "polite"
    if words.endswith("?"):
        return "question"
    if _WANT.match(words):
        return "want"
    return "imperative"


def _group(prompt_id: str) -> str | None:
    """The request a prompt is one phrasing of: its id without the trailing number
    (`read_file-03` -> `read_file`); None for an id without one."""
    head, sep, tail = prompt_id.rpartition("-")
    return head if sep and tail.isdigit() else None


def _same_call(ids: Sequence[str], by_id: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """The prompts expect the same tools (the seed set's `lsp-01`..`lsp-05` ask for five)."""
    tools = {tuple(sorted(e["tool"] for e in by_id[i][0].get("expected") or [])) for i in ids}
    return len(tools) == 1


def robustness(scores: Sequence[Mapping[str, Any]], temperature: float) -> dict[str, Any] | None:
    """Whether a right answer survives a rephrasing: per group of prompts that ask for the
    same call in other words (the extended set's templates: `<tool>-NN`), all phrasings right /
    some / none; and the share right per phrasing family with the largest gap between them.
    None when no group has two prompts (the seed set)."""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for s in at(scores, temperature):
        by_id.setdefault(s["prompt_id"], []).append(s)
    right = {pid: all(float(s["value"]) >= 1.0 for s in rows) for pid, rows in by_id.items()}
    groups: dict[str, list[str]] = {}
    for pid in by_id:
        key = _group(pid)
        if key is not None:
            groups.setdefault(key, []).append(pid)
    groups = {k: v for k, v in groups.items() if len(v) >= 2 and _same_call(v, by_id)}
    if not groups:
        return None
    rows = []
    for key, ids in groups.items():
        hits = sum(right[i] for i in ids)
        status = "all" if hits == len(ids) else "none" if hits == 0 else "some"
        rows.append(
            {
                "group": key,
                "category": by_id[ids[0]][0]["category"],
                "prompts": len(ids),
                "right": hits,
                "status": status,
                "wrong": [i for i in ids if not right[i]],
            }
        )
    families: dict[str, list[bool]] = {}
    for pid, rows_ in by_id.items():
        families.setdefault(phrasing_family(str(rows_[0]["text"])), []).append(right[pid])
    family_rows = {
        name: {"prompts": len(hits), "right": sum(hits), "share": sum(hits) / len(hits)}
        for name, hits in sorted(families.items())
    }
    comparable = {n: f for n, f in family_rows.items() if f["prompts"] >= 5}
    gap = None
    if len(comparable) >= 2:
        best = max(comparable, key=lambda n: comparable[n]["share"])
        worst = min(comparable, key=lambda n: comparable[n]["share"])
        gap = {
            "best": best,
            "worst": worst,
            "gap": comparable[best]["share"] - comparable[worst]["share"],
        }
    counts = Counter(r["status"] for r in rows)
    return {
        "temperature": temperature,
        "groups": rows,
        "counts": {k: counts[k] for k in ("all", "some", "none")},
        "families": family_rows,
        "gap": gap,
    }


def changes(
    scores: Sequence[Mapping[str, Any]],
    temperature: float,
    baseline: Sequence[Mapping[str, Any]] | None,
    baseline_temperature: float | None,
) -> list[dict[str, Any]] | None:
    """The prompts whose score differs from the baseline run's: regressed first (largest drop
    first), then improved; each with both runs' calls and reasons. None without a baseline."""
    if baseline is None:
        return None
    t = temperature if baseline_temperature is None else baseline_temperature
    now = {r["id"]: r for r in prompt_rows(scores, temperature)}
    then = {r["id"]: r for r in prompt_rows(baseline, t)}
    out = []
    for pid in now.keys() & then.keys():
        a, b = then[pid], now[pid]
        delta = b["mean"] - a["mean"]
        if delta == 0:
            continue
        out.append(
            {
                "id": pid,
                "category": b["category"],
                "query": b["query"],
                "direction": "regressed" if delta < 0 else "improved",
                "baseline": a["mean"],
                "this": b["mean"],
                "delta": delta,
                "baseline_calls": a["calls_text"],
                "this_calls": b["calls_text"],
                "baseline_reason": a["reason"],
                "this_reason": b["reason"],
            }
        )
    return sorted(
        out, key=lambda c: (c["delta"] > 0, c["delta"] if c["delta"] < 0 else -c["delta"], c["id"])
    )
