"""The eval gate's session: build (or take) the model, serve it, ask every prompt once.

Per-prompt and threshold tests only read the session's result, so the model is served once
however the tests are selected. Every test under tests/eval carries the `eval` marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from syrupy.extensions.amber import AmberSnapshotExtension

from pipeline.evaluate import EvalResult, model_run_dir, run_eval, server_run_dir
from pipeline.experiment import Experiment
from pipeline.serve import ServerError


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
        return run_eval(
            experiment,
            run_dir,
            model_dir=model_dir,
            server_url=server_url,
            samples=pytestconfig.getoption("samples"),
            temperatures=pytestconfig.getoption("temperature"),
        )
    except ServerError as err:
        pytest.fail(f"the eval could not reach a server: {err}", pytrace=False)


@pytest.fixture
def eval_snapshot(snapshot, experiment: Experiment):
    """Snapshots kept per experiment, so a tiny run never compares against phase40's."""
    extension = type(
        f"{experiment.name.title()}Snapshots",
        (AmberSnapshotExtension,),
        {"snapshot_dirname": f"__snapshots__/{experiment.name}"},
    )
    return snapshot.use_extension(extension)
