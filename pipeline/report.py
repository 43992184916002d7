"""Gate reports: results.md, results.json and results.png for one run, and two runs compared.

Four steps, only the first and the last touch the disk:

1. `collect(run_dir)` reads what the run left: `eval/summary.json` and `eval/scores.jsonl`
   (evaluate.py), `build.json` when routegate built the model (build.py; absent for a
   `--model` or `--server-url` run), the experiment's `reports/<name>/preflight.json`
   (preflight.py) and the experiment itself (settings, docs folder).
2. `build_report(run)` turns that into one plain dict, the content of results.json: verdict,
   the pre-registered criteria, every prompt, the score distribution, the temperature sweep,
   training figures, the preflight, the settings and versions that repeat the run.
3. `render_markdown(report)`, `render_chart(report)` (matplotlib, the optional `chart` extra,
   imported only here) and `render_compare(compare(a, b))` turn dicts into text or PNG bytes.
4. `write_report(report, out_dir)` is the one writer: `reports/<experiment>/results.{md,json,png}`.

The category rows are summary.json's, computed by the eval; the report never re-scores.
The verdict is the gate's: FAIL when a pre-registered threshold is missed or the preflight
failed (a build forced past it, or a current preflight.json that failed), PENDING while the
thresholds are pending, PASS otherwise; the same rule that makes the pytest run exit non-zero.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.experiment import (
    CATEGORIES,
    ROOT,
    Experiment,
    ExperimentError,
    load_experiment,
)
from pipeline.scoring import OVERALL

FORMAT = 1
"""Bump when results.json changes shape."""
MARKDOWN, JSON, CHART = "results.md", "results.json", "results.png"
CHART_EXTRA = "pip install 'routegate[chart]' (matplotlib)"
_CELL = 110
"""Markdown table cells longer than this are cut (results.json keeps everything)."""


class ReportError(ValueError):
    """The run folder cannot be reported on; the message says what is missing."""


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed: the report is written without its chart."""


# --- 1. reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """Everything a report is made from, as read from disk."""

    run_dir: Path
    summary: dict[str, Any]
    scores: tuple[dict[str, Any], ...]
    build: dict[str, Any] | None = None
    """build.json; None when routegate did not build the model (--model, --server-url)."""
    preflight: dict[str, Any] | None = None
    preflight_path: Path | None = None
    experiment: Experiment | None = None
    """The experiment file as it is now (its fingerprint may differ from the run's)."""
    docs: tuple[str, ...] = ()
    """The files of the experiment's docs folder, sorted."""
    model_bytes: int | None = None
    """Size of the evaluated model folder, when it is on this machine."""


