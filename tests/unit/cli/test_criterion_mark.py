"""What the eval's summary says of a gated criterion: pass or fail, fragile, and what decides."""

from __future__ import annotations

import pytest

from pipeline.cli.eval import criterion_mark
from pipeline.eval.metrics import PROMPTS_NEEDED_CAP, prompts_needed
from pipeline.eval.records import CategoryRow


def _row(mean: float, lo: float, hi: float, threshold: float) -> CategoryRow:
    return CategoryRow(
        mean=mean,
        lo=lo,
        hi=hi,
        n=27,
        kind="wilson",
        threshold=threshold,
        passed=mean >= threshold,
        fragile=lo < threshold <= hi,
        decidable=lo >= threshold or hi < threshold,
        prompts_needed=prompts_needed(mean, threshold),
    )


FRAGILE = " PASS (fragile), not decidable:"
WOULD = "prompts would decide"


@pytest.mark.parametrize(
    ("row", "said"),
    [
        (_row(0.99, 0.85, 1.0, 0.80), " PASS, decidable"),
        (_row(0.90, 0.75, 0.97, 0.80), f"{FRAGILE} {prompts_needed(0.9, 0.8)} {WOULD}"),
        (_row(0.80, 0.62, 0.91, 0.80), f"{FRAGILE} on its threshold, no number of {WOULD}"),
        (_row(0.8005, 0.62, 0.91, 0.80), f"{FRAGILE} more than {PROMPTS_NEEDED_CAP:,} {WOULD}"),
    ],
)
def test_the_mark_says_what_would_decide_a_criterion(row: CategoryRow, said: str) -> None:
    assert criterion_mark(row) == said
