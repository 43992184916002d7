"""`python -m pipeline build`: train, fuse and quantize the experiment's model.

Cached by key and resumable (pipeline.builder); every output under `--workdir`. Then the
build-integrity check (pipeline.eval.integrity; `--no-integrity` skips it). Exit 0 when the
model is built or reused and held, 1 when the preflight refused the build or a step lost the
trained behaviour, 2 for an experiment, option or model that cannot be used, 3 when a stage
crashed or a model could not be served, 130 on Ctrl-C (the same command resumes).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.builder import BuildRefused, build
from pipeline.cli.door import parser, run, selected
from pipeline.core.errors import EXIT_PASS
from pipeline.core.progress import Console
from pipeline.eval.integrity import after_build, record_path, summary_lines
from pipeline.preflight import summary

INTERRUPTED = "interrupted: run the same build again to resume"


def build_parser() -> argparse.ArgumentParser:
    out = parser("build", "Train, fuse and quantize the experiment's model (cached and resumable).")
    out.add_argument(
        "--keep-fused",
        action="store_true",
        help="keep the fused float model after quantizing (removed by default)",
    )
    return out


def build_step(args: argparse.Namespace) -> int:
    experiment, workspace = selected(args)
    console = Console()
    try:
        result = build(
            experiment,
            force=args.force,
            keep_fused=args.keep_fused,
            workspace=workspace,
            log=console,
        )
    except BuildRefused as err:
        if err.findings:
            print(summary(err.findings))
        raise
    print(f"model: {result.quantized}")
    print(f"record: {result.record_path}")
    integrity = after_build(experiment, result.run_dir, skip=args.no_integrity, log=console)
    if integrity is not None:
        print("".join(f"  {line}\n" for line in summary_lines(integrity)), end="")
        print(f"integrity: PASS ({record_path(result.run_dir)})")
    return EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: build_step(args), INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
