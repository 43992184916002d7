"""Run the registry on one experiment: findings, the one-screen summary, and preflight.json.

Both doors run checks through `run_check`: the CLI and the build all at once (`run_preflight`),
pytest one test per finding subject. Each check runs once per context however its findings
are asked for, and a check whose inputs did not load yields a skip per subject, so both doors
record the same findings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.core.records import Record, RecordError
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment
from pipeline.preflight.context import NEEDS, Context
from pipeline.preflight.findings import Finding
from pipeline.preflight.registry import REGISTRY, Check


class RegistryError(RuntimeError):
    """A check returned findings other than the subjects it declares (a bug in the check)."""


def run_check(check: Check, ctx: Context) -> list[Finding]:
    """The check's findings, one per subject; computed once per context."""
    return ctx.memo(("check", check.name), lambda: _run(check, ctx))


def _run(check: Check, ctx: Context) -> list[Finding]:
    subjects = check.subjects(ctx)
    missing = [NEEDS[n] for n in check.needs if ctx.load_error(n)]
    if missing:
        why = f"not run: the {' and the '.join(missing)} did not load (see load)"
        return [Finding(check.name, s, "skip", why) for s in subjects]
    findings = check.run(ctx)
    got = [(f.check, f.subject) for f in findings]
    if got != [(check.name, s) for s in subjects]:
        raise RegistryError(f"check {check.name!r} declares subjects {subjects}, returned {got}")
    return findings


def finding_for(check: Check, subject: str, ctx: Context) -> Finding:
    """The check's finding on one subject (pytest's door: one test per subject)."""
    for finding in run_check(check, ctx):
        if finding.subject == subject:
            return finding
    raise RegistryError(f"check {check.name!r} has no subject {subject!r}")


def run_checks(ctx: Context, checks: Sequence[Check] = REGISTRY) -> list[Finding]:
    """Every check's findings, in the registry's order."""
    return [f for check in checks for f in run_check(check, ctx)]


def run_preflight(experiment: Experiment, *, workspace: Workspace) -> list[Finding]:
    """Every check, in order; a loader that fails is a failing finding (and skips), not a crash."""
    return run_checks(Context(experiment, workspace))


def expected(ctx: Context, checks: Sequence[Check] = REGISTRY) -> list[tuple[str, str]]:
    """(check, subject) of every finding the checks yield, in order, without running any."""
    return [(c.name, s) for c in checks for s in c.subjects(ctx)]


def in_order(
    findings: Iterable[Finding], ctx: Context, checks: Sequence[Check] = REGISTRY
) -> tuple[list[Finding], list[tuple[str, str]]]:
    """`findings` in the registry's order, and the expected (check, subject) pairs they lack."""
    by_key = {(f.check, f.subject): f for f in findings}
    keys = expected(ctx, checks)
    return [by_key[k] for k in keys if k in by_key], [k for k in keys if k not in by_key]


def summary(findings: Sequence[Finding]) -> str:
    """The one-screen table: check, subject, verdict, key figure."""
    rows = [(f.check, f.subject, f.verdict.upper(), f.figure) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [
        f"{c:<{widths[0]}}  {s:<{widths[1]}}  {v:<{widths[2]}}  {fig}" for c, s, v, fig in rows
    ]
    failed = sum(f.failed for f in findings)
    lines.append(f"preflight: {'FAIL' if failed else 'PASS'} ({failed} of {len(findings)} failed)")
    return "\n".join(lines)


def unloaded_input(findings: Sequence[Finding]) -> BadInput | None:
    """The bad-input error for the preflight's inputs that did not load (None when all did).

    A tokenizer-less folder or missing data is not a verdict on the experiment: the checks
    that read it could not run, so the doors exit 2 (bad input) naming the input, after
    printing and recording the findings as usual.
    """
    failed = [f for f in findings if f.check == "load" and f.failed]
    if not failed:
        return None
    named = "; ".join(f"{f.subject}: {f.detail}" for f in failed)
    return BadInput(
        f"the preflight could not load {len(failed)} input(s): {named}; fix the experiment's "
        "models/data or the --base-model, --reference-model or --data option that names them"
    )


def explain(findings: Sequence[Finding]) -> str:
    """The summary table, then what to fix for each failed check."""
    details = [f"\n{f.message()}" for f in findings if f.failed and f.detail]
    return "\n".join([summary(findings), *details])


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreflightReport(Record):
    """reports/<experiment>/preflight.json: the findings of one complete preflight, and the
    experiment fingerprint they were found for (a verdict counts them only for that one)."""

    KIND = "preflight"
    VERSION = 1

    experiment: str
    fingerprint: str
    base: str
    reference: str
    passed: bool
    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, experiment: Experiment, findings: Sequence[Finding]) -> PreflightReport:
        return cls(
            experiment=experiment.name,
            fingerprint=experiment.fingerprint(),
            base=experiment.models.base,
            reference=experiment.models.reference,
            passed=not any(f.failed for f in findings),
            findings=tuple(findings),
        )

    @property
    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.failed)


def write_report(experiment: Experiment, findings: Sequence[Finding], workspace: Workspace) -> Path:
    """reports/<experiment>/preflight.json in the workspace, written atomically."""
    return PreflightReport.of(experiment, findings).write(
        workspace.preflight_report(experiment.name)
    )


def read_report(path: Path) -> PreflightReport | None:
    """The preflight report at `path`; None where there is none. One that is not a preflight
    record this routegate reads is bad input naming the file."""
    if not Path(path).is_file():
        return None
    try:
        raw = io.read_json(path)
        if isinstance(raw, dict) and "kind" not in raw:  # written before it was a record
            raw = {"kind": PreflightReport.KIND, "version": 1, **raw}
        return PreflightReport.from_json(raw, str(path))
    except RecordError as err:
        raise RecordError(f"{err}; run `python -m pipeline preflight` again to rewrite it") from err
