"""`python -m pipeline integrity RUN_DIR`: is the model judged the model trained?

Asks base + adapters, the fused model and the quantized model of a finished build every eval
prompt, greedily, and compares each with the first (pipeline.eval.integrity). Also run after
every build unless `--no-integrity`.

Exit codes (pipeline.core.errors): 0 every step held; 1 a step lost the trained behaviour
(named); 2 RUN_DIR is not a finished build or lacks adapters; 3 a model could not be served.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.door import run
from pipeline.core.errors import EXIT_FAIL, EXIT_PASS
from pipeline.definitions.experiment import load_experiment
from pipeline.eval.integrity import check_integrity, record_path, summary_lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline integrity",
        description="Check that a build's fused and quantized models answer as base + adapters.",
    )
    parser.add_argument("run_dir", type=Path, help="a finished build: runs/<experiment>/<key>/")
    parser.add_argument(
        "--experiment",
        default=None,
        help="experiment name or TOML path [the one recorded in the run's build.json]",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def step() -> int:
        experiment = load_experiment(args.experiment) if args.experiment else None
        record = check_integrity(args.run_dir, experiment=experiment, log=print)
        print("".join(f"  {line}\n" for line in summary_lines(record)), end="")
        print(f"integrity: {'PASS' if record.passed else 'FAIL'}")
        if record.failure:
            print(f"  {record.failure}")
        print(f"record: {record_path(args.run_dir)}")
        return EXIT_PASS if record.passed else EXIT_FAIL

    return run(step)
