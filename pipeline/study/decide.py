"""A row against the clean row on one prompt set: the difference, and what decides it.

Two sources of noise stand between a row and the clean row. Prompts: the eval is a sample of
prompts, so a difference measured on them has a paired bootstrap interval (resampling the
prompts both scored). Trainings: two trainings of one recipe with different seeds differ too
(the first smol-route recipe's seeds 0 and 1 on the extended set, in
benchmarks/results/smol-route-v1-variance.jsonl: -2.5 points overall on 224 prompts, -30 on
lsp's 40, a difference its prompts "decide"). A
row that only changes eval settings judges the clean row's own model, so only the prompts'
noise is in its difference; a row that retrains compares two trainings, so its difference
holds the seed noise as well, and the prompts alone over-claim.

The rules, per row and prompt set (`compare`), on the seeds both rows were trained with:

- by prompts: each prompt's value averaged over those seeds' models, row against clean,
  paired over the prompts both scored (metrics.paired): decided when the bootstrap 95%
  interval of the overall difference excludes 0; else the prompts that would decide at the
  observed shares of better and worse prompts (metrics.prompts_to_decide; None for as many
  better as worse).
- the seeds: each seed's overall difference (row model against the clean model of the same
  seed); with two or more, they agree when the 95% t interval of their mean excludes 0; else
  the seeds per row that would make it exclude 0 at that mean and the differences' standard
  deviation (metrics.trainings_to_decide). With one training a row has no spread of its own:
  the clean row's across its k seeds (sqrt(2) x their standard deviation: a difference of two
  trainings) estimates it when k >= 2, and the one difference's interval is d -/+ t(k - 1) x
  that spread (it agrees when that excludes 0: a collapse needs no second training); with
  fewer there is no estimate.
- by trainings: the seeds agree and the prompts decide, the same way. Both: every seed was
  judged on the same prompts, so the seeds' interval holds the prompts fixed (two seeds that
  happen to differ alike would give it no width at all), as the prompts' holds the trainings.
- the decision: a row that does not retrain judges the clean models themselves, so it is
  "decided by prompts" when its prompts decide; a row that retrains is "decided by
  trainings" or nothing, whatever its prompts say; else "not decided".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Literal

from pipeline.core.errors import Fault
from pipeline.definitions.experiment import OVERALL
from pipeline.eval import metrics
from pipeline.eval.metrics import PromptValue
from pipeline.study.records import CLEAN, Comparison, Decision


def compare(
    prompts: str,
    row: Mapping[int, Sequence[PromptValue]],
    clean: Mapping[int, Sequence[PromptValue]],
    categories: Sequence[str],
    *,
    retrains: bool,
    clean_overall: Sequence[float] = (),
    against: str = CLEAN,
) -> Comparison:
    """The row's per-prompt values on `prompts` (per seed, the first seed first) against the
    clean row's (per seed), on the seeds both have and the prompts both scored; the clean
    row's overall score per seed (`clean_overall`) estimates the spread between trainings
    when the row has one. Raises Fault when the two share no seed or no scored prompt."""
    seeds = tuple(s for s in row if s in clean)
    by_seed = [metrics.paired(row[s], clean[s], categories) for s in seeds]
    if not by_seed or any(OVERALL not in p for p in by_seed):
        raise Fault(f"prompts {prompts}: the row and the clean row share no seed and scored prompt")
    by_prompts = metrics.paired(
        averaged([row[s] for s in seeds]), averaged([clean[s] for s in seeds]), categories
    )
    overall = by_prompts[OVERALL]
    prompts_decided = excludes_zero(overall.lo, overall.hi)
    differences = tuple(p[OVERALL].difference for p in by_seed)
    mean = statistics.fmean(differences)
    lo = hi = spread = None
    spread_from: Literal["row", "clean", ""] = ""
    if len(differences) >= 2:
        lo, hi = metrics.t_interval(differences)
        spread, spread_from = statistics.stdev(differences), "row"
    elif len(clean_overall) >= 2:
        # one training: its difference's own interval, at the spread between two trainings
        # the clean row's seeds show, with their degrees of freedom
        spread, spread_from = math.sqrt(2) * statistics.stdev(clean_overall), "clean"
        half = metrics.t_quantile(len(clean_overall) - 1) * spread
        lo, hi = mean - half, mean + half
    seeds_agree = lo is not None and hi is not None and excludes_zero(lo, hi)
    same_way = (overall.difference > 0) == (mean > 0)
    trainings_decided = seeds_agree and prompts_decided and same_way
    return Comparison(
        prompts=prompts,
        retrains=retrains,
        seeds=seeds,
        differences=differences,
        by_prompts=by_prompts,
        prompts_decided=prompts_decided,
        prompts_needed=None
        if prompts_decided
        else metrics.prompts_to_decide(overall.better, overall.worse, overall.n),
        mean=mean,
        lo=lo,
        hi=hi,
        spread=spread,
        spread_from=spread_from,
        seeds_agree=seeds_agree,
        trainings_decided=trainings_decided,
        trainings_needed=metrics.trainings_to_decide(mean, spread)
        if spread is not None and not seeds_agree
        else None,
        decision=decision(retrains, prompts_decided, trainings_decided),
        against=against,
    )


def averaged(runs: Sequence[Sequence[PromptValue]]) -> list[PromptValue]:
    """One value per prompt scored in every run: its mean over the runs (the prompts' order
    and categories are the first run's)."""
    by_run = [{v.prompt_id: v for v in run} for run in runs]
    return [
        PromptValue(
            v.prompt_id,
            v.category,
            statistics.fmean(r[v.prompt_id].value for r in by_run),
            sum(r[v.prompt_id].samples for r in by_run),
        )
        for v in runs[0]
        if all(v.prompt_id in r for r in by_run)
    ]


def excludes_zero(lo: float, hi: float) -> bool:
    """The interval [lo, hi] lies wholly above or wholly below 0."""
    return lo > 0 or hi < 0


def decision(retrains: bool, prompts_decided: bool, trainings_decided: bool) -> Decision:
    """The row's word (the module's rules): a retrained row's difference holds the seed noise,
    so only trainings decide it; an eval-only row judges the clean models themselves."""
    if retrains:
        return "decided by trainings" if trainings_decided else "not decided"
    return "decided by prompts" if prompts_decided else "not decided"
