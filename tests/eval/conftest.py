"""The eval gate's session: build (or take) the model, serve it, ask every prompt once.

Per-prompt and threshold tests only read the session's result, so the model is served once
however the tests are selected. Every test under tests/eval carries the `eval` marker.
Right after the eval the session writes `reports/<experiment>/results.{md,json,png}`
(pipeline.report), and again at the end, when the preflight's report of the same session is on
disk; test_report.py checks what was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from syrupy.extensions.amber import AmberSnapshotExtension

from pipeline import report
from pipeline.evaluate import EvalResult, model_run_dir, run_eval, server_run_dir
from pipeline.experiment import Experiment
from pipeline.serve import ServerError

_REPORT = pytest.StashKey[tuple[EvalResult, Experiment, report.Written | str]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.eval)


@pytest.fixture(scope="session")
def eval_result(
    experiment: Experiment, pytestconfig: pytest.Config, request: pytest.FixtureRequest
) -> EvalResult:
    server_url = pytestconfig.getoption("server_url")
    given_model = pytestconfig.getoption("model")
    if server_url:
        run_dir, model_dir = server_run_dir(experiment, server_url), None
    else:
        model_dir = request.getfixturevalue("fused_model")
        run_dir = model_run_dir(experiment, model_dir) if given_model else model_dir.parent
    try:
        result = run_eval(
            experiment,
            run_dir,
            model_dir=model_dir,
            server_url=server_url,
            samples=pytestconfig.getoption("samples"),
            temperatures=pytestconfig.getoption("temperature"),
        )
    except ServerError as err:
        pytest.fail(f"the eval could not reach a server: {err}", pytrace=False)
    pytestconfig.stash[_REPORT] = (result, experiment, _write_report(result, experiment))
    return result


def _write_report(result: EvalResult, experiment: Experiment) -> report.Written | str:
    """The report, or why it could not be written: the eval's result stands either way, and
    test_report fails with the reason."""
    try:
        return report.report_run(result.run_dir, experiment)
    except Exception as err:
        return f"{type(err).__name__}: {err}"


@pytest.fixture(scope="session")
def eval_report(eval_result: EvalResult, pytestconfig: pytest.Config) -> report.Written:
    """The report written right after this session's eval."""
    written = pytestconfig.stash[_REPORT][2]
    if isinstance(written, str):
        pytest.fail(f"the report could not be written: {written}", pytrace=False)
    return written


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Rewrite the report once the session's preflight.json is final, and say where it is."""
    if _REPORT not in config.stash:
        return
    result, experiment, _ = config.stash[_REPORT]
    written = _write_report(result, experiment)
    terminalreporter.section("routegate report")
    if isinstance(written, str):
        terminalreporter.write_line(f"the report could not be written: {written}")
        return
    r = written.report
    terminalreporter.write_line(f"{r['experiment']}: {r['verdict']}")
    for reason in r["verdict_reasons"]:
        terminalreporter.write_line(f"  {reason}")
    terminalreporter.write_line(f"report: {written.markdown}")
    if written.chart is None:
        terminalreporter.write_line(f"chart skipped: {written.chart_skipped}")


@pytest.fixture
def eval_snapshot(snapshot, experiment: Experiment):
    """Snapshots kept per experiment, so a tiny run never compares against phase40's."""
    extension = type(
        f"{experiment.name.title()}Snapshots",
        (AmberSnapshotExtension,),
        {"snapshot_dirname": f"__snapshots__/{experiment.name}"},
    )
    return snapshot.use_extension(extension)
