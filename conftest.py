"""routegate's pytest fixtures: the session objects every gate shares.

The gate's logic lives in `pipeline/`; options and the exit status are the plugin's
(pipeline/cli/pytest_plugin.py, a pytest11 entry point). Fixtures here only select the
experiment and the workspace and hand the same objects to tests that the CLI uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.pytest_plugin import gate_session
from pipeline.core.errors import RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.spec.experiment import Experiment, from_options


@pytest.fixture(scope="session")
def experiment(pytestconfig: pytest.Config) -> Experiment:
    """The experiment under test, with command-line overrides applied."""
    try:
        return from_options(pytestconfig.getoption)
    except RoutegateError as err:
        pytest.fail(f"cannot load the experiment: {err}", pytrace=False)


@pytest.fixture(scope="session")
def workspace(pytestconfig: pytest.Config) -> Workspace:
    """Where runs/ and reports/ go: `--workdir DIR`, $ROUTEGATE_WORKDIR, or the checkout."""
    return Workspace.at(pytestconfig.getoption("workdir"))


@pytest.fixture(scope="session")
def fused_model(experiment: Experiment, workspace: Workspace, pytestconfig: pytest.Config) -> Path:
    """The quantized model folder under test: `--model PATH`, or built (or reused) here.

    The build is `pipeline.build.build` with `--force` passed through, its progress on the
    terminal; a preflight refusal or a failed stage fails the requesting test with the build's
    own message.
    """
    from pipeline.build import BuildRefused, build
    from pipeline.eval.integrity import after_build
    from pipeline.preflight import summary

    given = pytestconfig.getoption("model")
    if given:
        folder = Path(given).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "has no config.json"
            pytest.fail(f"--model {folder} {what}: pass a model folder", pytrace=False)
        return folder.resolve()
    try:
        built = build(
            experiment,
            force=pytestconfig.getoption("force"),
            workspace=workspace,
            log=gate_session(pytestconfig).say,
        )
    except BuildRefused as err:
        table = summary(err.findings) + "\n" if err.findings else ""
        pytest.fail(f"{table}{err}", pytrace=False)
    except RoutegateError as err:
        pytest.fail(f"build failed: {err}", pytrace=False)
    try:
        after_build(
            experiment,
            built.run_dir,
            skip=pytestconfig.getoption("no_integrity"),
            log=gate_session(pytestconfig).say,
        )
    except RoutegateError as err:  # a failed step: the model judged is not the model trained
        pytest.fail(str(err), pytrace=False)
    return built.quantized
