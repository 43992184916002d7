"""The verdict: one function from the pre-registered criteria and what a run measured.

PASS / FAIL / PENDING / ERROR with its reasons. `summary.json`, `results.json`, `results.md`,
the terminal summary, JUnit and pytest's exit status all take it from `judge`; nothing else
decides whether a run passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.builder import BuildPreflight, read_record
from pipeline.core.errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS
from pipeline.core.records import Record
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.definitions.experiment import Experiment, Thresholds
from pipeline.eval.records import EvalSummary
from pipeline.preflight import PreflightReport, read_report

Outcome = Literal["PASS", "FAIL", "PENDING", "ERROR"]
EXIT_CODES: dict[str, int] = {"PASS": EXIT_PASS, "PENDING": EXIT_PASS, "FAIL": EXIT_FAIL}


@dataclass(frozen=True)
class PreflightOutcome:
    """What the preflight said about this run's experiment and data."""

    failed: bool
    line: str
    """One line for the reasons: how many checks failed, and whether the build was forced."""


@dataclass(frozen=True)
class Verdict(Record):
    KIND = "verdict"
    VERSION = 1

    outcome: Outcome
    reasons: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.outcome, EXIT_ERROR)


def meets(mean: float, threshold: float) -> bool:
    """The pass rule of one criterion: the mean at or above its pre-registered threshold."""
    return mean >= threshold


def judge_run(
    summary: EvalSummary,
    thresholds: Thresholds,
    *,
    preflight: PreflightOutcome | None,
    first_error: str = "",
) -> Verdict:
    """The verdict of an eval from its summary: the one place `judge`'s inputs are read from
    a run (the eval judges its fresh summary; the report judges it again with the preflight
    as it stands when the report is written)."""
    return judge(
        thresholds,
        summary.decision().categories,
        preflight=preflight,
        errors=sum(row.errors for row in summary.temperatures.values()),
        requests=summary.requests,
        first_error=first_error,
        require_decidable=summary.require_decidable,
        paired=summary.paired,
        max_drop=summary.max_drop,
        rule=summary.decide,
        non_inferiority=summary.non_inferiority,
    )


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _get(row: Any, key: str) -> Any:
    """A field of a category row: a record's attribute or a report row's key."""
    return row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)


def judge(
    thresholds: Thresholds,
    scores: Mapping[str, Any],
    *,
    preflight: PreflightOutcome | None = None,
    errors: int = 0,
    requests: int = 0,
    first_error: str = "",
    require_decidable: bool = False,
    paired: Mapping[str, Any] | None = None,
    max_drop: float | None = None,
    rule: str = "thresholds",
    non_inferiority: Mapping[str, Any] | None = None,
) -> Verdict:
    """The verdict of one run.

    `scores` maps each scored category (and `overall`) to its row at the decision temperature
    (a CategoryRow, or a report row with the same keys). A gated category (one with a
    threshold) that no prompt scored fails the run; with `require_decidable`, so does a pass
    whose 95% interval reaches below its threshold. With `max_drop`, a category whose paired
    interval against the baseline run (`paired`) does not rule out a drop larger than it
    fails.

    One request without a usable answer (no connection, a timeout, an HTTP error, a body that
    is no completion, or one the eval stopped before: pipeline.eval.client) makes the run an
    ERROR, with the first such request's cause in the first reason; no threshold is judged.
    Scoring it 0 would count a fault against the model, and leaving it out would judge fewer
    prompts than were pre-registered; a rerun asks only the requests without an answer.

    With `rule` "non-inferiority" the verdict rests on `non_inferiority` (per category with a
    margin: NON-INFERIOR / INFERIOR / UNDECIDED, pipeline.eval.metrics.non_inferiority)
    instead of the thresholds: PASS only when every such category is NON-INFERIOR.
    """
    reasons: list[str] = []
    if errors:
        cause = f": {first_error}" if first_error else ""
        reasons.append(f"{errors} of {requests} request(s) got no usable answer{cause}")
        return Verdict("ERROR", tuple(reasons))

    if rule == "non-inferiority":
        return _replaces(non_inferiority or {}, preflight)
    gated = thresholds.as_dict()
    present = {name: scores[name] for name in gated if name in scores}
    missed = [
        (name, float(_get(row, "mean")), gated[name])
        for name, row in present.items()
        if not meets(float(_get(row, "mean")), gated[name])
    ]
    undecided = [
        (name, row, gated[name])
        for name, row in present.items()
        if require_decidable
        and float(_get(row, "mean")) >= gated[name]
        and float(_get(row, "lo")) < gated[name]
    ]
    regressed = [
        (name, row)
        for name, row in (paired or {}).items()
        if max_drop is not None and float(_get(row, "lo")) < -max_drop
    ]
    absent = [name for name in gated if name not in scores]
    if missed and not thresholds.pending:
        reasons.append(
            "below the pre-registered threshold: "
            + ", ".join(f"{name} {_pct(got)} < {_pct(limit)}" for name, got, limit in missed)
        )
    if undecided and not thresholds.pending:
        reasons.append(
            "not decidable (--require-decidable): "
            + ", ".join(
                f"{name} {_pct(float(_get(row, 'mean')))} >= {_pct(limit)} but its 95% "
                f"interval reaches {_pct(float(_get(row, 'lo')))}"
                + (
                    f" ({_get(row, 'prompts_needed')} prompts would decide)"
                    if _get(row, "prompts_needed")
                    else ""
                )
                for name, row, limit in undecided
            )
        )
    if regressed and max_drop is not None:
        reasons.append(
            f"a drop of more than {_pct(max_drop)} from the baseline run is not ruled out: "
            + ", ".join(
                f"{name} {_pct(float(_get(row, 'difference')))} (paired 95% interval "
                f"{_pct(float(_get(row, 'lo')))} to {_pct(float(_get(row, 'hi')))})"
                for name, row in regressed
            )
        )
    if absent:
        reasons.append(f"no prompt scored in: {', '.join(absent)}")
    preflight_failed = preflight is not None and preflight.failed
    if preflight_failed and preflight is not None:
        reasons.append(preflight.line)
    if thresholds.pending:
        reasons.append("the thresholds are pending (not yet pre-registered from measurements)")
    failed = (missed or undecided) and not thresholds.pending
    if failed or regressed or preflight_failed or absent:
        return Verdict("FAIL", tuple(reasons))
    if thresholds.pending:
        return Verdict("PENDING", tuple(reasons))
    return Verdict("PASS", tuple(reasons))


