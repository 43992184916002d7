"""routegate's pytest fixtures: the session objects every gate shares.

The gate's line is pipeline.gate's; options and the exit status are the plugin's
(pipeline/cli/pytest_plugin.py, a pytest11 entry point). Fixtures here only hand the session's
one `Invocation` (read once from the options) and its steps to the tests, as the CLI does.
"""

from __future__ import annotations

import pytest

from pipeline.cli.pytest_plugin import gate_session
from pipeline.core.errors import BadInput, RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment
from pipeline.gate import Invocation, ModelUnderTest, model_under_test
from pipeline.preflight import Context


@pytest.fixture(scope="session")
def invocation(pytestconfig: pytest.Config) -> Invocation:
    """What this run was asked: the experiment with its overrides, the workspace, the model."""
    try:
        return gate_session(pytestconfig).invocation()
    except RoutegateError as err:
        pytest.fail(f"cannot load the experiment: {err}", pytrace=False)


@pytest.fixture(scope="session")
def experiment(invocation: Invocation) -> Experiment:
    """The experiment under test, with command-line overrides applied."""
    return invocation.experiment


@pytest.fixture(scope="session")
def workspace(invocation: Invocation) -> Workspace:
    """Where runs/ and reports/ go: `--workdir DIR`, $ROUTEGATE_WORKDIR, or the checkout."""
    return invocation.workspace


@pytest.fixture(scope="session")
def preflight_context(experiment: Experiment, workspace: Workspace) -> Context:
    """The inputs every preflight check reads, loaded on first use, once per process: the
    preflight's tests and the build's preflight share it."""
    return Context(experiment, workspace)


@pytest.fixture(scope="session")
def model(
    invocation: Invocation, preflight_context: Context, pytestconfig: pytest.Config
) -> ModelUnderTest:
    """The model under test: `--model PATH`, `--server-url URL`, or built (or reused) here
    and checked for integrity (pipeline.gate.model_under_test).

    The build's preflight runs on the session's shared context; a preflight refusal, a failed
    stage or a lost behaviour fails the requesting test with the step's own message."""
    from pipeline.builder import BuildRefused
    from pipeline.eval.integrity import IntegrityFailed
    from pipeline.preflight import run_checks, summary

    gate = gate_session(pytestconfig)
    try:
        return model_under_test(
            invocation, log=gate.say, preflight=lambda _: run_checks(preflight_context)
        )
    except BuildRefused as err:
        table = summary(err.findings) + "\n" if err.findings else ""
        pytest.fail(f"{table}{err}", pytrace=False)
    except BadInput as err:
        if invocation.model is None:  # the build's own bad input: its stage's message
            pytest.fail(f"build failed: {err}", pytrace=False)
        gate.stopped_by(err)  # a --model that is no model folder: exit 2, naming it
        pytest.fail(f"--model {err}", pytrace=False)
    except IntegrityFailed as err:  # the model judged is not the model trained
        pytest.fail(str(err), pytrace=False)
    except RoutegateError as err:
        pytest.fail(f"build failed: {err}", pytrace=False)
