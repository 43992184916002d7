"""Fixtures for the preflight gate: each tokenizer and each split is loaded once per session.

A loader that fails is reported by its own test (test_loads); tests that need what it would
have loaded skip and point there, so bad input gives one clear failure, not a wall of errors.
Every test records its Finding; the terminal summary prints them and writes preflight.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline import preflight
from pipeline.catalog import Catalog, load_catalog
from pipeline.data import DataError, Example
from pipeline.experiment import Experiment, ExperimentError, from_options
from pipeline.models import ModelError
from pipeline.preflight import Finding, Rendered, Side

_FINDINGS_KEY = "preflight-finding"


@dataclass(frozen=True)
class Loaded:
    value: Any = None
    error: str = ""

    def get(self, what: str) -> Any:
        if self.error:
            pytest.skip(f"{what} did not load (see test_loads): {self.error.splitlines()[0]}")
        return self.value


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def sides(experiment: Experiment) -> dict[str, Loaded]:
    out = {}
    for name in preflight.SIDES:
        try:
            out[name] = Loaded(preflight.load_side(experiment, name))
        except ModelError as err:
            out[name] = Loaded(error=str(err))
    return out


@pytest.fixture(scope="session")
def splits(experiment: Experiment) -> Loaded:
    try:
        return Loaded(preflight.load_splits(experiment))
    except DataError as err:
        return Loaded(error=str(err))


@pytest.fixture(scope="session")
def side(sides: dict[str, Loaded]) -> Callable[[str], Side]:
    return lambda name: sides[name].get(f"the {name} tokenizer")


@pytest.fixture(scope="session")
def examples(splits: Loaded) -> Callable[[str], list[Example]]:
    return lambda split: splits.get("the data")[split]


@pytest.fixture(scope="session")
def rendered(side: Callable[[str], Side], examples: Callable[[str], list[Example]]):
    cache: dict[tuple[str, str], list[Rendered]] = {}

    def get(name: str, split: str) -> list[Rendered]:
        if (name, split) not in cache:
            cache[name, split] = preflight.render_examples(side(name), examples(split))
        return cache[name, split]

    return get


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Callable[[Finding], None]:
    """Record a finding for the summary and fail the test when it failed."""

    def check(finding: Finding) -> None:
        request.node.user_properties.append((_FINDINGS_KEY, dataclasses.asdict(finding)))
        if finding.verdict == "skip":
            pytest.skip(finding.message())
        if finding.failed:
            pytest.fail(finding.message(), pytrace=False)

    return check


# --- summary and report --------------------------------------------------------------------------

_FOUND: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs on the controller for xdist workers' reports too, so the summary sees every test.
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == _FINDINGS_KEY and isinstance(value, dict):
            _FOUND.append(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not _FOUND or hasattr(config, "workerinput"):
        return
    findings = [Finding(**f) for f in _FOUND]
    terminalreporter.section("routegate preflight")
    terminalreporter.write_line(preflight.summary(findings))
    try:
        experiment = from_options(config.getoption)
    except ExperimentError:
        return
    path = preflight.write_report(experiment, findings)
    terminalreporter.write_line(f"report: {path}")
