"""Metrics: intervals over prompts, decidability, prompts needed, the paired comparison."""

from __future__ import annotations

import math

import pytest

from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import OVERALL, PROMPTS_DIR, Thresholds, load_experiment
from pipeline.definitions.prompts import load_prompts
from pipeline.eval.metrics import (
    CategoryScore,
    PromptValue,
    bootstrap_interval,
    decidable,
    detectable_drop,
    fragile,
    holm,
    non_inferiority,
    paired,
    prompt_values,
    prompts_needed,
    prompts_to_decide,
    sign_test,
    summarize,
    t_coverage,
    t_interval,
    t_quantile,
    tango_z,
    trainings_to_decide,
    wilson_interval,
)
from pipeline.eval.scoring import extract, score
from pipeline.eval.verdict import judge

CATEGORIES = tuple(load_catalog().categories)
PROMPTS = {p.id: p for p in load_prompts(load_experiment("phase40").eval.prompts, load_catalog())}


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == 1.0
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_is_deterministic_and_brackets_the_mean() -> None:
    values = [1.0, 0.5, 0.1, 0.0, 1.0, 1.0, 0.6, 1.0]
    first = bootstrap_interval(values)
    assert first == bootstrap_interval(values)
    assert first == bootstrap_interval(values, seed=0, resamples=2000)
    lo, hi = first
    assert lo < sum(values) / len(values) < hi
    assert lo >= 0.0 and hi <= 1.0
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def _values(scores: dict[str, float]) -> list[PromptValue]:
    return prompt_values([(p, PROMPTS[p].category, v) for p, v in scores.items()])


def test_summarize_reproduces_the_seed_overall_and_keeps_no_tool_out() -> None:
    # The seed's per-prompt scores: 100% text/validation/git/cst, lsp 4.5/5, domain 5.4/9,
    # multi 0.35: overall 22.25 / 27 = 82.4%.
    values = {
        **{p: 1.0 for p in PROMPTS if p.split("-")[0] in ("text", "validation", "git", "cst")},
        "lsp-01": 1.0, "lsp-02": 1.0, "lsp-03": 1.0, "lsp-04": 1.0, "lsp-05": 0.5,
        **{f"domain-0{i}": 1.0 for i in range(1, 6)}, "domain-06": 0.4,
        "domain-07": 0.0, "domain-08": 0.0, "domain-09": 0.0,
        "multi-01": 0.35,
        "notool-01": 0.0, "notool-02": 0.0, "notool-03": 0.0,
    }  # fmt: skip
    summary = summarize(_values(values), CATEGORIES)
    assert list(summary) == [*CATEGORIES, "no_tool", OVERALL]
    overall = summary[OVERALL]
    assert overall.n == 27 and overall.mean == pytest.approx(0.824, abs=5e-4)
    assert overall.kind == "bootstrap" and overall.lo < overall.mean < overall.hi
    assert summary["lsp"].mean == pytest.approx(0.9) and summary["lsp"].kind == "bootstrap"
    assert summary["text_tools"] == CategoryScore(1.0, *wilson_interval(3, 3), 3, "wilson")
    assert summary["no_tool"].mean == 0.0 and summary["no_tool"].n == 3


def test_intervals_count_prompts_not_samples() -> None:
    # Five identical greedy samples of 3 prompts are 3 observations, not 15: the interval is
    # the one of 2 right out of 3.
    rows = [(p, "validation", v) for p, v in (("a", 1.0), ("b", 1.0), ("c", 0.0)) for _ in "12345"]
    summary = summarize(prompt_values(rows), CATEGORIES)
    assert summary["validation"] == CategoryScore(2 / 3, *wilson_interval(2, 3), 3, "wilson")
    assert summary["validation"] != CategoryScore(2 / 3, *wilson_interval(10, 15), 15, "wilson")
    # Samples of one prompt that disagree make one prompt of partial value (a bootstrap).
    mixed = prompt_values([("a", "validation", 1.0)] * 3 + [("a", "validation", 0.0)])
    assert mixed == [PromptValue("a", "validation", 0.75, 4)]
    assert summarize(mixed, CATEGORIES)["validation"] == CategoryScore(
        0.75, 0.75, 0.75, 1, "bootstrap"
    )