def _replaces(rows: Mapping[str, Any], preflight: PreflightOutcome | None) -> Verdict:
    """The verdict of "can the candidate replace the baseline run?"."""
    reasons: list[str] = []

    def shown(name: str, row: Any) -> str:
        return (
            f"{name} {_pct(float(_get(row, 'difference')))} (one-sided 95% lower bound "
            f"{_pct(float(_get(row, 'lower')))}, margin -{_pct(float(_get(row, 'margin')))})"
        )

    inferior = [shown(n, r) for n, r in rows.items() if _get(r, "decision") == "INFERIOR"]
    undecided = [
        shown(n, r)
        + (
            f", {_get(r, 'prompts_needed')} prompts would decide"
            if _get(r, "prompts_needed")
            else ", no number of prompts decides"
        )
        for n, r in rows.items()
        if _get(r, "decision") == "UNDECIDED"
    ]
    if inferior:
        reasons.append(
            "inferior to the baseline run by more than the margin: " + "; ".join(inferior)
        )
    if undecided:
        reasons.append("not shown non-inferior to the baseline run: " + "; ".join(undecided))
    if not rows:
        reasons.append("no category was compared with the baseline run")
    if preflight is not None and preflight.failed:
        reasons.append(preflight.line)
    if reasons:
        return Verdict("FAIL", tuple(reasons))
    return Verdict("PASS", (f"non-inferior to the baseline run in {', '.join(rows)}",))


def preflight_outcome(
    report: PreflightReport | None,
    recorded: BuildPreflight | None,
    fingerprint: str,
) -> PreflightOutcome | None:
    """The preflight's word on a run, from `reports/<exp>/preflight.json` (counted only when
    written for the run's fingerprint: same settings, same data) and the build record's
    `preflight` entry (what the build saw, and whether it was forced past a failure)."""
    if report is None and recorded is None:
        return None
    current = report is not None and report.fingerprint == fingerprint
    build_failed = recorded is not None and not recorded.passed
    file_failed = report is not None and current and not report.passed
    if build_failed and recorded is not None and recorded.forced:
        line = (
            f"the preflight failed ({len(recorded.failed)} check(s)) and the model "
            "was built anyway (--force): the run does not test the hypothesis"
        )
    elif build_failed or file_failed:
        n = (len(report.failed) if report is not None else 0) or (
            len(recorded.failed) if recorded is not None else 0
        )
        line = f"the preflight failed ({n} check(s))"
    else:
        line = ""
    return PreflightOutcome(failed=build_failed or file_failed, line=line)


def recorded_preflight(
    workspace: Workspace, experiment: Experiment, run_dir: Path | None = None
) -> PreflightOutcome | None:
    """The preflight outcome on disk for a run: the workspace's preflight.json for the
    experiment, and the preflight entry of `run_dir/build.json` when routegate built it."""
    report = read_report(workspace.preflight_report(experiment.name))
    record = read_record(RunFolder(run_dir).build_record) if run_dir is not None else None
    recorded = record.preflight if record is not None else None
    return preflight_outcome(report, recorded, experiment.fingerprint())