def collect(
    run_dir: Path,
    experiment: Experiment | None = None,
    *,
    preflight_path: Path | None = None,
) -> RunData:
    """Read a run folder (`runs/<experiment>/<key>/`, the folder that holds `eval/`)."""
    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval"
    summary_path = eval_dir / "summary.json"
    if not summary_path.is_file():
        raise ReportError(
            f"{summary_path} does not exist: pass a run folder whose eval finished "
            "(runs/<experiment>/<key>/, written by `pytest -m eval` or `python -m pipeline eval`)"
        )
    summary = _read_json(summary_path)
    scores_path = eval_dir / "scores.jsonl"
    if not scores_path.is_file():
        raise ReportError(f"{scores_path} does not exist: the eval did not finish scoring")
    scores = tuple(
        json.loads(line) for line in scores_path.read_text().splitlines() if line.strip()
    )
    if experiment is None:
        try:
            experiment = load_experiment(summary.get("experiment", ""))
        except ExperimentError:
            experiment = None  # a renamed or deleted experiment: reported from the run alone
    name = summary.get("experiment") or (experiment.name if experiment else "")
    build_path = run_dir / "build.json"
    build = _read_json(build_path) if build_path.is_file() else None
    if preflight_path is None:
        preflight_path = ROOT / "reports" / name / "preflight.json"
        recorded = ((build or {}).get("preflight") or {}).get("report")
        if not preflight_path.is_file() and recorded and Path(recorded).is_file():
            preflight_path = Path(recorded)
    preflight = _read_json(preflight_path) if preflight_path.is_file() else None
    docs: tuple[str, ...] = ()
    if experiment is not None and experiment.docs is not None and experiment.docs.is_dir():
        docs = tuple(sorted(p.name for p in experiment.docs.iterdir() if p.is_file()))
    model_bytes = None
    if build is None and summary.get("model"):
        folder = Path(summary["model"])
        if folder.is_dir():
            model_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return RunData(
        run_dir=run_dir,
        summary=summary,
        scores=scores,
        build=build,
        preflight=preflight,
        preflight_path=preflight_path if preflight is not None else None,
        experiment=experiment,
        docs=docs,
        model_bytes=model_bytes,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read: {err}") from err
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return value


# --- 2. the report as data --------------------------------------------------------------------


def build_report(run: RunData) -> dict[str, Any]:
    """The whole report as plain data (results.json); a pure function of `run`."""
    summary = run.summary
    exp = run.experiment
    decision_key = _tkey(summary["decision_temperature"])
    decision = summary["temperatures"][decision_key]
    criteria = [{"category": name, **row} for name, row in decision["categories"].items()]
    overall = decision["categories"].get(OVERALL)
    fingerprint = summary.get("fingerprint", "")
    warnings: list[str] = []
    if exp is not None and exp.fingerprint() != fingerprint:
        warnings.append(
            f"the experiment file has changed since this run (fingerprint now "
            f"{exp.fingerprint()}, the run's {fingerprint}): settings read from the file below "
            "may not be the run's"
        )
    preflight = _preflight_section(run, fingerprint, warnings)
    training = _training_section(run.build)
    for key, row in summary["temperatures"].items():
        if row.get("errors"):
            warnings.append(f"T={key}: {row['errors']} request(s) got no answer")
    verdict, reasons = _verdict(summary, criteria, preflight)
    docs = None
    if exp is not None and exp.docs is not None:
        docs = {"path": _show_path(exp.docs), "files": list(run.docs)}
    return {
        "format": FORMAT,
        "experiment": summary.get("experiment", ""),
        "description": exp.description if exp else "",
        "run_dir": _show_path(run.run_dir),
        "verdict": verdict,
        "verdict_reasons": reasons,
        "thresholds_verdict": summary.get("verdict"),
        "thresholds_pending": bool(summary.get("thresholds_pending")),
        "score": summary.get("score"),
        "samples": summary.get("samples"),
        "decision_temperature": summary["decision_temperature"],
        "baseline_name": exp.baseline.name if exp else "",
        "overall": overall,
        "criteria": criteria,
        "prompts": _prompt_rows(run.scores, summary["decision_temperature"]),
        "distribution": _distribution(run.scores, summary["decision_temperature"]),
        "sweep": _sweep(summary, run.scores),
        "training": training,
        "model_bytes": (training or {}).get("model_bytes") or run.model_bytes,
        "preflight": preflight,
        "settings": _settings(run),
        "repeat": _repeat_command(run),
        "docs": docs,
        "files": _files(run),
        "warnings": warnings,
    }


def _verdict(
    summary: Mapping[str, Any], criteria: Sequence[Mapping[str, Any]], preflight: Any
) -> tuple[str, list[str]]:
    reasons = []
    missed = [c for c in criteria if c.get("passed") is False]
    pending = bool(summary.get("thresholds_pending"))
    if missed and not pending:
        reasons.append(
            "below the pre-registered threshold: "
            + ", ".join(
                f"{c['category']} {_pct(c['mean'])} < {_pct(c['threshold'])}" for c in missed
            )
        )
    have = {c["category"] for c in criteria}
    absent = [c for c in (*CATEGORIES, OVERALL) if c not in have]
    if absent:
        reasons.append(f"no prompt scored in: {', '.join(absent)}")
    preflight_failed = bool(preflight and preflight["failed_for_this_run"])
    if preflight_failed:
        reasons.append(preflight["verdict_line"])
    if pending:
        reasons.append("the thresholds are pending (not yet pre-registered from measurements)")
    if (missed and not pending) or preflight_failed or absent:
        return "FAIL", reasons
    if pending:
        return "PENDING", reasons
    return "PASS", reasons


def _preflight_section(
    run: RunData, fingerprint: str, warnings: list[str]
) -> dict[str, Any] | None:
    recorded = (run.build or {}).get("preflight")
    pf = run.preflight
    if pf is None and not recorded:
        return None
    out: dict[str, Any] = {"path": _show_path(run.preflight_path) if run.preflight_path else None}
    current = False
    if pf is not None:
        findings = [dict(f) for f in pf.get("findings", [])]
        counts = Counter(f.get("verdict", "") for f in findings)
        current = pf.get("fingerprint") == fingerprint
        out.update(
            fingerprint=pf.get("fingerprint"),
            current=current,
            passed=bool(pf.get("passed")),
            base=pf.get("base"),
            reference=pf.get("reference"),
            counts={k: counts[k] for k in ("pass", "fail", "info", "skip") if counts[k]},
            findings=findings,
        )
        if not current:
            warnings.append(
                f"{out['path']} was written for fingerprint {pf.get('fingerprint')}, not this "
                f"run's {fingerprint}: its verdict is shown, not counted"
            )
    if recorded:
        out["build"] = {
            k: recorded.get(k) for k in ("passed", "forced", "failed", "checks", "fingerprint")
        }
    build_failed = bool(recorded) and recorded.get("passed") is False
    file_failed = pf is not None and current and not pf.get("passed")
    out["failed_for_this_run"] = build_failed or file_failed
    if build_failed and recorded.get("forced"):
        out["verdict_line"] = (
            f"the preflight failed ({len(recorded.get('failed') or [])} check(s)) and the model "
            "was built anyway (--force): the run does not test the hypothesis"
        )
    elif out["failed_for_this_run"]:
        n = out.get("counts", {}).get("fail") or len((recorded or {}).get("failed") or [])
        out["verdict_line"] = f"the preflight failed ({n} check(s))"
    else:
        out["verdict_line"] = ""
    return out


def _training_section(build: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not build:
        return None
    stages = build.get("stages") or {}
    rows = []
    for name in ("train", "fuse", "quantize"):
        s = stages.get(name)
        if not s:
            continue
        rows.append(
            {
                "stage": name,
                "seconds": s.get("wall_seconds", s.get("seconds")),
                "peak_memory_bytes": s.get("peak_memory_bytes"),
                "output_bytes": s.get("output_bytes"),
                "removed": bool(s.get("removed")),
            }
        )
    train = stages.get("train") or {}
    quant = stages.get("quantize") or {}
    resumed = train.get("resumed_from")
    return {
        "key": build.get("key"),
        "complete": bool(build.get("complete")),
        "started": build.get("started"),
        "finished": build.get("finished"),
        "seconds": build.get("seconds"),
        "base_model": build.get("base_model"),
        "stages": rows,
        "fine_tune_type": train.get("fine_tune_type"),
        "iters": train.get("iters"),
        "train_loss": train.get("train_loss"),
        "val_loss": train.get("val_loss"),
        "val_loss_step": train.get("val_loss_step"),
        "trainable_parameters": train.get("trainable_parameters"),
        "trainable_parameters_reported": train.get("trainable_parameters_reported"),
        "total_parameters_millions": train.get("total_parameters_millions"),
        "mlx_peak_memory_gb": train.get("mlx_peak_memory_gb"),
        "resumed_from": resumed.get("step") if isinstance(resumed, dict) else None,
        "attempts": len(train.get("attempts") or []),
        "model_bytes": quant.get("output_bytes"),
        "bits": quant.get("bits"),
        "group_size": quant.get("group_size"),
        "bits_per_weight": quant.get("bits_per_weight"),
        "versions": (build.get("inputs") or {}).get("versions"),
    }


def _at(scores: Sequence[Mapping[str, Any]], temperature: float) -> list[Mapping[str, Any]]:
    return [s for s in scores if s.get("temperature") == temperature]


def _prompt_rows(scores: Sequence[Mapping[str, Any]], temperature: float) -> list[dict[str, Any]]:
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for s in _at(scores, temperature):
        by_id.setdefault(s["prompt_id"], []).append(s)
    rows = []
    for pid, samples in by_id.items():
        samples = sorted(samples, key=lambda s: s.get("sample", 0))
        values = [float(s["value"]) for s in samples]
        wrong = [s for s in samples if s.get("error") or float(s["value"]) < 1.0]
        shown = wrong[0] if wrong else samples[0]
        reason = f"error: {shown['error']}" if shown.get("error") else shown.get("reason", "")
        others = {_reason_of(s) for s in wrong} - {reason}
        rows.append(
            {
                "id": pid,
                "category": samples[0].get("category", ""),
                "query": samples[0].get("text", ""),
                "mean": sum(values) / len(values),
                "values": values,
                "seconds": sum(float(s.get("seconds") or 0) for s in samples) / len(samples),
                "reason": reason + _more(len(others), "other failure mode"),
                "calls": [s.get("calls") or [] for s in samples],
                "calls_text": calls_text([s.get("calls") or [] for s in samples]),
                "truncated": sum(bool(s.get("truncated")) for s in samples),
                "errors": sum(bool(s.get("error")) for s in samples),
            }
        )
    return rows


def _more(n: int, what: str) -> str:
    return f" (+{n} {what}{'s' if n > 1 else ''})" if n else ""


def _reason_of(s: Mapping[str, Any]) -> str:
    return f"error: {s['error']}" if s.get("error") else str(s.get("reason", ""))


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


def _distribution(scores: Sequence[Mapping[str, Any]], temperature: float) -> dict[str, Any]:
    """Counts of each score value per category (the seed scheme: 1, 0.5, 0.1, 0)."""
    per: dict[str, Counter[str]] = {}
    for s in _at(scores, temperature):
        per.setdefault(s.get("category", ""), Counter())[_value_key(float(s["value"]))] += 1
    order = [c for c in CATEGORIES if c in per] + sorted(set(per) - set(CATEGORIES))
    values = sorted({v for c in per.values() for v in c} | {"1", "0"}, key=float, reverse=True)
    return {
        "temperature": temperature,
        "values": values,
        "categories": {c: {v: per[c][v] for v in values} for c in order},
    }


def _sweep(summary: Mapping[str, Any], scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    temps = list(summary["temperatures"])
    names: list[str] = []
    for row in summary["temperatures"].values():
        names += [n for n in row["categories"] if n not in names]
    flips = list(summary.get("flips") or [])
    rows = []
    for name in names:
        by_t = {}
        for t in temps:
            cat = summary["temperatures"][t]["categories"].get(name)
            if cat:
                by_t[t] = {k: cat[k] for k in ("mean", "lo", "hi", "n", "passed", "fragile")}
        rows.append({"category": name, "by_temperature": by_t, "flips": name in flips})
    prompt_means: dict[str, dict[str, float]] = {}
    for t in temps:
        sums: dict[str, list[float]] = {}
        for s in _at(scores, summary["temperatures"][t]["temperature"]):
            sums.setdefault(s["prompt_id"], []).append(float(s["value"]))
        prompt_means[t] = {pid: sum(v) / len(v) for pid, v in sums.items()}
    return {
        "temperatures": temps,
        "categories": rows,
        "flips": flips,
        "passed": {t: summary["temperatures"][t].get("passed") for t in temps},
        "errors": {t: summary["temperatures"][t].get("errors", 0) for t in temps},
        "truncated": {t: summary["temperatures"][t].get("truncated", 0) for t in temps},
        "prompts": prompt_means,
    }


def _settings(run: RunData) -> dict[str, Any]:
    s, exp, build = run.summary, run.experiment, run.build or {}
    out: dict[str, Any] = {
        "fingerprint": s.get("fingerprint"),
        "score": s.get("score"),
        "samples": s.get("samples"),
        "temperatures": [row["temperature"] for row in s["temperatures"].values()],
        "decision_temperature": s.get("decision_temperature"),
        "model": s.get("model"),
        "server_url": s.get("server_url"),
        "model_id": s.get("model_id"),
        "build_key": build.get("key"),
        "base_model": build.get("base_model") or (exp.models.base if exp else None),
        "versions": s.get("versions") or {},
        "requests": s.get("requests"),
        "restarts": s.get("restarts"),
        "eval_seconds": s.get("seconds"),
    }
    if exp is not None:
        ev = exp.eval
        out.update(
            experiment_file=_show_path(exp.source),
            fingerprint_now=exp.fingerprint(),
            base_revision=exp.models.base_revision or None,
            reference_model=exp.models.reference,
            eval_seed=ev.seed,
            sampled_seeds="seed + sample index at T > 0; none at T = 0 (greedy)",
            max_tokens=ev.max_tokens,
            enable_thinking=ev.enable_thinking,
            stop=list(ev.stop),
            system_prompt=_show_path(ev.system_prompt),
            prompts=_show_path(ev.prompts),
            mode=exp.data.mode,
            syntax=exp.data.syntax,
            data_seed=exp.data.seed,
            train_seed=exp.train.seed,
            num_layers=exp.train.num_layers,
            iters=exp.train.iters,
            quantize=f"{exp.quantize.bits} bits, group size {exp.quantize.group_size}",
        )
    return out


def _repeat_command(run: RunData) -> str:
    s, exp = run.summary, run.experiment
    name = s.get("experiment", "")
    if exp is not None and exp.source.parent.resolve() != (ROOT / "experiments").resolve():
        name = _show_path(exp.source)
    parts = ["python", "-m", "pipeline", "eval", "--experiment", name]
    if s.get("server_url"):
        parts += ["--server-url", s["server_url"]]
    elif run.build is None and s.get("model"):
        parts += ["--model", s["model"]]
    parts += ["--samples", str(s.get("samples"))]
    temps = ",".join(_tkey(row["temperature"]) for row in s["temperatures"].values())
    parts += ["--temperature", temps]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _files(run: RunData) -> dict[str, str | None]:
    eval_dir = run.run_dir / "eval"

    def there(path: Path) -> str | None:
        return _show_path(path) if path.exists() else None

    return {
        "summary": there(eval_dir / "summary.json"),
        "scores": there(eval_dir / "scores.jsonl"),
        "responses": there(eval_dir / "responses.jsonl"),
        "server_log": there(eval_dir / "server.log"),
        "build": there(run.run_dir / "build.json"),
        "build_log": there(run.run_dir / "build.log"),
        "preflight": _show_path(run.preflight_path) if run.preflight_path else None,
    }


def _show_path(path: Path | str | None) -> str:
    """Paths under the checkout are shown relative to it, others as they are."""
    if path is None:
        return ""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _tkey(t: float) -> str:
    return f"{t:g}"


# --- 3. rendering -----------------------------------------------------------------------------


def render_markdown(report: Mapping[str, Any], out_dir: Path | None = None) -> str:
    """results.md; `out_dir` (where it will be written) makes its links relative."""
    r = report
    t = _tkey(r["decision_temperature"])
    lines = [f"# {r['experiment']}: {r['verdict']}", ""]
    if r.get("description"):
        lines += [r["description"], ""]
    lines += [
        f"Run `{r['run_dir']}`; score `{r['score']}` at decision temperature {t}, "
        f"{r['samples']} sample(s) per prompt.",
        "",
    ]
    if r.get("docs"):
        link = _link(r["docs"]["path"], out_dir)
        files = ", ".join(f"[{f}]({link}/{f})" for f in r["docs"]["files"])
        lines += [
            f"Experiment record: [{r['docs']['path']}]({link})" + (f": {files}" if files else ""),
            "",
        ]
    lines += ["## Verdict", "", _verdict_line(r), ""]
    lines += [f"- {reason}" for reason in r["verdict_reasons"]]
    fragile = [c["category"] for c in r["criteria"] if c.get("fragile")]
    if fragile:
        lines.append(
            f"- fragile (the 95% interval straddles the threshold, the verdict could flip on a "
            f"rerun): {', '.join(fragile)}"
        )
    lines += [f"- warning: {w}" for w in r["warnings"]]
    if lines[-1] != "":
        lines.append("")

    lines += [f"## Pre-registered criteria (T={t})", ""]
    base = f"baseline ({r['baseline_name']})" if r.get("baseline_name") else "baseline"
    rows = []
    for c in r["criteria"]:
        gated = c.get("threshold") is not None
        name = f"**{c['category']}**" if c["category"] == OVERALL else c["category"]
        rows.append(
            [
                name,
                _pct(c.get("baseline")),
                f">= {_pct(c['threshold'])}" if gated else "not gated",
                _pct(c["mean"]),
                f"{_pct(c['lo'])} - {_pct(c['hi'])}",
                str(c["n"]),
                _pass_cell(c["passed"], r["thresholds_pending"]) if gated else "-",
                "fragile" if c.get("fragile") else "",
            ]
        )
    lines += _table(
        ["category", base, "threshold", "this run", "95% interval", "n", "pass?", "fragile"], rows
    )
    lines += ["", "## Chart", ""]
    chart = r.get("chart") or {}
    if chart.get("file"):
        lines.append(
            f"![per-category score, 95% interval, threshold and baseline]({chart['file']})"
        )
    else:
        lines.append(f"Chart skipped: {chart.get('skipped') or 'not rendered'}.")
    lines += ["", f"## Prompts (T={t})", ""]
    prows = [
        [
            p["id"],
            p["category"],
            p["query"],
            _values(p),
            f"{p['seconds']:.2f}",
            p["reason"],
            p["calls_text"],
        ]
        for p in r["prompts"]
    ]
    lines += _table(
        [
            "id",
            "category",
            "query",
            "score",
            "time (s)",
            "reason / failure mode",
            "extracted call(s)",
        ],
        prows,
    )
    dist = r["distribution"]
    lines += ["", f"## Score distribution (T={t})", ""]
    lines += [f"How many answers got each {r['score']} score value (every sample counts once)."]
    if r["score"] == "seed":
        lines[-1] += (
            " The seed's partial credit: 1 the right tool inside execute_code, 0.5 the right "
            "tool called directly, 0.1 a wrapped call to the wrong tool, 0 no call (all_of: the "
            "share of expected tools, plus 0.1 when wrapped)."
        )
    lines.append("")
    drows = [
        [cat, *(str(counts[v]) for v in dist["values"]), str(sum(counts.values()))]
        for cat, counts in dist["categories"].items()
    ]
    lines += _table(["category", *dist["values"], "n"], drows)
    lines += ["", *_sweep_lines(r["sweep"], r["thresholds_pending"]), ""]
    lines += _training_lines(r)
    lines += ["", *_preflight_lines(r.get("preflight")), ""]
    lines += _settings_lines(r)
    lines += ["", "## Files", ""]
    lines += [f"- {k}: `{v}`" for k, v in r["files"].items() if v]
    return "\n".join(lines).rstrip() + "\n"


def _pass_cell(passed: bool | None, pending: bool) -> str:
    text = "PASS" if passed else "FAIL"
    return f"pending ({'met' if passed else 'below'})" if pending else text


def _verdict_line(r: Mapping[str, Any]) -> str:
    o = r.get("overall")
    if not o:
        return f"**{r['verdict']}**: no overall score."
    base = r.get("baseline_name") or "baseline"
    return (
        f"**{r['verdict']}**: overall {_pct(o['mean'])} (95% interval {_pct(o['lo'])} - "
        f"{_pct(o['hi'])}, n={o['n']}) against the threshold {_pct(o['threshold'])} "
        f"({base}: {_pct(o['baseline'])})."
    )


def _values(p: Mapping[str, Any]) -> str:
    if len(p["values"]) == 1:
        return f"{p['values'][0]:g}"
    return f"{p['mean']:.2f} ({', '.join(f'{v:g}' for v in p['values'])})"


def _sweep_lines(sweep: Mapping[str, Any], pending: bool) -> list[str]:
    temps = sweep["temperatures"]
    out = ["## Temperature sweep", ""]
    if len(temps) < 2:
        out.append(f"One temperature only (T={temps[0]}): no sweep in this run.")
        return out
    rows = []
    for c in sweep["categories"]:
        cells = []
        for t in temps:
            cell = c["by_temperature"].get(t)
            if not cell:
                cells.append("-")
                continue
            mark = "" if cell["passed"] is None else " " + _pass_cell(cell["passed"], pending)
            cells.append(f"{_pct(cell['mean'])} [{_pct(cell['lo'])} - {_pct(cell['hi'])}]{mark}")
        rows.append([c["category"], *cells, "flips" if c["flips"] else ""])
    out += _table(["category", *(f"T={t}" for t in temps), "verdict"], rows)
    out.append("")
    gate = ", ".join(
        f"T={t}: {'PASS' if sweep['passed'][t] else 'FAIL'}"
        f" ({sweep['errors'][t]} errors, {sweep['truncated'][t]} truncated)"
        for t in temps
    )
    out.append(f"All thresholds met per temperature: {gate}.")
    flips = sweep["flips"]
    out.append(
        f"Verdict flips between temperatures: {', '.join(flips)}."
        if flips
        else "No category's verdict flips between temperatures."
    )
    return out


def _training_lines(r: Mapping[str, Any]) -> list[str]:
    tr = r.get("training")
    out = ["## Training", ""]
    if not tr:
        size = f" Model folder: {_bytes(r['model_bytes'])}." if r.get("model_bytes") else ""
        out.append(
            "Not built by routegate (a `--model` or `--server-url` run): no build.json, no "
            f"training figures.{size}"
        )
        return out
    rows = [
        [
            s["stage"],
            _secs(s["seconds"]),
            _bytes(s["peak_memory_bytes"]),
            _bytes(s["output_bytes"]) + (" (removed)" if s["removed"] else ""),
        ]
        for s in tr["stages"]
    ]
    out += _table(["stage", "time", "peak memory (process RSS)", "output"], rows)
    out.append("")
    loss = f"train loss {_num(tr['train_loss'])}, validation loss {_num(tr['val_loss'])}"
    if tr.get("val_loss_step") is not None:
        loss += f" (at iteration {tr['val_loss_step']})"
    params = f"{tr['trainable_parameters']:,}" if tr.get("trainable_parameters") else "n/a"
    if tr.get("trainable_parameters_reported"):
        params += f" ({tr['trainable_parameters_reported']} as mlx_lm reports it)"
    quant = ""
    if tr.get("bits"):
        quant = f", {tr['bits']} bits / group size {tr['group_size']}"
        if tr.get("bits_per_weight"):
            quant += f" ({_num(tr['bits_per_weight'])} bits per weight)"
    out += [
        f"- build `{tr['key']}`: {_secs(tr['seconds'])} in all"
        + (f", {tr['started']} to {tr['finished']}" if tr.get("finished") else "")
        + ("" if tr["complete"] else " (incomplete)"),
        f"- {tr['fine_tune_type']} training, {tr['iters']} iterations: {loss}"
        + (f"; resumed from iteration {tr['resumed_from']}" if tr.get("resumed_from") else ""),
        f"- trainable parameters: {params}",
        f"- model size: {_bytes(tr['model_bytes'])}{quant}",
    ]
    if tr.get("mlx_peak_memory_gb"):
        out.append(f"- mlx peak memory while training: {tr['mlx_peak_memory_gb']} GB")
    return out


def _preflight_lines(pf: Mapping[str, Any] | None) -> list[str]:
    out = ["## Preflight", ""]
    if not pf:
        out.append("No preflight record for this experiment (run `python -m pipeline preflight`).")
        return out
    if "passed" in pf:
        counts = ", ".join(f"{n} {k}" for k, n in pf["counts"].items())
        state = "passed" if pf["passed"] else "FAILED"
        stale = "" if pf["current"] else " (written for another fingerprint: shown, not counted)"
        out.append(f"`{pf['path']}`: {state} ({counts}){stale}.")
    b = pf.get("build")
    if b:
        how = (
            "passed"
            if b["passed"]
            else "FAILED" + (", built anyway (--force)" if b["forced"] else "")
        )
        out.append(f"At build time: {how} ({b['checks']} checks).")
    failed = [f for f in pf.get("findings", []) if f.get("verdict") == "fail"]
    if failed:
        out += ["", "Failed checks:", ""]
        out += [f"- {f['check']} ({f['subject']}): {f['figure']}" for f in failed]
    elif b and b.get("failed"):
        out += ["", "Failed checks at build time:", ""]
        out += [f"- {line.splitlines()[0]}" for line in b["failed"]]
    if pf.get("findings"):
        out += ["", "<details><summary>All checks</summary>", ""]
        out += _table(
            ["check", "subject", "verdict", "figure"],
            [[f["check"], f["subject"], f["verdict"], f["figure"]] for f in pf["findings"]],
        )
        out += ["", "</details>"]
    return out


def _settings_lines(r: Mapping[str, Any]) -> list[str]:
    s = r["settings"]
    out = ["## Settings and versions", ""]
    keys = [
        ("fingerprint", "experiment fingerprint (the run's)"),
        ("fingerprint_now", "experiment fingerprint (the file now)"),
        ("experiment_file", "experiment file"),
        ("model", "model folder"),
        ("server_url", "server URL"),
        ("model_id", "model id (server)"),
        ("base_model", "base model"),
        ("base_revision", "base revision"),
        ("reference_model", "reference model"),
        ("build_key", "build key"),
        ("score", "primary score"),
        ("temperatures", "temperatures (first decides)"),
        ("samples", "samples per prompt"),
        ("eval_seed", "eval seed"),
        ("sampled_seeds", "sampling seeds"),
        ("max_tokens", "max_tokens"),
        ("enable_thinking", "enable_thinking"),
        ("stop", "stop sequences"),
        ("mode", "call mode"),
        ("syntax", "call syntax"),
        ("system_prompt", "system prompt"),
        ("prompts", "prompts"),
        ("data_seed", "data seed"),
        ("train_seed", "train seed"),
        ("num_layers", "trained layers (-1: all)"),
        ("iters", "iterations"),
        ("quantize", "quantization"),
        ("requests", "requests"),
        ("restarts", "server restarts"),
        ("eval_seconds", "eval time (s)"),
    ]
    rows = [
        [label, _setting(s[k])]
        for k, label in keys
        if s.get(k) not in (None, "", [])
        and not (k == "fingerprint_now" and s[k] == s.get("fingerprint"))
    ]
    if "enable_thinking" in s and s["enable_thinking"] is None:
        rows.append(["enable_thinking", "template default"])
    for name, version in (s.get("versions") or {}).items():
        rows.append([f"{name} (eval)", version])
    built = (r.get("training") or {}).get("versions") or {}
    for name, version in built.items():
        rows.append([f"{name} (build)", version])
    out += _table(["setting", "value"], rows)
    out += ["", "Repeat the eval:", "", "```sh", r["repeat"], "```"]
    return out


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in value)
    return str(value)


def _link(path: str, out_dir: Path | None) -> str:
    target = ROOT / path if not Path(path).is_absolute() else Path(path)
    if out_dir is None:
        return str(target)
    return os.path.relpath(target, Path(out_dir).resolve())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text if len(text) <= _CELL else text[: _CELL - 3] + "..."

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _bytes(value: int | None) -> str:
    if not value:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def render_chart(report: Mapping[str, Any]) -> bytes:
    """results.png: per-category score with its 95% interval, threshold and baseline marked.

    One bar per gated category and overall at each temperature of the sweep (the decision
    temperature solid, the others lighter); error bars are the intervals, a black bar the
    threshold, a diamond the baseline. Raises ChartUnavailable without matplotlib.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as err:
        raise ChartUnavailable(f"matplotlib is not installed ({CHART_EXTRA})") from err

    sweep = report["sweep"]
    temps = list(sweep["temperatures"])
    decision = _tkey(report["decision_temperature"])
    temps.sort(key=lambda t: t != decision)  # decision first
    cats = [c for c in sweep["categories"]]
    thresholds = {c["category"]: c.get("threshold") for c in report["criteria"]}
    baselines = {c["category"]: c.get("baseline") for c in report["criteria"]}
    n = len(cats)
    width = 0.8 / len(temps)
    fig = Figure(figsize=(max(8.0, 1.15 * n + 2), 5.2), dpi=110, layout="constrained")
    ax = fig.subplots()
    colours = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    for j, t in enumerate(temps):
        for i, c in enumerate(cats):
            cell = c["by_temperature"].get(t)
            if not cell:
                continue
            x = i - 0.4 + width * (j + 0.5)
            passed = None if report["thresholds_pending"] else cell["passed"]
            ax.bar(
                x,
                cell["mean"],
                width * 0.92,
                color=colours[passed],
                alpha=1.0 if j == 0 else 0.45,
                edgecolor="black",
                linewidth=0.6,
                hatch="//" if cell.get("fragile") else None,
            )
            ax.errorbar(
                x,
                cell["mean"],
                yerr=[[max(0.0, cell["mean"] - cell["lo"])], [max(0.0, cell["hi"] - cell["mean"])]],
                fmt="none",
                ecolor="black",
                capsize=3,
                linewidth=1,
            )
    for i, c in enumerate(cats):
        th = thresholds.get(c["category"])
        if th is not None:
            ax.hlines(th, i - 0.45, i + 0.45, colors="black", linewidth=2.5, zorder=5)
        bl = baselines.get(c["category"])
        if bl is not None:
            ax.plot(i + 0.42, bl, marker="D", color="#1565c0", markersize=6, zorder=6)
    labels = []
    for c in cats:
        means = [
            f"{100 * c['by_temperature'][t]['mean']:.0f}%" if t in c["by_temperature"] else "-"
            for t in temps
        ]
        labels.append(f"{c['category']}\n{' / '.join(means)}")
    ax.set_xticks(range(n), labels, fontsize=9)
    if len(temps) > 1:
        ax.set_xlabel(f"category, then mean at T={' / '.join(temps)}", fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0%", "20%", "40%", "60%", "80%", "100%"])
    ax.set_ylabel(f"score ({report['score']}), mean and 95% interval")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if n:
        ax.axvline(n - 1.5, color="grey", linewidth=0.8, linestyle=":")
    base = report.get("baseline_name") or "baseline"
    handles = [
        Patch(facecolor=colours[True], edgecolor="black", label="meets threshold"),
        Patch(facecolor=colours[False], edgecolor="black", label="below threshold"),
        Patch(facecolor=colours[None], edgecolor="black", label="pending / not gated"),
        Patch(facecolor="white", edgecolor="black", hatch="//", label="fragile"),
        Line2D([], [], color="black", linewidth=2.5, label="threshold"),
        Line2D([], [], color="#1565c0", marker="D", linestyle="none", label=f"baseline ({base})"),
    ]
    if len(temps) > 1:
        handles.append(
            Patch(
                facecolor="#9e9e9e",
                alpha=0.45,
                edgecolor="black",
                label=f"lighter: T={', '.join(temps[1:])}",
            )
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    o = report.get("overall") or {}
    title = f"{report['experiment']}: {report['verdict']}"
    if o:
        pending = " (pending)" if report["thresholds_pending"] else ""
        title += (
            f" - overall {100 * o['mean']:.1f}% vs threshold "
            f"{100 * (o['threshold'] or 0):.0f}%{pending}"
        )
    which = f"T={', '.join(temps)} (T={decision} decides)" if len(temps) > 1 else f"T={decision}"
    ax.set_title(
        f"{title}\n{which}, {report['samples']} sample(s) per prompt, score {report['score']}"
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# --- comparing two runs -----------------------------------------------------------------------


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Per-category and per-prompt differences of two reports, at their decision temperatures."""
    notes = []
    for key, what in (("experiment", "experiments"), ("score", "primary scores")):
        if a.get(key) != b.get(key):
            notes.append(f"different {what}: {a.get(key)} vs {b.get(key)}")
    if a["decision_temperature"] != b["decision_temperature"]:
        notes.append(
            f"different decision temperatures: {a['decision_temperature']:g} vs "
            f"{b['decision_temperature']:g}"
        )
    if a["settings"].get("samples") != b["settings"].get("samples"):
        notes.append(f"different samples: {a['samples']} vs {b['samples']}")
    ca = {c["category"]: c for c in a["criteria"]}
    cb = {c["category"]: c for c in b["criteria"]}
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
    pa = {p["id"]: p for p in a["prompts"]}
    pb = {p["id"]: p for p in b["prompts"]}
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


def _run_head(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: r.get(k)
        for k in ("run_dir", "experiment", "score", "verdict", "decision_temperature", "samples")
    } | {"fingerprint": r["settings"].get("fingerprint")}


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


# --- 4. the writer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    markdown: Path
    json: Path
    chart: Path | None
    """None when the chart was skipped (`chart_skipped` says why)."""
    chart_skipped: str
    report: dict[str, Any]


def report_dir(experiment_name: str) -> Path:
    return ROOT / "reports" / experiment_name


def write_report(
    report: Mapping[str, Any], out_dir: Path | None = None, *, chart: bool = True
) -> Written:
    """Write results.md, results.json and (with matplotlib) results.png into `out_dir`
    (default `reports/<experiment>/`); each file is replaced atomically."""
    out = Path(out_dir) if out_dir is not None else report_dir(report["experiment"])
    out.mkdir(parents=True, exist_ok=True)
    png: bytes | None = None
    skipped = ""
    if chart:
        try:
            png = render_chart(report)
        except ChartUnavailable as err:
            skipped = str(err)
    else:
        skipped = "turned off (--no-chart)"
    full = {**report, "chart": {"file": CHART} if png else {"skipped": skipped}}
    chart_path = out / CHART
    if png:
        _replace(chart_path, png)
    elif chart_path.exists():
        chart_path.unlink()  # a chart from an earlier run would contradict this report
    _replace(out / JSON, (json.dumps(full, indent=2, default=str) + "\n").encode())
    _replace(out / MARKDOWN, render_markdown(full, out).encode())
    return Written(out / MARKDOWN, out / JSON, chart_path if png else None, skipped, full)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def report_run(
    run_dir: Path,
    experiment: Experiment | None = None,
    *,
    out_dir: Path | None = None,
    chart: bool = True,
) -> Written:
    """collect -> build_report -> write_report: the report of one run folder."""
    return write_report(build_report(collect(run_dir, experiment)), out_dir, chart=chart)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline report",
        description="Write reports/<experiment>/results.{md,json,png} for a run folder, "
        "or compare two runs (--compare RUN_A RUN_B).",
    )
    parser.add_argument("run_dir", nargs="?", type=Path, help="runs/<experiment>/<key>/")
    parser.add_argument(
        "--experiment",
        default=None,
        help="experiment name or TOML path [the one recorded in the run's summary.json]",
    )
    parser.add_argument("--out", type=Path, default=None, help="[reports/<experiment>/]")
    parser.add_argument("--no-chart", action="store_true", help="do not draw results.png")
    parser.add_argument(
        "--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), help="print differences"
    )
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.compare is None):
        parser.error("give one RUN_DIR, or --compare RUN_A RUN_B")
    try:
        experiment = load_experiment(args.experiment) if args.experiment else None
        if args.compare:
            a, b = (build_report(collect(p, experiment)) for p in args.compare)
            print(render_compare(compare(a, b)))
            return 0
        written = report_run(args.run_dir, experiment, out_dir=args.out, chart=not args.no_chart)
    except (ReportError, ExperimentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    r = written.report
    print(f"{r['experiment']}: {r['verdict']}" + "".join(f"\n  {x}" for x in r["verdict_reasons"]))
    print(f"report: {_show_path(written.markdown)}")
    print(f"json:   {_show_path(written.json)}")
    chart = _show_path(written.chart) if written.chart else f"skipped: {written.chart_skipped}"
    print(f"chart:  {chart}")
    return 1 if r["verdict"] == "FAIL" else 0


__all__ = [
    "CHART",
    "JSON",
    "MARKDOWN",
    "ChartUnavailable",
    "ReportError",
    "RunData",
    "Written",
    "build_report",
    "calls_text",
    "collect",
    "compare",
    "format_call",
    "main",
    "render_chart",
    "render_compare",
    "render_markdown",
    "report_dir",
    "report_run",
    "write_report",
]
