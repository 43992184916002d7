"""The preflight gate's session: one lazily loaded context, the findings tests record, the report.

Each test (test_checks.py, one per check of the registry and subject) records its Finding.
When the session ends, the controller (xdist's too) puts them in the registry's order, writes
`reports/<experiment>/preflight.json` through the workspace (the file `python -m pipeline
preflight` writes, with the same findings) and prints the summary table. A run that left
checks out (`-k`, `-x`) and found no failure does not replace the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.cli.pytest_plugin import gate_session
from pipeline.core.errors import RoutegateError
from pipeline.preflight import Context, Finding, summary, unloaded_input, write_report
from pipeline.preflight.runner import in_order

_FINDINGS_KEY = "preflight-finding"
_FOUND: list[Finding] = []
_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Callable[[Finding], None]:
    """Record a finding for the report; skip or fail the test as the finding says."""

    def check(finding: Finding) -> None:
        request.node.user_properties.append((_FINDINGS_KEY, dataclasses.asdict(finding)))
        if finding.verdict == "skip":
            pytest.skip(finding.message())
        if finding.failed:
            pytest.fail(finding.message(), pytrace=False)

    return check


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs on the controller for xdist workers' reports too, so it sees every test.
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == _FINDINGS_KEY and isinstance(value, dict):
            _FOUND.append(Finding(**value))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write preflight.json before the gate's own finish (trylast) reads it."""
    config = session.config
    if not _FOUND or hasattr(config, "workerinput"):
        return
    try:
        invocation = gate_session(config).invocation()
    except (ValueError, RoutegateError):
        return
    ctx = Context(invocation.experiment, invocation.workspace)
    findings, missing = in_order(_FOUND, ctx)
    lines = [summary(findings)]
    if not missing or any(f.failed for f in findings):
        lines.append(f"report: {write_report(ctx.experiment, findings, ctx.workspace)}")
    else:
        check, subject = missing[0]
        lines.append(
            f"report not written: {len(missing)} findings did not run (first: "
            f"{check}[{subject}]); a complete run of tests/preflight writes it"
        )
    config.stash[_LINES] = lines
    unloaded = unloaded_input(findings)
    if unloaded is not None:  # exit 2 naming the input, as `python -m pipeline preflight`
        gate_session(config).stopped_by(unloaded)
        lines.append(f"error: {unloaded}")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, None)
    if not lines:
        return
    terminalreporter.section("routegate preflight")
    for line in lines:
        terminalreporter.write_line(line)