def test_fragile_when_the_interval_straddles_the_threshold() -> None:
    cat = CategoryScore(0.8, 0.49, 0.94, 10, "wilson")
    assert fragile(cat, 0.8)
    assert fragile(cat, 0.94)
    assert not fragile(cat, 0.49)
    assert not fragile(cat, 0.95)
    assert not fragile(CategoryScore(1.0, 0.97, 1.0, 100, "wilson"), 0.95)


@pytest.mark.parametrize(
    ("right", "n", "threshold", "expected"),
    [
        (3, 3, 0.95, False),  # a perfect 3/3 spans 0.44-1.00: never shows >= 95%
        (3, 3, 0.40, True),  # ... but clears 0.40
        (0, 3, 0.60, True),  # 0/3 tops out at 0.56: decidably below 0.60
        (1, 3, 0.30, False),
        (80, 100, 0.60, True),
    ],
)
def test_decidable_on_known_counts(right: int, n: int, threshold: float, expected: bool) -> None:
    cat = CategoryScore(right / n, *wilson_interval(right, n), n, "wilson")
    assert decidable(cat, threshold) is expected


def test_prompts_needed_on_known_counts() -> None:
    # At a rate of 1.0 the Wilson lower end is n / (n + z^2): it reaches 0.95 at
    # n >= 0.95 z^2 / 0.05 = 72.99, so 73 prompts.
    z2 = 1.96**2
    assert prompts_needed(1.0, 0.95) == math.ceil(0.95 * z2 / 0.05)
    assert wilson_interval(73, 73)[0] >= 0.95 > wilson_interval(72, 72)[0]
    # A rate below the threshold: the upper end must fall under it.
    n = prompts_needed(0.5, 0.8)
    assert (
        n is not None
        and wilson_interval(0.5 * n, n)[1] < 0.8 <= wilson_interval(0.5 * (n - 1), n - 1)[1]
    )
    assert prompts_needed(0.8, 0.8) is None  # no number of prompts decides a tie
    assert prompts_needed(0.8001, 0.8) is None  # out of reach (more than the cap)


def test_sign_test_matches_a_hand_computation() -> None:
    # 8 prompts differ, 7 one way, 1 the other: P(X <= 1 | Bin(8, 1/2)) = 9/256; two-sided
    # 18/256 = 0.0703125.
    assert sign_test(7, 1) == pytest.approx(18 / 256)
    assert sign_test(1, 7) == sign_test(7, 1)
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 0) == 1.0


@pytest.mark.parametrize(
    ("better", "worse", "n", "expected"),
    [
        (6, 1, 27, 34),  # at 34: 8 better, 1 worse, p = 20/512; at 33: 7 and 1, p = 18/256
        (5, 0, 10, 11),  # 5 of 0 gives p = 1/16; 11 prompts round to 6 of 0, p = 1/32
        (1, 0, 27, 149),  # 6 better of 0 (p = 1/32): 149 / 27 = 5.52 is the first to round to 6
        (12, 10, 224, 4882),  # a 2-prompt lead in 224 needs some 22 times as many prompts
        (3, 3, 27, None),  # as many better as worse: no number decides
        (0, 0, 27, None),  # no prompt differs
        (501, 499, 1000, None),  # a lead of 0.2%: some 960,000 prompts, past the cap
    ],
)
def test_prompts_to_decide_scales_the_shares_until_the_sign_test_decides(
    better: int, worse: int, n: int, expected: int | None
) -> None:
    found = prompts_to_decide(better, worse, n)
    assert found == expected
    if found is not None:  # the count found decides by the exact test, and the one before not

        def p(prompts: int) -> float:
            return sign_test(round(better * prompts / n), round(worse * prompts / n))

        assert p(found) < 0.05 <= p(found - 1)


@pytest.mark.parametrize(
    ("df", "confidence", "expected"),
    [
        # two-sided critical values as printed in every t table (e.g. NIST/SEMATECH e-Handbook,
        # 1.3.6.7.2), to their three decimals
        (1, 0.95, 12.706),
        (2, 0.95, 4.303),
        (3, 0.95, 3.182),
        (4, 0.95, 2.776),
        (5, 0.95, 2.571),
        (9, 0.95, 2.262),
        (10, 0.95, 2.228),
        (20, 0.95, 2.086),
        (30, 0.95, 2.042),
        (120, 0.95, 1.980),
        (1, 0.90, 6.314),
        (5, 0.99, 4.032),
        (10, 0.99, 3.169),
    ],
)
def test_t_quantile_matches_the_printed_table(df: int, confidence: float, expected: float) -> None:
    assert round(t_quantile(df, confidence), 3) == expected


