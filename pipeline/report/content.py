"""The report as data: `build_report(run)` is results.json's record (pipeline.report.record), a
pure function of what `collect` read.

The verdict is the gate's, from `pipeline.eval.verdict.judge`: the thresholds the run was
judged against, its scores at the decision temperature, its unanswered requests, and the
preflight as it stands now (`preflight_outcome`: a build forced past a failure, or a current
preflight.json that failed). The summary's own verdict is kept beside it as
`thresholds_verdict`.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.builder import BuildRecord, FuseRecord
from pipeline.core.workspace import RunFolder
from pipeline.definitions.experiment import EXPERIMENTS_DIR, OVERALL, Thresholds
from pipeline.eval.client import first_cause
from pipeline.eval.records import eval_files, temperature_key
from pipeline.eval.scoring import ANOMALIES
from pipeline.eval.verdict import PreflightOutcome, Verdict, judge_run, preflight_outcome
from pipeline.preflight import PreflightReport
from pipeline.preflight.costs import CheckCosts
from pipeline.report.collect import RunData
from pipeline.report.record import ReportRecord
from pipeline.report.scores import (
    changes,
    distribution,
    failures,
    prompt_rows,
    robustness,
    sweep,
)
from pipeline.report.show import show_path

FORMAT = ReportRecord.VERSION
"""results.json's `format` key: its record's version (bump `ReportRecord.VERSION`)."""

_STAGES = ("train", "fuse", "quantize")
_BUILD_PREFLIGHT = ("passed", "forced", "failed", "checks", "fingerprint")
_TRAIN = (
    "fine_tune_type",
    "iters",
    "ranks",
    "effective_batch",
    "train_loss",
    "val_loss",
    "val_loss_step",
    "trainable_parameters",
    "trainable_parameters_reported",
    "total_parameters_millions",
    "mlx_peak_memory_gb",
)
_QUANTIZE = ("bits", "group_size", "bits_per_weight")


def build_report(run: RunData) -> ReportRecord:
    """The whole report (results.json); a pure function of `run`."""
    summary = run.summary
    exp = run.experiment
    decision = summary.decision()
    overall = decision.categories.get(OVERALL)
    warnings: list[str] = []
    if exp is not None and exp.fingerprint() != summary.fingerprint:
        warnings.append(
            f"the experiment file has changed since this run (fingerprint now "
            f"{exp.fingerprint()}, the run's {summary.fingerprint}): settings read from the "
            "file below may not be the run's"
        )
    preflight = _preflight_section(run, warnings)
    for key, row in summary.temperatures.items():
        if row.errors:
            warnings.append(f"T={key}: {row.errors} request(s) got no answer")
        for kind, n in row.anomalies.items():  # a kind this version does not know: its name
            text = ANOMALIES.get(kind, kind)
            warnings.append(f"T={key}: {n} repl{'y' if n == 1 else 'ies'}: {text}")
    warnings += [row.stopped for row in summary.servers if row.stopped]
    verdict = verdict_of(run)
    training = _training_section(run.build)
    integrity = run.integrity.to_json() if run.integrity is not None else None
    if run.integrity is not None and run.integrity.failure:
        warnings.append(run.integrity.failure)
    docs = None
    if exp is not None and exp.docs is not None:
        docs = {"path": show_path(exp.docs), "files": list(run.docs)}
    t = summary.decision_temperature
    return ReportRecord(
        experiment=summary.experiment,
        description=exp.description if exp else "",
        run_dir=show_path(run.run_dir),
        verdict=verdict.outcome,
        verdict_reasons=tuple(verdict.reasons),
        thresholds_verdict=summary.verdict,
        thresholds_pending=summary.thresholds_pending,
        score=summary.score,
        samples=summary.samples,
        decision_temperature=t,
        baseline_name=exp.baseline.name if exp else "",
        overall=asdict(overall) if overall is not None else None,
        criteria=tuple({"category": n, **asdict(row)} for n, row in decision.categories.items()),
        require_decidable=summary.require_decidable,
        baseline_run=summary.baseline_run,
        max_drop=summary.max_drop,
        paired={name: asdict(row) for name, row in summary.paired.items()},
        decide=summary.decide,
        non_inferiority={n: asdict(row) for n, row in summary.non_inferiority.items()},
        prompts=tuple(prompt_rows(run.scores, t)),
        distribution=distribution(run.scores, t, run.categories),
        robustness=robustness(run.scores, t),
        changes=_rows(changes(run.scores, t, run.baseline_scores, run.baseline_temperature)),
        failures=failures(
            run.scores, t, run.categories, run.baseline_scores, run.baseline_temperature
        ),
        sweep=sweep(summary, run.scores),
        training=training,
        integrity=integrity,
        model_bytes=(training or {}).get("model_bytes") or run.model_bytes,
        preflight=preflight,
        servers=tuple(asdict(row) for row in summary.servers),
        settings=_settings(run),
        repeat=_repeat_command(run),
        docs=docs,
        files=_files(run),
        warnings=tuple(warnings),
    )


def _rows(rows: list[dict[str, Any]] | None) -> tuple[dict[str, Any], ...] | None:
    return tuple(rows) if rows is not None else None


def verdict_of(run: RunData) -> Verdict:
    """The run's verdict, with the preflight as it stands now."""
    failed = [s for s in run.scores if s["error"]]
    return judge_run(
        run.summary,
        _thresholds(run),
        preflight=_preflight_outcome(run),
        first_error=first_cause([str(s["error"]) for s in failed]),
    )


