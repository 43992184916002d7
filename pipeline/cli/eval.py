"""`python -m pipeline eval`: serve a model (built, --model, or --server-url) and score it.

The line is pipeline.gate's (`gate.run`): this door parses the options, prints the scores
and the report's path, and exits with the verdict's code.
"""

from __future__ import annotations

import math

from pipeline import gate
from pipeline.cli.door import parser, run
from pipeline.core.progress import Console
from pipeline.eval.metrics import PROMPTS_NEEDED_CAP
from pipeline.eval.records import CategoryRow, EvalSummary
from pipeline.eval.scoring import ANOMALIES
from pipeline.gate import Invocation


def criterion_mark(cat: CategoryRow) -> str:
    """PASS/FAIL, fragile, and whether the interval decides (or how many prompts would)."""
    if cat.decidable:
        decides = "decidable"
    elif cat.prompts_needed:
        decides = f"not decidable: {cat.prompts_needed} prompts would decide"
    elif cat.threshold is not None and math.isclose(cat.mean, cat.threshold, abs_tol=1e-12):
        decides = "not decidable: on its threshold, no number of prompts would decide"
    else:
        decides = f"not decidable: more than {PROMPTS_NEEDED_CAP:,} prompts would decide"
    return (
        (" PASS" if cat.passed else " FAIL")
        + (" (fragile)" if cat.fragile else "")
        + f", {decides}"
    )


def format_summary(summary: EvalSummary) -> str:
    verdict = [f"verdict: {summary.verdict}", *(f"  {r}" for r in summary.verdict_reasons)]
    if summary.verdict == "ERROR":  # scores of requests that got no answer say nothing
        return "\n".join(verdict)
    lines = []
    for key, row in summary.temperatures.items():
        lines.append(f"temperature {key}:")
        for name, cat in row.categories.items():
            mark = "" if cat.threshold is None else criterion_mark(cat)
            against = "" if cat.threshold is None else f"  threshold {cat.threshold:.2f}"
            lines.append(
                f"  {name:<12} {cat.mean:.3f} [{cat.lo:.3f}, {cat.hi:.3f}] n={cat.n}{against}{mark}"
            )
        lines += [f"  {n} x {ANOMALIES.get(kind, kind)}" for kind, n in row.anomalies.items()]
    if summary.non_inferiority:
        lines.append(f"against the baseline run {summary.baseline_run} (non-inferiority):")
        lines += [
            f"  {name:<12} {row.difference:+.3f} (95% lower bound {row.lower:+.3f}, margin "
            f"-{row.margin:.2f}) {row.decision}"
            + (f", {row.prompts_needed} prompts would decide" if row.prompts_needed else "")
            for name, row in summary.non_inferiority.items()
        ]
    if len(summary.servers) > 1:  # one server answered everything: nothing to say
        lines += [
            f"server {s.url}: {s.answered} answered, {s.errors} without an answer"
            + (f"; {s.stopped}" if s.stopped else "")
            for s in summary.servers
        ]
    return "\n".join(lines + verdict)


def main(argv: list[str] | None = None) -> int:
    args = parser(
        "eval", "Serve a model with mlx_lm.server and score the eval prompts."
    ).parse_args(argv)

    def step() -> int:
        invocation = Invocation.from_options(lambda name: getattr(args, name, None))
        written = gate.run(
            invocation,
            log=Console(),
            on_result=lambda result: print(format_summary(result.summary)),
        )
        print(f"report: {written.markdown}")
        return written.verdict.exit_code

    return run(step)
