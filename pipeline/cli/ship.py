"""`python -m pipeline ship RUN_DIR DEST --reproduce COMMAND`: a finished build's adapter, ready
to ship with the project (pipeline.builder.shipped).

Writes DEST/adapters.safetensors, adapter_config.json and adapter.json (the base's and the
data's digests, the recipe, seed, loss curve, versions, training minutes and COMMAND). An
experiment whose `[train] adapter` names DEST then builds from it instead of training.

Exit codes (pipeline.core.errors): 0 written; 2 RUN_DIR is not a finished build (named).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.builder.shipped import export
from pipeline.cli.door import run
from pipeline.core.errors import EXIT_PASS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline ship",
        description="Write a finished build's adapter and its record to a folder to ship.",
    )
    parser.add_argument("run_dir", type=Path, help="a finished build: runs/<experiment>/<key>/")
    parser.add_argument("dest", type=Path, help="the folder to write (e.g. fixtures/adapters/NAME)")
    parser.add_argument(
        "--reproduce",
        required=True,
        metavar="COMMAND",
        help="the command that trains it again, recorded in adapter.json",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def step() -> int:
        shipped = export(args.run_dir, args.dest, reproduce=args.reproduce)
        print(f"{args.dest}: {shipped.bytes:,} bytes, {shipped.iters} iterations")
        return EXIT_PASS

    return run(step)