def _thresholds(run: RunData) -> Thresholds:
    """The thresholds the run was judged against: the experiment's while its file is the
    run's, else those recorded in the summary's rows."""
    exp, summary = run.experiment, run.summary
    if exp is not None and exp.fingerprint() == summary.fingerprint:
        return exp.thresholds
    recorded = {
        name: row.threshold
        for name, row in summary.decision().categories.items()
        if row.threshold is not None
    }
    return Thresholds(recorded, pending=summary.thresholds_pending)


def _preflight_outcome(run: RunData) -> PreflightOutcome | None:
    recorded = run.build.preflight if run.build is not None else None
    return preflight_outcome(run.preflight, recorded, run.summary.fingerprint)


def _preflight_section(run: RunData, warnings: list[str]) -> dict[str, Any] | None:
    recorded = run.build.preflight if run.build is not None else None
    pf = run.preflight
    outcome = _preflight_outcome(run)
    if outcome is None:
        return None
    fingerprint = run.summary.fingerprint
    out: dict[str, Any] = {"path": show_path(run.preflight_path) if run.preflight_path else None}
    if pf is not None:
        counts = Counter(f.verdict for f in pf.findings)
        current = pf.fingerprint == fingerprint
        out.update(
            fingerprint=pf.fingerprint,
            current=current,
            passed=pf.passed,
            base=pf.base,
            reference=pf.reference,
            counts={k: counts[k] for k in ("pass", "fail", "info", "skip") if counts[k]},
            findings=[asdict(f) for f in pf.findings],
        )
        if not current:
            warnings.append(
                f"{out['path']} was written for fingerprint {pf.fingerprint}, not this "
                f"run's {fingerprint}: its verdict is shown, not counted"
            )
    if recorded is not None:
        out["build"] = {k: getattr(recorded, k) for k in _BUILD_PREFLIGHT} | {
            "failed": list(recorded.failed)
        }
    out["failed_for_this_run"] = outcome.failed
    out["verdict_line"] = outcome.line
    if run.check_costs is not None and run.check_costs_path is not None:
        out["costs"] = _costs_section(run.check_costs, run.check_costs_path, pf)
    return out


def _costs_section(costs: CheckCosts, path: Path, pf: PreflightReport | None) -> dict[str, Any]:
    """What ignoring each check cost (the confound study's measurement), each row with this
    experiment's verdict on the check: "fail" when any of its findings failed, "pass" when
    all that ran passed, "" when the preflight has none."""
    verdicts: dict[str, str] = {}
    for f in pf.findings if pf is not None else ():
        if f.verdict in ("pass", "fail") and verdicts.get(f.check) != "fail":
            verdicts[f.check] = f.verdict
    return {
        "path": show_path(path),
        "experiment": costs.experiment,
        "command": costs.command,
        "written": costs.written,
        "trainings": costs.trainings,
        "trainings_said": _trainings_said(costs.trainings),
        "rows": [asdict(c) | {"here": verdicts.get(c.check, "")} for c in costs.costs],
    }


