"""`python -m pipeline eval`: serve a model (built, --model, or --server-url) and score it."""

from __future__ import annotations

from pathlib import Path

from pipeline.build import build
from pipeline.cli.door import parser, run, selected
from pipeline.core.errors import RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.eval.records import CategoryRow, EvalSummary
from pipeline.eval.run import eval_run_dir, run_eval
from pipeline.eval.scoring import ANOMALIES
from pipeline.eval.serve import check_model_folder
from pipeline.eval.verdict import recorded_preflight
from pipeline.report import mark_stale, report_run
from pipeline.spec.experiment import Experiment


def criterion_mark(cat: CategoryRow) -> str:
    """PASS/FAIL, fragile, and whether the interval decides (or how many prompts would)."""
    decides = (
        "decidable"
        if cat.decidable
        else f"not decidable: {cat.prompts_needed or 'no number of'} prompts would decide"
    )
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
    if len(summary.servers) > 1:  # one server answered everything: nothing to say
        lines += [
            f"server {s.url}: {s.answered} answered, {s.errors} without an answer"
            + (f"; {s.stopped}" if s.stopped else "")
            for s in summary.servers
        ]
    return "\n".join(lines + verdict)


def failure(err: BaseException) -> str:
    """Why a run stopped, for the note that marks the last report stale."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(err) if isinstance(err, RoutegateError) else f"{type(err).__name__}: {err}"


def main(argv: list[str] | None = None) -> int:
    args = parser(
        "eval", "Serve a model with mlx_lm.server and score the eval prompts."
    ).parse_args(argv)

    def step() -> int:
        experiment, workspace = selected(args)
        try:
            return evaluate(experiment, workspace)
        except BaseException as err:  # no earlier report may stand as this run's
            mark_stale(experiment.name, failure(err), workspace)
            raise

    def evaluate(experiment: Experiment, workspace: Workspace) -> int:
        model_dir = Path(args.model).expanduser().resolve() if args.model else None
        if model_dir is not None and not args.server_url:
            check_model_folder(model_dir)  # before its digest keys the run folder
        if not (args.server_url or model_dir):
            model_dir = build(experiment, force=args.force, workspace=workspace).quantized
        where = eval_run_dir(
            experiment,
            workspace,
            model_dir=model_dir,
            server_url=args.server_url,
            built=not (args.server_url or args.model),
        )
        result = run_eval(
            experiment,
            where,
            model_dir=None if args.server_url else model_dir,
            server_url=args.server_url,
            samples=args.samples,
            temperatures=args.temperature,
            concurrency=args.concurrency,
            preflight=recorded_preflight(workspace, experiment, where),
        )
        print(format_summary(result.summary))
        written = report_run(result.run_dir, experiment, workspace=workspace)
        print(f"report: {written.markdown}")
        return written.verdict.exit_code

    return run(step)
