"""Fixtures the unit tests share: the tiny experiment and its embedded base model folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.preflight import resolve_model


@pytest.fixture(scope="module")
def tiny() -> Experiment:
    """The tiny experiment as its file states it (a test module may override this fixture)."""
    return load_experiment("tiny")


@pytest.fixture(scope="module")
def model_dir(tiny: Experiment) -> Path:
    """The embedded tiny base (tiny:json), built once into the model cache (its tokenizer
    learns from the tiny data in the checkout, or $ROUTEGATE_WORKDIR)."""
    return resolve_model("tiny:json", tiny, workspace=Workspace.at())