def test_t_coverage_is_the_closed_form_for_one_and_two_degrees_and_tends_to_the_normal() -> None:
    for t in (0.1, 1.0, 2.5, 30.0):
        assert t_coverage(t, 1) == pytest.approx(2 / math.pi * math.atan(t))  # Cauchy
        assert t_coverage(t, 2) == pytest.approx(t / math.sqrt(t * t + 2))
    assert t_quantile(2001) == pytest.approx(1.9600, abs=2e-3)
    assert t_coverage(0.0, 7) == 0.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_coverage(1.0, 0)


def test_t_interval_of_known_values() -> None:
    # mean 2, sd 1, three values: 2 -/+ 4.303 / sqrt(3)
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = t_quantile(2) / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert t_interval([0.5, 0.5]) == pytest.approx((0.5, 0.5))  # no spread, no width
    with pytest.raises(ValueError, match="at least two"):
        t_interval([1.0])


@pytest.mark.parametrize(
    ("mean", "spread", "expected"),
    [
        (-0.3, 0.1, 3),  # 2: 12.706 * 0.1 / 1.414 = 0.90 > 0.3; 3: 4.303 * 0.1 / 1.732 = 0.25
        (-0.025, 0.02, 5),  # 4: 3.182 * 0.02 / 2 = 0.0318; 5: 2.776 * 0.02 / 2.236 = 0.0248
        (0.2, 0.0, 2),  # no spread: the fewest a t interval takes
        (0.0, 0.1, None),  # no difference: no number decides
        (0.001, 0.5, None),  # some 960,000 trainings: past the cap
    ],
)
def test_trainings_to_decide_on_known_spreads(
    mean: float, spread: float, expected: int | None
) -> None:
    assert trainings_to_decide(mean, spread) == expected


def test_paired_comparison_of_two_synthetic_runs_with_a_known_difference() -> None:
    # 20 domain prompts: the baseline right on all, this run wrong on 6 of them (-0.30); and
    # 10 text prompts where both agree.
    base = [PromptValue(f"d{i}", "domain", 1.0, 1) for i in range(20)]
    base += [PromptValue(f"t{i}", "text_tools", 1.0, 1) for i in range(10)]
    this = [PromptValue(f"d{i}", "domain", 0.0 if i < 6 else 1.0, 1) for i in range(20)]
    this += [PromptValue(f"t{i}", "text_tools", 1.0, 1) for i in range(10)]
    this += [PromptValue("only-here", "domain", 1.0, 1)]  # not in the baseline: left out
    rows = paired(this, base, CATEGORIES)
    domain = rows["domain"]
    assert domain.n == 20 and domain.difference == pytest.approx(-0.30)
    assert (domain.better, domain.worse) == (0, 6)
    assert domain.p_value == pytest.approx(2 / 64)
    assert domain.lo < -0.30 < domain.hi <= 0.0
    assert rows["text_tools"].difference == 0.0 and rows["text_tools"].p_value == 1.0
    assert rows[OVERALL].n == 30 and rows[OVERALL].difference == pytest.approx(-0.2)
    assert paired(this, base, CATEGORIES) == rows  # seeded: the same answer every time


def test_detectable_drop_shrinks_with_more_prompts() -> None:
    three = detectable_drop(3, 1.0, trials=500)
    thirty = detectable_drop(30, 1.0, trials=500)
    # 3 prompts right in the baseline: even losing all 3 gives p = 0.25, never < 0.05.
    assert three is None
    assert thirty is not None and thirty < 0.5


# --- non-inferiority: canned answers to the extended set, scored by the real scorer -----------

EXTENDED = load_prompts(PROMPTS_DIR / "extended.toml", load_catalog())


def _answers(reply_for) -> list[PromptValue]:
    """Each extended prompt's routing score for the reply `reply_for(prompt)` returns."""
    out = []
    for p in EXTENDED:
        ex = extract(reply_for(p), "tool_calls", load_catalog())
        s = score(ex, p, primary="routing", code_mode=False)
        out.append(PromptValue(p.id, p.category, s.value, 1))
    return out


