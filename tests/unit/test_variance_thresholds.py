"""benchmarks/variance.py --thresholds: the rule thresholds are pre-registered by."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline.builder.records import Attempt
from pipeline.core.workspace import CHECKOUT

_spec = importlib.util.spec_from_file_location("variance", CHECKOUT / "benchmarks" / "variance.py")
assert _spec is not None and _spec.loader is not None
variance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variance)


def _row(seed: int, git: float, overall: float, extended: float) -> dict:
    cell = lambda mean: {"mean": mean, "prompts": 3}  # noqa: E731
    return {
        "seed": seed,
        "categories": {"git": cell(git), "overall": cell(overall)},
        "prompt_sets": {"extended": {"overall": cell(extended)}},
    }


@pytest.mark.parametrize(
    ("gits", "gated"),
    [
        ((1.0, 0.9, 0.95), True),  # the lowest training exactly at the criterion
        ((1.0, 0.89, 1.0), False),  # one training below it
    ],
)
def test_a_criterion_is_gated_only_where_every_training_meets_it(
    gits: tuple[float, ...], gated: bool
) -> None:
    rows = [_row(seed, git, 0.99, 0.8) for seed, git in enumerate(gits)]
    text = variance.thresholds(rows, {"git": 0.90, "overall": 0.80}, ())
    assert ("\ngit = 0.90" in text) is gated
    assert ("# git = 0.90 not gated" in text) is not gated
    assert "\noverall = 0.80" in text


def test_another_prompt_set_gates_overall_below_the_lowest_training() -> None:
    rows = [_row(0, 1.0, 1.0, 0.836), _row(1, 1.0, 1.0, 0.798), _row(2, 1.0, 1.0, 0.85)]
    text = variance.thresholds(rows, {}, ("extended",))
    assert "[thresholds.sets.extended]\noverall = 0.74" in text  # 0.798 - 0.05, rounded down


def test_the_plan_criteria_come_from_the_plan_experiment() -> None:
    from pipeline.definitions.experiment import load_experiment

    criteria = load_experiment(variance.PLAN).thresholds.as_dict()
    assert criteria["overall"] == 0.80 and criteria["git"] == 0.90 and len(criteria) == 8


def _attempt(offset: int, seconds: float | None) -> Attempt:
    return Attempt(offset=offset, iters=600 - offset, resume_from=None, command=(), started="",
                   seconds=seconds)  # fmt: skip


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param([(0, 3700.0)], (3700.0, True), id="one attempt"),
        pytest.param([(0, 1800.0), (300, 1900.0)], (3700.0, True), id="resumed, both timed"),
        pytest.param([(0, None), (300, 1900.0)], (1900.0, False), id="killed after a checkpoint"),
        pytest.param([(0, None), (0, 3700.0)], (3700.0, True), id="killed before any checkpoint"),
        pytest.param([(0, None), (0, None), (0, 3700.0)], (3700.0, True), id="twice so"),
        pytest.param([(0, 1800.0), (300, None)], (1800.0, False), id="the last one untimed"),
    ],
)
def test_training_minutes_count_every_attempt_whose_steps_the_model_kept(
    attempts: list[tuple[int, float | None]], expected: tuple[float | None, bool]
) -> None:
    assert variance.attempts_seconds([_attempt(o, s) for o, s in attempts]) == expected
