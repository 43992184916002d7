"""Fixtures the unit tests share: the tiny experiment and its embedded base model folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models.refs import resolve
from pipeline.spec.experiment import Experiment, load_experiment


@pytest.fixture(scope="module")
def tiny() -> Experiment:
    """The tiny experiment as its file states it (a test module may override this fixture)."""
    return load_experiment("tiny")


@pytest.fixture(scope="module")
def model_dir(tiny: Experiment) -> Path:
    """The embedded tiny base (tiny:json), built once into the model cache."""
    return resolve("tiny:json", tiny)