def _native(*names: str) -> dict:
    calls = [{"type": "function", "function": {"name": n, "arguments": "{}"}} for n in names]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def _oracle(p) -> dict:
    if p.match == "none":
        return {"role": "assistant", "content": "It depends on the case."}
    return _native(*dict.fromkeys(e.tool for e in p.expect))


def test_an_oracle_against_itself_is_non_inferior() -> None:
    oracle = _answers(_oracle)
    rows = non_inferiority(oracle, oracle, CATEGORIES, {OVERALL: 0.05})
    row = rows[OVERALL]
    assert row.decision == "NON-INFERIOR" and row.difference == 0.0
    assert -0.05 < row.lower < 0 and row.n == sum(1 for p in EXTENDED if p.category != "no_tool")


def test_the_same_answers_on_one_categorys_prompts_leave_a_5_point_margin_undecided() -> None:
    """28 prompts that all agree cannot rule out a drop of 5 points (one disagreement in 20
    would go unseen a quarter of the time); the row says how many prompts would."""
    oracle = _answers(_oracle)
    rows = non_inferiority(oracle, oracle, CATEGORIES, dict.fromkeys(CATEGORIES, 0.05))
    for name, row in rows.items():
        assert row.decision == "UNDECIDED", name
        assert row.prompts_needed is not None and row.prompts_needed > row.n


def test_a_server_that_always_calls_git_status_is_inferior_to_the_oracle() -> None:
    oracle = _answers(_oracle)
    git_status = _answers(lambda p: _native("git_status"))
    margins = {OVERALL: 0.05, **dict.fromkeys(CATEGORIES, 0.05)}
    rows = non_inferiority(git_status, oracle, CATEGORIES, margins)
    assert rows[OVERALL].decision == "INFERIOR" and rows[OVERALL].upper < -0.05
    assert rows["lsp"].decision == "INFERIOR" and rows["lsp"].prompts_needed is None
    verdict = judge(Thresholds({}), {}, rule="non-inferiority", non_inferiority=rows)
    assert verdict.outcome == "FAIL"
    assert verdict.reasons[0].startswith("inferior to the baseline run by more than the margin: ")


def test_an_equal_but_noisy_pair_on_few_prompts_is_undecided_with_the_prompts_needed() -> None:
    a = [PromptValue(f"p{i}", "lsp", float(i % 3 != 0), 1) for i in range(24)]
    b = [PromptValue(f"p{i}", "lsp", float(i % 3 != 1), 1) for i in range(24)]
    rows = non_inferiority(a, b, CATEGORIES, {"lsp": 0.05})
    row = rows["lsp"]
    assert row.difference == 0.0 and (row.better, row.worse) == (8, 8)
    assert row.decision == "UNDECIDED" and row.lower < -0.05
    assert row.prompts_needed is not None and row.prompts_needed > 24
    # the same rates on as many prompts as it said (a multiple of 3 at or above): decided
    n = 3 * math.ceil(row.prompts_needed / 3)
    a = [PromptValue(f"p{i}", "lsp", float(i % 3 != 0), 1) for i in range(n)]
    b = [PromptValue(f"p{i}", "lsp", float(i % 3 != 1), 1) for i in range(n)]
    assert non_inferiority(a, b, CATEGORIES, {"lsp": 0.05})["lsp"].decision == "NON-INFERIOR"


def test_holm_adjusts_step_down_and_keeps_the_order() -> None:
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_the_one_sided_bounds_narrow_with_more_prompts_and_mirror_each_other() -> None:
    wide = non_inferiority(*[[PromptValue(f"p{i}", "lsp", 1.0, 1) for i in range(30)]] * 2,
                           CATEGORIES, {"lsp": 0.05})["lsp"]  # fmt: skip
    narrow = non_inferiority(*[[PromptValue(f"p{i}", "lsp", 1.0, 1) for i in range(300)]] * 2,
                             CATEGORIES, {"lsp": 0.05})["lsp"]  # fmt: skip
    assert wide.lower < narrow.lower < 0 < narrow.upper < wide.upper
    assert wide.lower == pytest.approx(-wide.upper)
    assert tango_z(0, 0, 30, -0.05) > 0 > tango_z(0, 0, 30, 0.05)
