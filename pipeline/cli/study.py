"""`python -m pipeline study confounds`: train the experiment clean and once per confound.

Each row (pipeline.study.confounds): which preflight checks fail (it trains anyway), the eval's
overall and per-category scores, the final train and validation loss, the wall time, and its
difference from the clean row with what decides it; written to reports/NAME/confounds.json and
confounds.md after each row. Cached and resumable like a build. `--only CONFOUND ...` picks
confounds (the clean row always runs); `--also-prompts NAME[,NAME]` judges every model on
those prompt sets too; `--seeds N` trains the clean row N times and each row that retrains
until it is decided (at most N), so that a difference is decided by trainings, not by the
prompts of one training. `--resume-from PATH` continues an earlier study (from another machine:
its rows checked in), training only what its rows lack.

Exit 0 when every row is done, 2 for an unknown study or confound or an input that cannot be
used, 3 when a stage crashed or an eval could not finish, 130 on Ctrl-C (the same command
resumes; finished rows are kept).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pipeline.cli.door import parser, run, selected
from pipeline.core.errors import EXIT_PASS, BadInput
from pipeline.core.progress import Console
from pipeline.study import (
    CONFOUNDS,
    STUDIES,
    check_seeds,
    chosen,
    named_prompt_sets,
    run_study,
)
from pipeline.study.table import markdown

INTERRUPTED = (
    "interrupted: finished rows are in reports/<experiment>/confounds.json; run the same "
    "command again to resume"
)


def study_parser() -> argparse.ArgumentParser:
    out = parser(
        "study",
        "Train the experiment clean and once per confound; report what the preflight and the "
        "eval say about each. Confounds: "
        + "; ".join(f"{c.name} ({c.injects})" for c in CONFOUNDS),
    )
    out.add_argument("study", metavar="STUDY", help=f"the study to run: {', '.join(STUDIES)}")
    return out


def study_step(args: argparse.Namespace, argv: list[str]) -> int:
    if args.study not in STUDIES:
        raise BadInput(f"unknown study {args.study!r} (known: {', '.join(STUDIES)})")
    # an unknown confound, prompt set or seed count is named before the experiment loads
    chosen(args.only)
    named_prompt_sets(args.also_prompts)
    check_seeds(args.seeds)
    experiment, workspace = selected(args)
    rows = run_study(
        experiment,
        workspace=workspace,
        only=args.only,
        also_prompts=args.also_prompts,
        seeds=args.seeds,
        resume_from=Path(args.resume_from) if args.resume_from else None,
        command=shlex.join(["python", "-m", "pipeline", "study", *argv]),
        log=Console(),
    )
    print(markdown(experiment.name, rows), end="")
    return EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = study_parser().parse_args(argv)
    return run(lambda: study_step(args, argv), INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
