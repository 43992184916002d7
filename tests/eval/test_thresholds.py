"""The pre-registered verdict: each category's score against its threshold, and overall.

Each test asserts the point estimate at the decision temperature (the sweep's first) and
carries score, interval, threshold and baseline as JUnit properties for CI.
"""

from __future__ import annotations

import pytest

from pipeline.evaluate import OVERALL, EvalResult
from pipeline.experiment import CATEGORIES, Experiment


@pytest.mark.parametrize("category", [*CATEGORIES, OVERALL])
def test_threshold(
    category: str, eval_result: EvalResult, experiment: Experiment, record_property
) -> None:
    row = eval_result.decision()["categories"].get(category)
    assert row is not None, f"no prompt of category {category} was scored"
    for key in ("mean", "lo", "hi", "n", "threshold", "baseline", "fragile"):
        record_property(key, row[key])
    shown = (
        f"{category}: {row['mean']:.3f} (95% interval {row['lo']:.3f}-{row['hi']:.3f}, "
        f"n={row['n']}) vs threshold {row['threshold']:.2f}, baseline {row['baseline']:.3f}"
        + (" - fragile: the interval straddles the threshold" if row["fragile"] else "")
    )
    if experiment.thresholds.pending:
        pytest.skip(
            f"thresholds of {experiment.name} are pending (not yet pre-registered from "
            f"measurements); measured {shown}"
        )
    assert row["mean"] >= row["threshold"], f"below the pre-registered threshold: {shown}"
