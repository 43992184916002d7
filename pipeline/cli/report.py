"""`python -m pipeline report RUN_DIR | --compare RUN_A RUN_B`: write a run's results, or
print how two runs differ (each a run folder, or a results.json read back as written).

Exit codes (pipeline.core.errors): the verdict's (0 PASS or PENDING, 1 FAIL, 3 ERROR) after a
report; 0 after a comparison; 2 for a run folder or experiment that cannot be used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.door import run
from pipeline.core.options import BY_DEST
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.report import (
    build_report,
    collect,
    compare,
    read_results,
    render_compare,
    report_run,
)
from pipeline.report.show import show_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline report",
        description="Write reports/<experiment>/results.{md,json,png} for a run folder, "
        "or compare two runs (--compare RUN_A RUN_B).",
    )
    parser.add_argument("run_dir", nargs="?", type=Path, help="runs/<experiment>/<key>/")
    parser.add_argument(
        "--experiment",
        default=None,
        help="experiment name or TOML path [the one recorded in the run's summary.json]",
    )
    workdir = BY_DEST["workdir"]
    parser.add_argument(workdir.flag, metavar=workdir.metavar, help=workdir.help)
    parser.add_argument("--out", type=Path, default=None, help="[reports/<experiment>/]")
    parser.add_argument("--no-chart", action="store_true", help="do not draw results.png")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="print differences (each a run folder or a results.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.compare is None):
        parser.error("give one RUN_DIR, or --compare RUN_A RUN_B")

    def step() -> int:
        workspace = Workspace.at(args.workdir)
        experiment = load_experiment(args.experiment) if args.experiment else None
        if args.compare:
            a, b = (
                read_results(p)
                if p.is_file()
                else build_report(collect(p, experiment, workspace=workspace))
                for p in args.compare
            )
            print(render_compare(compare(a, b)))
            return 0
        written = report_run(
            args.run_dir, experiment, workspace, out_dir=args.out, chart=not args.no_chart
        )
        verdict = written.verdict
        print(f"{written.report.experiment}: {verdict.outcome}")
        print("".join(f"  {reason}\n" for reason in verdict.reasons), end="")
        print(f"report: {show_path(written.markdown)}")
        print(f"json:   {show_path(written.json)}")
        chart = show_path(written.chart) if written.chart else f"skipped: {written.chart_skipped}"
        print(f"chart:  {chart}")
        return verdict.exit_code

    return run(step)
