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


@pytest.fixture(scope="session")
def fused_model(experiment: Experiment, pytestconfig: pytest.Config):
    """The quantized model folder under test: `--model PATH`, or built (or reused) here.

    The build is `pipeline.build.build` with `--force` passed through; a preflight refusal or a
    failed stage fails the requesting test with the build's own message.
    """
    from pathlib import Path

    from pipeline.build import BuildError, BuildRefused, build
    from pipeline.preflight import summary
    from pipeline.train import StageError

    given = pytestconfig.getoption("model")
    if given:
        folder = Path(given).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "has no config.json"
            pytest.fail(f"--model {folder} {what}: pass a model folder", pytrace=False)
        return folder.resolve()
    try:
        return build(experiment, force=pytestconfig.getoption("force")).quantized
    except BuildRefused as err:
        table = summary(err.findings) + "\n" if err.findings else ""
        pytest.fail(f"{table}{err}", pytrace=False)
    except (BuildError, StageError) as err:
        pytest.fail(f"build failed: {err}", pytrace=False)
