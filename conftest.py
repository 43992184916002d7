"""routegate's pytest doors: command-line options and the session fixtures every gate shares.

The gate's logic lives in `pipeline/`; fixtures here only select the experiment and hand the
same objects to tests that the `python -m pipeline` CLI uses.
"""

from __future__ import annotations

import pytest

from pipeline.experiment import Experiment, ExperimentError, from_options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("routegate")
    group.addoption(
        "--experiment",
        default="tiny",
        help="experiment name (experiments/NAME.toml) or path to a TOML file [tiny]",
    )
    group.addoption("--base-model", default=None, help="hub id or folder replacing models.base")
    group.addoption(
        "--reference-model", default=None, help="hub id or folder replacing models.reference"
    )
    group.addoption("--data", default=None, help="folder with train.jsonl/valid.jsonl")
    group.addoption("--model", default=None, help="a fused model folder to evaluate (no build)")
    group.addoption(
        "--server-url", default=None, help="an OpenAI-compatible server to evaluate (no build)"
    )
    group.addoption("--samples", type=int, default=None, help="samples per prompt (eval)")
    group.addoption(
        "--temperature", default=None, help="temperature or comma-separated sweep (eval)"
    )
    group.addoption(
        "--force",
        action="store_true",
        default=False,
        help="build even when the preflight fails (the report still records the failure)",
    )


@pytest.fixture(scope="session")
def experiment(pytestconfig: pytest.Config) -> Experiment:
    """The experiment under test, with command-line overrides applied."""
    try:
        return from_options(pytestconfig.getoption)
    except ExperimentError as err:
        pytest.fail(f"cannot load the experiment: {err}", pytrace=False)
