"""The eval gate's session: build (or take) the model, serve it, ask every prompt once.

Per-prompt and threshold tests only read the session's result, so the model is served once
however the tests are selected. Every test under tests/eval carries the `eval` marker. Right
after the eval the session writes `reports/<experiment>/results.{md,json,png}`
(pipeline.report), and again when the session ends, once the preflight's report of the same
session is on disk: that last report's verdict is pytest's exit status (pipeline.cli.pytest_plugin).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from syrupy.extensions.amber import AmberSnapshotExtension

from pipeline import report
from pipeline.cli.eval import criterion_mark
from pipeline.cli.pytest_plugin import gate_session
from pipeline.core.errors import RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.eval.run import EvalResult, eval_run_dir, run_eval
from pipeline.eval.verdict import recorded_preflight
from pipeline.spec.experiment import Experiment

_WRITTEN = pytest.StashKey["report.Written | str"]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.eval)


@pytest.fixture(scope="session")
def eval_result(
    experiment: Experiment,
    workspace: Workspace,
    pytestconfig: pytest.Config,
    request: pytest.FixtureRequest,
) -> EvalResult:
    gate = gate_session(pytestconfig)
    server_url = pytestconfig.getoption("server_url")
    given_model = pytestconfig.getoption("model")
    model_dir = None if server_url else request.getfixturevalue("fused_model")
    run_dir = eval_run_dir(
        experiment,
        workspace,
        model_dir=model_dir,
        server_url=server_url,
        built=not (server_url or given_model),
    )
    try:
        result = run_eval(
            experiment,
            run_dir,
            model_dir=model_dir,
            server_url=server_url,
            samples=pytestconfig.getoption("samples"),
            temperatures=pytestconfig.getoption("temperature"),
            concurrency=pytestconfig.getoption("concurrency"),
            preflight=recorded_preflight(workspace, experiment, run_dir),
            log=gate.say,
        )
    except RoutegateError as err:
        gate.stopped_by(err)  # the session exits with its code (2 bad input, 3 a fault)
        pytest.fail(f"the eval could not run: {err}", pytrace=False)

    def write() -> report.Written | str:
        """The report, or why it could not be written: the eval's result stands either way,
        and test_report fails with the reason."""
        try:
            return report.report_run(result.run_dir, experiment, workspace=workspace)
        except Exception as err:
            return f"{type(err).__name__}: {err}"

    def finish():
        written = write()
        if isinstance(written, str):
            gate.lines.append(f"the report could not be written: {written}")
            return None
        verdict = written.verdict
        gate.lines.append(f"{experiment.name}: {verdict.outcome}")
        gate.lines += [f"  {reason}" for reason in verdict.reasons]
        for name, row in result.decision().categories.items():
            if row.threshold is not None:
                shown = f"{row.mean:.3f} [{row.lo:.3f}, {row.hi:.3f}] n={row.n}"
                gate.lines.append(
                    f"  {name:<11} {shown} >= {row.threshold:.2f}:{criterion_mark(row)}"
                )
        gate.lines.append(f"report: {written.markdown}")
        if written.chart is None:
            gate.lines.append(f"chart skipped: {written.chart_skipped}")
        return verdict

    pytestconfig.stash[_WRITTEN] = write()
    gate.at_finish(finish)
    if result.summary.verdict == "ERROR":  # no usable answers: nothing for a prompt test to judge
        pytest.fail(f"the eval could not run: {result.summary.verdict_reasons[0]}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def eval_report(eval_result: EvalResult, pytestconfig: pytest.Config) -> report.Written:
    """The report written right after this session's eval."""
    written = pytestconfig.stash[_WRITTEN]
    if isinstance(written, str):
        pytest.fail(f"the report could not be written: {written}", pytrace=False)
    return written


@pytest.fixture
def eval_snapshot(snapshot, experiment: Experiment):
    """Snapshots kept per experiment, so a tiny run never compares against smol's.

    Outside syrupy's default `__snapshots__/`: its default extension walks that folder
    recursively, and `--snapshot-update` for one experiment deleted the other's snapshots
    there as unused (measured: smol's update emptied half of tiny's file)."""
    extension = type(
        f"{experiment.name.title()}Snapshots",
        (AmberSnapshotExtension,),
        {"snapshot_dirname": f"snapshots/{experiment.name}"},
    )
    return snapshot.use_extension(extension)
