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
from pipeline.definitions.experiment import Experiment
from pipeline.eval.run import EvalResult
from pipeline.gate import (
    Invocation,
    ModelUnderTest,
    evaluate,
    sweep_system_prompts,
    write_report,
)
from pipeline.report import append_step_summary

_WRITTEN = pytest.StashKey["report.Written | str"]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.eval)


@pytest.fixture(scope="session")
def eval_result(
    invocation: Invocation, model: ModelUnderTest, pytestconfig: pytest.Config
) -> EvalResult:
    """The eval of the session's model (pipeline.gate.evaluate); its report is written right
    after it and again at the session's end."""
    gate = gate_session(pytestconfig)
    experiment = invocation.experiment
    try:
        result = evaluate(invocation, model, log=gate.say)
        swept = sweep_system_prompts(invocation, model, log=gate.say)
        if swept is not None:
            gate.lines.append(f"system-prompt sweep: {swept}")
    except RoutegateError as err:
        gate.stopped_by(err)  # the session exits with its code (2 bad input, 3 a fault)
        pytest.fail(f"the eval could not run: {err}", pytrace=False)

    def write() -> report.Written | str:
        """The report, or why it could not be written: the eval's result stands either way,
        and test_report fails with the reason."""
        try:
            return write_report(invocation, result)
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
        gate.lines.append(f"report: {written.markdown} (and {written.html.name})")
        try:
            append_step_summary(written)  # once, with the session's final verdict
        except RoutegateError as err:
            gate.lines.append(f"not in the CI summary: {err}")
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