def _trainings_said(trainings: int) -> str:
    """The study's --seeds in words: a row trains until it is decided, at most that often."""
    if trainings == 1:
        return "one training per row"
    return f"up to {trainings} trainings per row, each row stopping at the first that decides it"


def _training_section(build: BuildRecord | None) -> dict[str, Any] | None:
    if build is None:
        return None
    stages = build.stages
    rows = [
        {
            "stage": name,
            "seconds": stage.wall_seconds,
            "peak_memory_bytes": stage.peak_memory_bytes,
            "output_bytes": stage.output_bytes,
            "removed": isinstance(stage, FuseRecord) and bool(stage.removed),
        }
        for name in _STAGES
        if (stage := stages.get(name)) is not None
    ]
    train, quant = stages.train, stages.quantize
    return {
        "key": build.key,
        "complete": build.complete,
        "started": build.started,
        "finished": build.finished,
        "seconds": build.seconds,
        "base_model": build.base_model,
        "stages": rows,
        **{k: getattr(train, k, None) for k in _TRAIN},
        "resumed_from": train.resumed_from.step if train and train.resumed_from else None,
        "resumed_exactly": bool(train and train.resumed_from and train.resumed_from.exact),
        "attempts": len(train.attempts) if train else 0,
        "model_bytes": quant.output_bytes if quant else None,
        **{k: getattr(quant, k, None) for k in _QUANTIZE},
        "versions": dict(build.inputs.versions),
    }


def _settings(run: RunData) -> dict[str, Any]:
    s, exp, build = run.summary, run.experiment, run.build
    out: dict[str, Any] = {
        "fingerprint": s.fingerprint,
        "score": s.score,
        "samples": s.samples,
        "temperatures": [row.temperature for row in s.temperatures.values()],
        "decision_temperature": s.decision_temperature,
        "model": s.model,
        "server_url": ", ".join(row.url for row in s.servers)
        if len(s.servers) > 1
        else s.server_url,
        "model_id": s.model_id,
        "build_key": build.key if build else None,
        "base_model": build.base_model if build else (exp.models.base if exp else None),
        "versions": dict(s.versions),
        "requests": s.requests,
        "restarts": s.restarts,
        "eval_seconds": s.seconds,
        "concurrency": s.concurrency or None,
        "served": (f"{s.served.weights}: {s.served.folder} ({s.served.why})" if s.served else None),
    }
    if exp is not None:
        ev = exp.eval
        out.update(
            experiment_file=show_path(exp.source),
            fingerprint_now=exp.fingerprint(),
            base_revision=exp.models.base_revision or None,
            reference_model=exp.models.reference,
            eval_seed=ev.seed,
            sampled_seeds="seed + sample index at T > 0; none at T = 0 (greedy)",
            max_tokens=ev.max_tokens,
            enable_thinking=ev.enable_thinking,
            stop=list(ev.stop),
            system_prompt=show_path(ev.system_prompt),
            prompts=show_path(ev.prompts),
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
    name = s.experiment
    if exp is not None and exp.source.parent.resolve() != EXPERIMENTS_DIR.resolve():
        name = show_path(exp.source)
    parts = ["python", "-m", "pipeline", "eval", "--experiment", name]
    if len(s.servers) > 1:
        parts += [arg for row in s.servers for arg in ("--server-url", row.url)]
    elif s.server_url:
        parts += ["--server-url", s.server_url]
    elif run.build is None and s.model:
        parts += ["--model", s.model]
    parts += ["--samples", str(s.samples)]
    temps = ",".join(temperature_key(row.temperature) for row in s.temperatures.values())
    parts += ["--temperature", temps]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _files(run: RunData) -> dict[str, str | None]:
    places = {
        **eval_files(run.run_dir),
        "build": RunFolder(run.run_dir).build_record,
        "build_log": RunFolder(run.run_dir).build_log,
    }
    out = {k: show_path(p) if p.exists() else None for k, p in places.items()}
    out["preflight"] = show_path(run.preflight_path) if run.preflight_path else None
    return out
