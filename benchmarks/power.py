"""How much a prompt set can decide: per category, its prompts, the prompts a threshold needs, and
the smallest drop from the baseline the paired sign test detects with 80% power.

    python benchmarks/power.py [--experiment phase40] [--prompts seed,extended] [--trials 2000]

For each prompt set and category: n (prompts), the experiment's threshold and baseline rate
(phase40: the 30B model's measured scores), `prompts_needed` at the baseline's rate (how many
prompts a run as good as the baseline needs for its interval to clear the threshold), and the
minimum detectable drop (pipeline.eval.metrics.detectable_drop: independent 0/1 outcomes per
run, alpha 0.05, a seeded simulation; "-" when no drop is detected that often). No
assertions.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import OVERALL, load_experiment, prompts_path
from pipeline.definitions.prompts import load_prompts
from pipeline.eval.metrics import detectable_drop, prompts_needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="phase40")
    parser.add_argument("--prompts", default="seed,extended")
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment)
    catalog = load_catalog()
    thresholds, baseline = experiment.thresholds.as_dict(), experiment.baseline.as_dict()
    for name in args.prompts.split(","):
        try:
            prompts = load_prompts(prompts_path(name), catalog)
        except ValueError as err:
            print(f"{name}: {err}")
            continue
        counts = Counter(p.category for p in prompts)
        counts[OVERALL] = sum(counts[c] for c in catalog.categories)
        print(f"\n{name} ({len(prompts)} prompts), against {experiment.baseline.name or 'none'}")
        print(
            f"{'category':<12} {'n':>4} {'threshold':>9} {'baseline':>8} {'needed':>7} {'drop':>6}"
        )
        for category in (*catalog.categories, OVERALL):
            n = counts.get(category, 0)
            rate = baseline.get(category)
            threshold = thresholds.get(category)
            needed = (
                prompts_needed(rate, threshold)
                if rate is not None and threshold is not None
                else None
            )
            drop = detectable_drop(n, rate, trials=args.trials) if n and rate else None
            print(
                f"{category:<12} {n:>4} {threshold if threshold is not None else '-':>9} "
                f"{rate if rate is not None else '-':>8} {needed if needed else '-':>7} "
                f"{drop if drop is not None else '-':>6}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
