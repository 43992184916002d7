"""Metrics over scored prompts: category means with 95% intervals, decidability, how many prompts
a decision needs, and the paired comparison of two runs.

Intervals count prompts, not samples: the samples of one prompt are not independent (at
temperature 0 they are the same answer), so each prompt contributes the mean of its samples
once. Everything here is pure and deterministic (bootstraps are seeded).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from pipeline.definitions.experiment import OVERALL
from pipeline.definitions.prompts import NO_TOOL

IntervalKind = Literal["wilson", "bootstrap"]
PROMPTS_NEEDED_CAP = 100_000
"""prompts_needed searches up to this many prompts; beyond, it is None (out of reach)."""
TRAININGS_NEEDED_CAP = 1000
"""trainings_to_decide searches up to this many trainings; beyond, it is None (out of reach)."""


@dataclass(frozen=True)
class CategoryScore:
    mean: float
    lo: float
    hi: float
    n: int
    """Number of prompts: each prompt counts once, with the mean of its samples."""
    kind: IntervalKind


@dataclass(frozen=True)
class PromptValue:
    """One prompt's outcome in one run: the mean of its samples' scores."""

    prompt_id: str
    category: str
    value: float
    samples: int


@dataclass(frozen=True)
class PairedRow:
    """This run minus the baseline run on the prompts both scored."""

    difference: float
    lo: float
    hi: float
    """Paired bootstrap 95% interval: prompts resampled, each prompt's samples kept together."""
    p_value: float
    """Exact two-sided sign test (McNemar's test for 0/1 outcomes) on per-prompt differences."""
    n: int
    """Prompts both runs scored."""
    better: int = 0
    worse: int = 0


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (0 of 0 -> the whole of 0..1)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; the same inputs always give the same answer."""
    if not values:
        return 0.0, 1.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    lo = means[max(0, math.floor(tail * resamples))]
    hi = means[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return lo, hi


def category_score(values: Sequence[float]) -> CategoryScore:
    """Mean and interval of per-prompt values: Wilson when every value is 0 or 1, a bootstrap
    otherwise (partial credit, or samples that disagree)."""
    n = len(values)
    mean = sum(values) / n if n else 0.0
    if all(v in (0.0, 1.0) for v in values):
        lo, hi = wilson_interval(sum(values), n)
        return CategoryScore(mean, lo, hi, n, "wilson")
    lo, hi = bootstrap_interval(values)
    return CategoryScore(mean, lo, hi, n, "bootstrap")


def prompt_values(scored: Sequence[tuple[str, str, float]]) -> list[PromptValue]:
    """(prompt id, category, value) per sample -> one PromptValue per prompt, in first-seen
    order."""
    grouped: dict[str, list[float]] = {}
    category: dict[str, str] = {}
    for prompt_id, cat, value in scored:
        grouped.setdefault(prompt_id, []).append(value)
        category[prompt_id] = cat
    return [
        PromptValue(pid, category[pid], sum(values) / len(values), len(values))
        for pid, values in grouped.items()
    ]


def summarize(values: Sequence[PromptValue], categories: Sequence[str]) -> dict[str, CategoryScore]:
    """Per category (in the catalog's order `categories`, then no_tool and any other), plus
    "overall".

    Overall is the mean over every prompt of the catalog's categories, as the seed's 82.4% was
    the mean of its 27 prompt scores; no_tool is reported on its own and never enters it.
    """
    by_category: dict[str, list[float]] = {}
    for v in values:
        by_category.setdefault(v.category, []).append(v.value)
    order = [c for c in (*categories, NO_TOOL) if c in by_category]
    order += sorted(set(by_category) - set(order))
    out = {c: category_score(by_category[c]) for c in order}
    out[OVERALL] = category_score([v for c in categories for v in by_category.get(c, [])])
    return out


def pass_all(values: Sequence[PromptValue], categories: Sequence[str]) -> dict[str, float]:
    """pass^k per category (and overall, as `summarize` counts it): the share of prompts whose
    every sample scored 1 (a prompt's value is its samples' mean, 1 only when all are)."""
    by_category: dict[str, list[bool]] = {}
    for v in values:
        by_category.setdefault(v.category, []).append(v.value >= 1.0)
    out = {c: sum(r) / len(r) for c, r in by_category.items()}
    gated = [r for c in categories for r in by_category.get(c, [])]
    if gated:
        out[OVERALL] = sum(gated) / len(gated)
    return out


def fragile(cat: CategoryScore, threshold: float) -> bool:
    """The interval straddles the threshold: the pass/fail verdict could flip on a rerun."""
    return cat.lo < threshold <= cat.hi


def decidable(cat: CategoryScore, threshold: float) -> bool:
    """The 95% interval lies wholly on one side of the threshold (at or above, or below)."""
    return cat.lo >= threshold or cat.hi < threshold


def prompts_needed(mean: float, threshold: float) -> int | None:
    """How many prompts, at the observed rate `mean`, make the 95% (Wilson) interval clear the
    threshold: its lower end at or above it for a rate above, its upper end below it for a rate
    below. None when the rate equals the threshold (no number of prompts decides), or when
    more than PROMPTS_NEEDED_CAP would be needed."""
    if math.isclose(mean, threshold, abs_tol=1e-12):
        return None

    def clears(n: int) -> bool:
        lo, hi = wilson_interval(mean * n, n)
        return lo >= threshold if mean > threshold else hi < threshold

    return fewest_prompts(clears)


def fewest_prompts(decides: Callable[[int], bool], cap: int = PROMPTS_NEEDED_CAP) -> int | None:
    """The fewest prompts n for which `decides(n)` holds, for a `decides` that turns true once
    and stays true as n grows; None when it does not hold at `cap`. For a `decides` that
    flickers near its turn (a discrete test), the n found decides and n - 1 does not."""
    if not decides(cap):
        return None
    low, high = 1, cap
    while low < high:
        mid = (low + high) // 2
        if decides(mid):
            high = mid
        else:
            low = mid + 1
    return low


def sign_test(better: int, worse: int) -> float:
    """Exact two-sided sign test: the probability, with no true difference, of a split at least
    this uneven among the prompts whose outcome differs (McNemar's exact test for 0/1)."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(
    this: Sequence[PromptValue],
    baseline: Sequence[PromptValue],
    categories: Sequence[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, PairedRow]:
    """Per category (and overall: the catalog's categories together) on the prompts both runs
    scored: mean difference (this - baseline), paired bootstrap interval, sign-test p-value."""
    base = {v.prompt_id: v for v in baseline}
    pairs = [(v.category, v.value - base[v.prompt_id].value) for v in this if v.prompt_id in base]
    groups: dict[str, list[float]] = {}
    for cat, diff in pairs:
        groups.setdefault(cat, []).append(diff)
    gated = [d for c in categories for d in groups.get(c, [])]
    order = [c for c in (*categories, NO_TOOL) if c in groups]
    out = {c: _paired_row(groups[c], resamples, seed) for c in order}
    if gated:
        out[OVERALL] = _paired_row(gated, resamples, seed)
    return out


def _paired_row(diffs: Sequence[float], resamples: int, seed: int) -> PairedRow:
    n = len(diffs)
    # resampling prompts' differences keeps each prompt's samples (its mean) together
    lo, hi = bootstrap_interval(diffs, resamples=resamples, seed=seed)
    better = sum(1 for d in diffs if d > 0)
    worse = sum(1 for d in diffs if d < 0)
    return PairedRow(sum(diffs) / n, lo, hi, sign_test(better, worse), n, better, worse)


def prompts_to_decide(better: int, worse: int, n: int, *, alpha: float = 0.05) -> int | None:
    """The fewest prompts at which the paired sign test, with this comparison's shares of
    prompts better (`better` of `n`) and worse (`worse` of `n`) scaled to that many prompts
    (rounded), falls below `alpha`. None when as many prompts are better as worse (no number
    decides) or when more than PROMPTS_NEEDED_CAP would be needed. The test is discrete: the
    count returned decides and the one before it does not."""
    if n <= 0 or better == worse:
        return None

    def decides(prompts: int) -> bool:
        return _sign_test_below(round(better * prompts / n), round(worse * prompts / n), alpha)

    return fewest_prompts(decides)


def _sign_test_below(better: int, worse: int, alpha: float) -> bool:
    """sign_test(better, worse) < alpha, in floats: its exact sum of binomial coefficients
    takes seconds past a few thousand prompts, which a search over prompt counts cannot wait
    for. The tail is summed down from the smaller count, stopping once it reaches alpha / 2
    or its terms vanish."""
    n = better + worse
    if n == 0:
        return False
    k = min(better, worse)
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    term, tail = math.exp(log_term), 0.0
    for i in range(k, -1, -1):
        tail += term
        if 2 * tail >= alpha:
            return False
        if term <= tail * 1e-17:
            break
        term *= i / (n - i + 1)  # C(n, i - 1) = C(n, i) * i / (n - i + 1)
    return 2 * tail < alpha


def t_coverage(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` >= 1 degrees of freedom, exactly: the finite
    series of Abramowitz and Stegun, Handbook of Mathematical Functions, 26.7.3 (odd df) and
    26.7.4 (even df), in theta = atan(t / sqrt(df))."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:
        # (2 / pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... to cos^(df-3))]
        term, series = 1.0, 0.0
        for k in range(1, (df - 1) // 2 + 1):
            series += term
            term *= 2 * k / (2 * k + 1) * cos2
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    # sin [1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... to cos^(df-2)]
    term, series = 1.0, 0.0
    for k in range(1, df // 2 + 1):
        series += term
        term *= (2 * k - 1) / (2 * k) * cos2
    return math.sin(theta) * series


@functools.cache
def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The t for which P(|T| <= t) = `confidence` with `df` degrees of freedom (the two-sided
    critical value: 12.706 for 1 at 95%, 2.776 for 4), by bisection on t_coverage."""
    high = 1.0
    while t_coverage(high, df) < confidence:
        high *= 2
    low = 0.0
    for _ in range(100):
        mid = (low + high) / 2
        if t_coverage(mid, df) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of `values` (at least two): mean -/+ t * sd / sqrt(n),
    sd the sample standard deviation, t = t_quantile(n - 1)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a t interval needs at least two values, not {n}")
    mean = statistics.fmean(values)
    half = t_quantile(n - 1, confidence) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def trainings_to_decide(mean: float, spread: float, confidence: float = 0.95) -> int | None:
    """The fewest trainings n (at least two) whose t interval, at the observed mean difference
    and standard deviation `spread` of one training's difference, excludes 0:
    t_quantile(n - 1) * spread / sqrt(n) < |mean|. None for a mean of 0 (no number decides)
    or when more than TRAININGS_NEEDED_CAP would be needed."""
    if math.isclose(mean, 0.0, abs_tol=1e-12):
        return None

    def decides(n: int) -> bool:
        return n >= 2 and t_quantile(n - 1, confidence) * spread / math.sqrt(n) < abs(mean)

    return fewest_prompts(decides, cap=TRAININGS_NEEDED_CAP)


def detectable_drop(
    prompts: int,
    baseline_rate: float,
    *,
    power: float = 0.8,
    alpha: float = 0.05,
    trials: int = 4000,
    seed: int = 0,
) -> float | None:
    """The smallest drop from `baseline_rate` (0.01 steps) that the paired sign test detects
    at level `alpha` with the given power, for `prompts` 0/1 prompts per run (a seeded
    simulation); None when no drop within reach is detected that often. The two runs'
    outcomes are drawn independently: real runs agree on easy prompts, which makes a drop
    easier to see, so this is the pessimistic end."""
    rng = random.Random(seed)
    for step in range(1, round(baseline_rate * 100) + 1):
        rate = baseline_rate - step / 100
        hits = 0
        for _ in range(trials):
            better = worse = 0
            for _ in range(prompts):
                a, b = rng.random() < baseline_rate, rng.random() < rate
                better += b and not a
                worse += a and not b
            hits += worse > better and sign_test(better, worse) < alpha
        if hits / trials >= power:
            return step / 100
    return None


# --- non-inferiority: can the candidate replace the baseline? --------------------------------

Decision = Literal["NON-INFERIOR", "INFERIOR", "UNDECIDED"]


@dataclass(frozen=True)
class NonInferiorityRow:
    """One category's answer to "is the candidate worse than the baseline by more than the
    margin?", on the prompts both runs scored (candidate - baseline)."""

    margin: float
    difference: float
    lower: float
    """One-sided 95% lower bound of the difference (Tango's score bound, not adjusted)."""
    upper: float
    """One-sided 95% upper bound of the difference."""
    n: int
    better: float
    """Prompts the candidate got right and the baseline not (fractional for partial credit)."""
    worse: float
    p_non_inferior: float
    """p-value of "the difference is -margin or below"; small: non-inferior."""
    p_inferior: float
    """p-value of "the difference is above -margin"; small: inferior."""
    p_adjusted: float
    """Holm-adjusted p-value of the side the data lean to, across the decided categories."""
    decision: Decision
    prompts_needed: int | None = None
    """For UNDECIDED: prompts at this rate of differing answers that would decide, at the
    strictest Holm level (None: no number would, the difference sits on the margin)."""


_NORMAL = NormalDist()


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return _NORMAL.cdf(-z)


def tango_z(better: float, worse: float, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: P(candidate right) - P(baseline right) = delta0 on
    paired outcomes: (better - worse - n delta0) over its standard deviation under H0, where
    the rate of pairs the baseline alone got right is its maximum-likelihood value under H0.
    Differences of partial credit count as fractions of a pair, which keeps the variance an
    upper bound (d^2 <= |d| for d in [-1, 1])."""
    if n <= 0:
        return 0.0
    # maximise better ln(q + delta0) + worse ln q + rest ln(1 - 2q - delta0) over q
    rest = max(0.0, n - better - worse)
    lo, hi = max(0.0, -delta0), (1 - delta0) / 2
    if hi <= lo:
        return 0.0

    def slope(q: float) -> float:
        s = 0.0
        s += better / (q + delta0) if better else 0.0
        s += worse / q if worse else 0.0
        s -= 2 * rest / (1 - 2 * q - delta0) if rest else 0.0
        return s

    eps = 1e-12
    a, b = lo + eps, hi - eps
    if slope(a) <= 0:
        q = lo
    elif slope(b) >= 0:
        q = hi
    else:
        for _ in range(200):
            mid = (a + b) / 2
            if slope(mid) > 0:
                a = mid
            else:
                b = mid
        q = (a + b) / 2
    variance = max(2 * q + delta0 - delta0 * delta0, 1e-12)
    return (better - worse - n * delta0) / math.sqrt(n * variance)


def _bound(better: float, worse: float, n: int, z: float, lower: bool) -> float:
    """The delta0 where Tango's statistic equals z (lower) or -z (upper): a one-sided bound."""
    observed = (better - worse) / n
    lo, hi = (-1.0, observed) if lower else (observed, 1.0)
    target = z if lower else -z
    for _ in range(100):
        mid = (lo + hi) / 2
        # the statistic falls as delta0 rises
        if tango_z(better, worse, n, mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error across the keys)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    k = len(ordered)
    out: dict[str, float] = {}
    running = 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (k - i) * p))
        out[key] = running
    return out


def non_inferiority(
    this: Sequence[PromptValue],
    baseline: Sequence[PromptValue],
    categories: Sequence[str],
    margins: dict[str, float],
    *,
    alpha: float = 0.05,
) -> dict[str, NonInferiorityRow]:
    """Per category with a margin (`overall`: the catalog's categories together), on the
    prompts both runs scored: NON-INFERIOR when "candidate - baseline <= -margin" is rejected,
    INFERIOR when "candidate - baseline > -margin" is, each with Holm's correction across the
    categories decided; else UNDECIDED, with the prompts that would decide."""
    base = {v.prompt_id: v for v in baseline}
    groups: dict[str, list[float]] = {}
    for v in this:
        if v.prompt_id in base:
            groups.setdefault(v.category, []).append(v.value - base[v.prompt_id].value)
    groups[OVERALL] = [d for c in categories for d in groups.get(c, [])]
    rows = {c: groups[c] for c in (*categories, NO_TOOL, OVERALL) if groups.get(c) and c in margins}
    z = _NORMAL.inv_cdf(1 - alpha)
    stats: dict[str, tuple[float, float, int, float, float]] = {}
    for name, diffs in rows.items():
        better = sum(d for d in diffs if d > 0)
        worse = -sum(d for d in diffs if d < 0)
        n = len(diffs)
        statistic = tango_z(better, worse, n, -margins[name])
        stats[name] = (better, worse, n, _upper_tail(statistic), _upper_tail(-statistic))
    p_ni = holm({name: s[3] for name, s in stats.items()})
    p_inf = holm({name: s[4] for name, s in stats.items()})
    out: dict[str, NonInferiorityRow] = {}
    for name, (better, worse, n, p1, p2) in stats.items():
        if p_ni[name] < alpha:
            decision: Decision = "NON-INFERIOR"
        elif p_inf[name] < alpha:
            decision = "INFERIOR"
        else:
            decision = "UNDECIDED"
        leaning = p_ni[name] if p1 <= p2 else p_inf[name]
        needed = None
        if decision == "UNDECIDED":
            needed = _prompts_to_decide(better / n, worse / n, margins[name], alpha / len(stats))
        out[name] = NonInferiorityRow(
            margin=margins[name],
            difference=(better - worse) / n,
            lower=_bound(better, worse, n, z, lower=True),
            upper=_bound(better, worse, n, z, lower=False),
            n=n,
            better=better,
            worse=worse,
            p_non_inferior=p1,
            p_inferior=p2,
            p_adjusted=leaning,
            decision=decision,
            prompts_needed=needed,
        )
    return out


def _prompts_to_decide(
    better_rate: float, worse_rate: float, margin: float, alpha: float
) -> int | None:
    """The fewest prompts at these rates of differing answers whose score statistic clears
    the one-sided level `alpha` on either side of -margin; None past PROMPTS_NEEDED_CAP."""
    if math.isclose(better_rate - worse_rate, -margin, abs_tol=1e-12):
        return None
    z = _NORMAL.inv_cdf(1 - alpha)

    def decides(n: int) -> bool:
        return abs(tango_z(better_rate * n, worse_rate * n, n, -margin)) >= z

    return fewest_prompts(decides)
